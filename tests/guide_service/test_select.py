"""SelectNeurons: the highest and lowest mean maps over a batch, from inline images or a store."""

from __future__ import annotations

import grpc
import pytest
import torch

from dreamsuite.artifacts import open_store
from dreamsuite.backbones import get_backbone
from dreamsuite.clients.guide import GuideClient
from dreamsuite.images import load_image
from dreamsuite.v1 import common_pb2, guide_pb2, guide_pb2_grpc

LAYERS = ["block_6", "block_12"]


def _direct(pngs: list[bytes]) -> dict[str, torch.Tensor]:
    """Mean activation of every map over the batch, straight from the backbone."""
    backbone = get_backbone("efficientnet_lite0", device="cpu")
    total = {layer: 0.0 for layer in LAYERS}
    for png in pngs:
        acts = backbone.activations(load_image(png), LAYERS)
        for layer in LAYERS:
            total[layer] = total[layer] + acts[layer][0].mean(dim=(1, 2))
    return {layer: t / len(pngs) for layer, t in total.items()}


def test_selection_over_a_batch_matches_a_direct_computation(guide_torchserve, pngs):
    batch = list(pngs.values())
    with GuideClient(guide_torchserve.address) as client:
        backbone, selection = client.select(batch, "", LAYERS, top_k=5, bottom_k=3)
    means = _direct(batch)
    assert backbone == "efficientnet_lite0"
    for layer in LAYERS:
        m = means[layer]
        assert torch.allclose(selection.means[layer], m, atol=1e-5)
        top, bottom = selection.top[layer], selection.bottom[layer]
        assert len(top) == 5 and len(bottom) == 3
        # The chosen maps are the highest and lowest means (ties aside), highest first.
        assert m[top].min() >= torch.topk(m, 5).values.min() - 1e-6
        assert m[bottom].max() <= torch.topk(m, 3, largest=False).values.max() + 1e-6
        assert m[top].tolist() == sorted(m[top].tolist(), reverse=True)
    terms = {t.layer: t.channels for t in selection.maplist().terms}
    assert all(terms["block_6"][c] == 1.0 for c in selection.top["block_6"])
    assert all(terms["block_6"][c] == -1.0 for c in selection.bottom["block_6"])


def test_selection_from_an_artifact_store_prefix(guide_factory, tmp_path, pngs):
    store = open_store(tmp_path / "artifacts")
    for png in pngs.values():
        store.put(png)
    running = guide_factory("inprocess", artifacts=store.url)
    with GuideClient(running.address) as client:
        _, by_prefix = client.select([], "", LAYERS, top_k=4, bottom_k=0,
                                     prefix=store.url + "/")
        _, inline = client.select(list(pngs.values()), "", LAYERS, top_k=4, bottom_k=0)
    assert by_prefix.top == inline.top


# --- errors: each bad request is refused with its status code, naming the field --------------


def _select(address: str, **fields) -> guide_pb2.SelectNeuronsResponse:
    with grpc.insecure_channel(address) as channel:
        return guide_pb2_grpc.GuideServiceStub(channel).SelectNeurons(
            guide_pb2.SelectNeuronsRequest(**fields), timeout=60)


INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(("fields", "says"), [
    ({"backbone": "nope"}, "backbone: unknown backbone 'nope'"),
    ({"layers": ["block_99"]}, "layers[0]: backbone 'efficientnet_lite0' has no layer 'block_99'"),
    ({"layers": []}, "layers: give at least one layer"),
    ({"top_k": 81}, "top_k must be between 0 and 80, not 81"),
    ({"top_k": 0, "bottom_k": 81}, "bottom_k must be between 0 and 80, not 81"),
    ({"top_k": 0, "bottom_k": 0}, "both zero"),
    ({"top_k": 50, "bottom_k": 40}, "top_k + bottom_k = 90 is more than layer 'block_6'"),
    ({"images": []}, "images: neuron selection needs at least one image"),
    ({"images": [common_pb2.ImageRef(data=b"\x89PNG not really")]}, "not a readable image"),
    ({"images": [common_pb2.ImageRef()]}, "images[0]: give the image bytes or an artifact URI"),
    ({"images": [common_pb2.ImageRef(uri="s3://b/x.png")]}, "images[0]: this guide service "
                                                            "has no artifact store"),
    ({"images": [], "prefix": "s3://b/"}, "prefix: this guide service has no artifact store"),
])
def test_select_errors_are_invalid_argument(guide_inprocess, pngs, svc, fields, says):
    request = {"images": [common_pb2.ImageRef(data=pngs["rocket"])], "layers": ["block_6"],
               "top_k": 2, **fields}
    error = svc.expect_code(lambda: _select(guide_inprocess.address, **request), INVALID)
    assert says in error.details()


def test_select_errors_of_a_store_prefix(guide_factory, tmp_path, svc):
    store = open_store(tmp_path / "artifacts")
    store.put(b"not an image", content_type="text/plain")
    running = guide_factory("inprocess", artifacts=store.url)
    error = svc.expect_code(lambda: _select(running.address, prefix=store.url + "/", top_k=1,
                                            layers=["block_6"]), INVALID)
    assert error.details().startswith("prefix: no images under")
    missing = store.url + "/sha256/00/" + "0" * 64 + ".png"
    error = svc.expect_code(lambda: _select(running.address, top_k=1, layers=["block_6"],
                                            images=[common_pb2.ImageRef(uri=missing)]),
                            grpc.StatusCode.NOT_FOUND)
    assert error.details().startswith("images[0]: artifact ")
    assert error.details().endswith("does not exist")
