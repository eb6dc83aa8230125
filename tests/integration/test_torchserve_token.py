"""The deployment setting: TorchServe with token authorization on (it writes key_file.json);
the activation backend and the guide service send its inference key."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import torch
from grpc_health.v1 import health_pb2

from dreamsuite.activations.backend import backend_from_url, layer_stats
from dreamsuite.backbones import get_backbone
from dreamsuite.clients.guide import GuideClient
from dreamsuite.errors import Unavailable
from dreamsuite.images import encode_png, load_image, sample_image
from dreamsuite.torchserve import TorchServe, require_java
from handlers.archive import build_archive

pytestmark = pytest.mark.slow

BACKBONE = "efficientnet_lite0"
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    """A real TorchServe with token authorization on."""
    require_java()  # raises with instructions: these tests must not pass without Java
    store = tmp_path_factory.mktemp("model-store")
    build_archive(BACKBONE, store, batch_size=4, max_batch_delay=20, workers=1)
    workdir = tmp_path_factory.mktemp("torchserve-token")
    with TorchServe(store, [BACKBONE], workdir=workdir, token_auth=True) as server:
        assert "disable_token_authorization=false" in (workdir / "config.properties").read_text()
        yield server


@pytest.fixture(scope="module")
def png() -> bytes:
    return encode_png(sample_image("chelsea", size=64))


def test_inference_needs_the_key_when_token_authorization_is_on(secured, png):
    async def call(token: str | None):
        backend = backend_from_url(f"torchserve://{secured.grpc_target}", token=token)
        try:
            return await layer_stats(backend, png, BACKBONE, ["block_2"])
        finally:
            await backend.close()

    for wrong in (None, "not-the-key"):
        with pytest.raises(Unavailable, match="refused the call.*inference key"):
            asyncio.run(call(wrong))
    stats, _ = asyncio.run(call(secured.inference_key()))
    assert stats["block_2"].mean.numel() == 24


def test_guide_service_sends_the_inference_key_from_the_environment(secured, serve, png):
    activations = f"torchserve://{secured.grpc_target}"
    keyless = serve("guide", "--activations", activations, wait=False)
    keyed = serve("guide", "--activations", activations, wait=False,
                  env={"DREAMSUITE_TORCHSERVE_TOKEN": secured.inference_key()})
    for served in (keyless, keyed):
        served.ready()
    with GuideClient(keyless.address) as client, \
         pytest.raises(Unavailable, match="refused the call.*--torchserve-token"):
        client.activations(png, "", ["block_4"])
    assert keyless.health("dreamsuite.v1.GuideService") == SERVING

    with GuideClient(keyed.address) as client:
        response = client.activations(png, "", ["block_4"])
    assert response.backend_version.startswith("torchserve/efficientnet_lite0/")
    [entry] = response.layers
    expected = get_backbone(BACKBONE, device="cpu").activations(load_image(png), ["block_4"])
    assert torch.allclose(torch.tensor(entry.mean), expected["block_4"][0].mean(dim=(1, 2)),
                          atol=1e-5)
