"""The deployment setting: TorchServe with token authorization on, the key sent by the backend."""

from __future__ import annotations

import asyncio

import pytest

from dreamsuite.activations.backend import backend_from_url, layer_stats
from dreamsuite.errors import Unavailable
from dreamsuite.torchserve import TorchServe

BACKBONE = "efficientnet_lite0"


pytestmark = pytest.mark.slow


def test_inference_needs_the_key_when_token_authorization_is_on(model_store, tmp_path, cat_png):
    with TorchServe(model_store, [BACKBONE], workdir=tmp_path, token_auth=True) as server:
        assert "disable_token_authorization=false" in (tmp_path / "config.properties").read_text()

        async def call(token: str | None):
            backend = backend_from_url(f"torchserve://{server.grpc_target}", token=token)
            try:
                return await layer_stats(backend, cat_png, BACKBONE, ["block_2"])
            finally:
                await backend.close()

        for wrong in (None, "not-the-key"):
            with pytest.raises(Unavailable, match="refused the call.*inference key"):
                asyncio.run(call(wrong))
        stats, _ = asyncio.run(call(server.inference_key()))
        assert stats["block_2"].mean.numel() == 24
