"""A guided dream through dream service -> guide service -> TorchServe equals the in-process
guided dream with the same seed."""

from __future__ import annotations

import pytest
import torch

from dreamsuite.clients.dream import DreamClient
from dreamsuite.engine import DreamConfig, dream
from dreamsuite.engine.objectives import LayerTerm, Maplist
from dreamsuite.images import encode_png, load_image
from dreamsuite.v1 import common_pb2, dream_pb2
from services.common import ServerConfig
from services.dream.config import DreamServiceConfig
from services.dream.server import start_dream_server

pytestmark = pytest.mark.slow

LAYERS = ("block_4", "block_8")


def guided_request(image: bytes, guide: bytes) -> dream_pb2.DreamRequest:
    return dream_pb2.DreamRequest(
        image=common_pb2.ImageRef(data=image),
        backbone="efficientnet_lite0",
        maplist=common_pb2.Maplist(layers=[
            common_pb2.LayerTerm(layer=LAYERS[0]), common_pb2.LayerTerm(layer=LAYERS[1],
                                                                        weight=0.5)]),
        schedule=dream_pb2.OctaveSchedule(octaves=2, steps=3, octave_scale=1.3),
        regularisers=dream_pb2.Regularisers(jitter=4),
        guidance=dream_pb2.Guidance(guides=[common_pb2.ImageRef(data=guide)],
                                    mode=dream_pb2.GUIDE_MODE_WEIGHTS),
        seed=11,
        output=dream_pb2.OutputOptions(inline_images=True,
                                       preview_format=dream_pb2.PREVIEW_FORMAT_NONE),
    )


def test_guided_dream_through_the_guide_service_equals_in_process(
    loop_thread, guide_torchserve, torchserve, tmp_path, pngs, prom,
):
    config = DreamServiceConfig(
        server=ServerConfig(host="127.0.0.1", port=0, metrics_port=None, grace_seconds=1.0),
        artifacts=(tmp_path / "artifacts").as_uri(), device="cpu",
        guide=guide_torchserve.address)
    server = loop_thread.run(start_dream_server(config))
    guide_metrics = f"http://127.0.0.1:{guide_torchserve.metrics.port}/metrics"
    calls_before = prom.total(prom.scrape(guide_metrics), "grpc_server_handled_total",
                         grpc_method="ComputeGuideWeights", grpc_code="OK")
    ts_before = prom.total(prom.scrape(torchserve.metrics_url), "ts_inference_requests_total")
    try:
        with DreamClient(server.address) as client:
            updates = list(client.dream(guided_request(pngs["chelsea"], pngs["coffee"]),
                                        timeout=300))
    finally:
        loop_thread.run(server.stop(0))
    served = load_image(updates[-1].result.image)

    local = dream(
        load_image(pngs["chelsea"]),
        DreamConfig(maplist=Maplist((LayerTerm(LAYERS[0]), LayerTerm(LAYERS[1], 0.5))),
                    octaves=2, steps=3, octave_scale=1.3, jitter=4, seed=11),
        guides=[load_image(pngs["coffee"])], device="cpu",
    )
    expected = load_image(encode_png(local.image))
    assert served.shape == expected.shape
    assert torch.equal(served, expected), (served - expected).abs().max()
    assert prom.total(prom.scrape(guide_metrics), "grpc_server_handled_total",
                 grpc_method="ComputeGuideWeights", grpc_code="OK") == calls_before + 1
    assert prom.total(prom.scrape(torchserve.metrics_url), "ts_inference_requests_total") >= ts_before + 1

