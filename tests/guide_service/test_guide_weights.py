"""ComputeGuideWeights and Activations: TorchServe, in-process and the engine agree."""

from __future__ import annotations

import grpc
import pytest
import torch

from dreamsuite.backbones import get_backbone
from dreamsuite.clients.guide import GuideClient
from dreamsuite.engine.guide import guide_weights
from dreamsuite.errors import InvalidArgument, NotFound, WeightsMissing
from dreamsuite.images import load_image
from dreamsuite.v1 import common_pb2, guide_pb2, guide_pb2_grpc

LAYERS = [("block_3", 1.0), ("block_10", 2.5)]


def test_torchserve_weights_equal_inprocess_and_engine(guide_torchserve, guide_inprocess, pngs):
    guides = [pngs["chelsea"], pngs["coffee"]]
    with GuideClient(guide_torchserve.address) as remote, \
         GuideClient(guide_inprocess.address) as local:
        backbone, served = remote.guide_weights(guides, "", LAYERS)
        _, inprocess = local.guide_weights(guides, "efficientnet_lite0", LAYERS)
    engine = guide_weights(get_backbone(backbone, device="cpu"),
                           [load_image(g) for g in guides], [name for name, _ in LAYERS])
    assert backbone == "efficientnet_lite0"
    for layer, _ in LAYERS:
        a, b = torch.tensor(served[layer]), torch.tensor(inprocess[layer])
        assert a.shape == engine[layer].shape
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4), layer
        assert torch.allclose(a, engine[layer], atol=1e-6, rtol=1e-4), layer
        assert a.abs().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_response_maplist_carries_the_layer_weights(guide_inprocess, pngs):
    with grpc.insecure_channel(guide_inprocess.address) as channel:
        response = guide_pb2_grpc.GuideServiceStub(channel).ComputeGuideWeights(
            guide_pb2.GuideWeightsRequest(
                guides=[common_pb2.ImageRef(data=pngs["rocket"])],
                layers=[guide_pb2.GuideLayer(name=n, weight=w) for n, w in LAYERS]))
    assert [(t.layer, t.weight) for t in response.maplist.layers] == LAYERS
    term = response.maplist.layers[1]
    assert [c.weight for c in term.channels] == pytest.approx(list(response.layers[1].weights))
    assert response.backend_version.startswith("inprocess/efficientnet_lite0/")


def test_activation_statistics_match_the_backbone(guide_torchserve, pngs):
    with GuideClient(guide_torchserve.address) as client:
        response = client.activations(pngs["coffee"], "", ["block_5", "head"])
    acts = get_backbone("efficientnet_lite0", device="cpu").activations(
        load_image(pngs["coffee"]), ["block_5", "head"])
    for entry in response.layers:
        act = acts[entry.layer][0]
        assert (entry.channels, entry.height, entry.width) == tuple(act.shape)
        assert torch.allclose(torch.tensor(entry.mean), act.mean(dim=(1, 2)), atol=1e-5)
        assert torch.allclose(torch.tensor(entry.max), act.amax(dim=(1, 2)), atol=1e-5)


@pytest.mark.parametrize(("guides", "layers", "message"), [
    ([], LAYERS, "at least one guide"),
    ([b"not an image"], LAYERS, "not a readable image"),
    (["chelsea"], [("nope", 1.0)], "no layer 'nope'"),
    (["chelsea"], [], "at least one layer"),
    (["chelsea"], [("block_3", float("nan"))], "finite"),
])
def test_bad_requests_are_invalid_argument(guide_torchserve, pngs, guides, layers, message):
    guides = [pngs.get(g, g) if isinstance(g, str) else g for g in guides]
    with GuideClient(guide_torchserve.address) as client, \
         pytest.raises(InvalidArgument, match=message):
        client.guide_weights(guides, "", layers)


def test_unknown_backbone_and_uris_without_a_store(guide_inprocess, pngs):
    with GuideClient(guide_inprocess.address) as client:
        with pytest.raises(InvalidArgument, match="unknown backbone 'nope'"):
            client.guide_weights([pngs["chelsea"]], "nope", LAYERS)
        with pytest.raises(InvalidArgument, match="no artifact store"):
            client._call(client._stub.ComputeGuideWeights, guide_pb2.GuideWeightsRequest(
                guides=[common_pb2.ImageRef(uri="s3://bucket/x.png")],
                layers=[guide_pb2.GuideLayer(name="block_3")]))


def _activations(address: str, **fields) -> guide_pb2.GuideActivationsResponse:
    with grpc.insecure_channel(address) as channel:
        return guide_pb2_grpc.GuideServiceStub(channel).Activations(
            guide_pb2.GuideActivationsRequest(**fields), timeout=60)


@pytest.mark.parametrize(("fields", "says"), [
    ({"backbone": "nope"}, "backbone: unknown backbone 'nope'"),
    ({"layers": ["block_99"]}, "layers[0]: backbone 'efficientnet_lite0' has no layer 'block_99'"),
    ({"layers": []}, "layers: give at least one layer"),
    ({"image": common_pb2.ImageRef()}, "image: give the image bytes or an artifact URI"),
    ({"image": common_pb2.ImageRef(data=b"GIF89a not really")}, "not a readable image"),
    ({"image": common_pb2.ImageRef(uri="s3://b/x.png")}, "image: this guide service has no "
                                                         "artifact store"),
])
def test_activations_errors_are_invalid_argument(guide_inprocess, pngs, svc, fields, says):
    request = {"image": common_pb2.ImageRef(data=pngs["rocket"]), "layers": ["block_6"],
               **fields}
    error = svc.expect_code(lambda: _activations(guide_inprocess.address, **request),
                            grpc.StatusCode.INVALID_ARGUMENT)
    assert says in error.details()


def test_missing_pretrained_weights_is_failed_precondition(guide_factory, isolated_weights,
                                                           pngs, svc):
    running = guide_factory("inprocess")
    error = svc.expect_code(
        lambda: _activations(running.address, image=common_pb2.ImageRef(data=pngs["rocket"]),
                             backbone="vgg16", layers=["relu3_3"]),
        grpc.StatusCode.FAILED_PRECONDITION)
    assert "vgg16-397923af.pth" in error.details()
    with GuideClient(running.address) as client, pytest.raises(WeightsMissing):
        client.guide_weights([pngs["rocket"]], "vgg16", [("relu3_3", 1.0)])


def test_a_backbone_torchserve_does_not_serve_is_not_found(guide_torchserve, pngs):
    with GuideClient(guide_torchserve.address) as client, \
         pytest.raises(NotFound, match="NOT_FOUND: .*serves no model 'vgg16'"):
        client.activations(pngs["rocket"], "vgg16", ["relu3_3"])
