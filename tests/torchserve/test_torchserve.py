"""The backbone handler on a real TorchServe, through the TorchServe activation backend."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import zipfile

import pytest
import torch

from dreamsuite.activations.backend import InProcessBackend, layer_stats
from dreamsuite.activations.compute import stats_from_response
from dreamsuite.activations.torchserve_client import TorchServeBackend
from dreamsuite.errors import InvalidArgument, NotFound, ResourceExhausted
from dreamsuite.v1 import activations_pb2 as pb

BACKBONE = "efficientnet_lite0"
LAYERS = ["block_3", "block_10"]


def test_archive_holds_handler_package_weights_and_config(model_store):
    with zipfile.ZipFile(model_store / f"{BACKBONE}.mar") as mar:
        names = set(mar.namelist())
        manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
        config = mar.read("model-config.yaml").decode()
    assert {"backbone_handler.py", "model-config.yaml"} <= names
    assert manifest["model"]["serializedFile"].startswith("efficientnet-lite0")  # package file
    assert "backbone: efficientnet_lite0" in config and "batchSize: 4" in config


def test_torchserve_and_inprocess_give_the_same_statistics(torchserve, cat_png):
    async def both():
        remote, local = TorchServeBackend(torchserve.grpc_target), InProcessBackend()
        try:
            return (await layer_stats(remote, cat_png, BACKBONE, LAYERS),
                    await layer_stats(local, cat_png, BACKBONE, LAYERS))
        finally:
            await remote.close()

    (remote, remote_version), (local, local_version) = asyncio.run(both())
    for layer in LAYERS:
        for stat in ("sum", "mean", "max"):
            assert torch.allclose(getattr(remote[layer], stat), getattr(local[layer], stat),
                                  rtol=1e-5, atol=1e-5), (layer, stat)
    assert remote_version.startswith("torchserve/efficientnet_lite0/")
    assert remote_version.split("/")[1:] == local_version.split("/")[1:]  # same weights


def test_full_maps_and_the_size_cap(torchserve, cat_png):
    async def calls():
        backend = TorchServeBackend(torchserve.grpc_target)
        request = pb.ActivationsRequest(image=cat_png, backbone=BACKBONE, layers=["block_10"],
                                        reduction=pb.REDUCTION_FULL)
        try:
            full = await backend.activations(request)
            request.max_response_bytes = 50_000
            refused = await backend.activations(request)
            after = await layer_stats(backend, cat_png, BACKBONE, ["head"])
        finally:
            await backend.close()
        return full, refused, after

    full, refused, after = asyncio.run(calls())
    entry = full.layers[0]
    maps = torch.frombuffer(bytearray(entry.maps), dtype=torch.float32)
    assert maps.numel() == entry.channels * entry.height * entry.width
    assert torch.allclose(maps.view(entry.channels, -1).mean(dim=1), torch.tensor(entry.mean),
                          atol=1e-6)
    with pytest.raises(ResourceExhausted, match="over the 50000-byte response cap"):
        stats_from_response(refused)
    assert after[0]["head"].mean.numel() == 1280  # the worker is still there


def test_concurrent_requests_are_batched_and_answered_each(torchserve, cat_png, coffee_png):
    async def many():
        backend = TorchServeBackend(torchserve.grpc_target)
        try:
            return await asyncio.gather(*(
                layer_stats(backend, png, BACKBONE, ["block_10"])
                for png in [cat_png, coffee_png] * 4))
        finally:
            await backend.close()

    results = asyncio.run(many())
    local = {png: asyncio.run(layer_stats(InProcessBackend(), png, BACKBONE, ["block_10"]))[0]
             for png in (cat_png, coffee_png)}
    for png, (stats, _) in zip([cat_png, coffee_png] * 4, results, strict=True):
        assert torch.allclose(stats["block_10"].mean, local[png]["block_10"].mean, atol=1e-5)
    log = (torchserve.workdir / "logs" / "model_log.log").read_text()
    assert "batch of " in log, "TorchServe never handed the handler a batch"


def test_request_errors_come_back_as_library_errors(torchserve, cat_png):
    async def call(model: str, image: bytes, layers: list[str]):
        backend = TorchServeBackend(torchserve.grpc_target)
        try:
            return await layer_stats(backend, image, model, layers)
        finally:
            await backend.close()

    with pytest.raises(InvalidArgument, match="no layer 'nope'; valid layers: stem"):
        asyncio.run(call(BACKBONE, cat_png, ["nope"]))
    with pytest.raises(InvalidArgument, match="not a readable image"):
        asyncio.run(call(BACKBONE, b"\x89PNG garbage", ["head"]))
    with pytest.raises(NotFound, match="serves no model 'vgg16'.*dreamsuite archive"):
        asyncio.run(call("vgg16", cat_png, ["head"]))
    # Over the gRPC message limit: no retry helps (it was UNAVAILABLE, which clients retry)
    with pytest.raises(ResourceExhausted, match="over the gRPC message limit") as big:
        asyncio.run(call(BACKBONE, cat_png + bytes(65 << 20), ["head"]))
    assert big.value.retry_after is None


def test_prometheus_metrics_count_the_calls(torchserve, cat_png):
    def inference_requests() -> float:
        with urllib.request.urlopen(torchserve.metrics_url, timeout=10) as reply:
            text = reply.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("ts_inference_requests_total"))

    before = inference_requests()
    async def call():
        backend = TorchServeBackend(torchserve.grpc_target)
        try:
            await layer_stats(backend, cat_png, BACKBONE, ["stem"])
        finally:
            await backend.close()

    asyncio.run(call())
    assert inference_requests() >= before + 1
