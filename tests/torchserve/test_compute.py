"""The computation the handler and the in-process backend share, without TorchServe."""

from __future__ import annotations

import pytest
import torch

from dreamsuite.activations.compute import (
    backbone_from_state_dict,
    compute_batch,
    stats_from_response,
    weights_digest,
)
from dreamsuite.backbones.efficientnet_lite import lite0_state_dict
from dreamsuite.errors import InvalidArgument, ResourceExhausted
from dreamsuite.images import encode_png, load_image, sample_image
from dreamsuite.v1 import activations_pb2 as pb

LAYERS = ["block_3", "block_10"]


def _request(png: bytes, **kw) -> pb.ActivationsRequest:
    kw.setdefault("layers", LAYERS)
    return pb.ActivationsRequest(image=png, backbone="efficientnet_lite0", **kw)


def test_statistics_match_the_backbone(lite0, cat_png):
    [response] = compute_batch(lite0, [_request(cat_png)], kind="test")
    stats = stats_from_response(response)
    acts = lite0.activations(load_image(cat_png), LAYERS)
    for layer in LAYERS:
        act = acts[layer][0]
        assert torch.allclose(stats[layer].mean, act.mean(dim=(1, 2)), atol=1e-6)
        assert torch.allclose(stats[layer].sum, act.sum(dim=(1, 2)), rtol=1e-5, atol=1e-4)
        assert torch.equal(stats[layer].max, act.amax(dim=(1, 2)))
        assert (stats[layer].height, stats[layer].width) == tuple(act.shape[1:])
    assert response.backend_version.startswith("test/efficientnet_lite0/")


def test_a_batch_answers_each_request_as_if_alone(lite0, cat_png, coffee_png):
    requests = [_request(cat_png), _request(coffee_png), _request(b"not an image"),
                _request(cat_png, max_side=64)]
    batch = compute_batch(lite0, requests, kind="test")
    assert len(batch) == 4
    for request, response in zip(requests, batch, strict=True):
        [alone] = compute_batch(lite0, [request], kind="test")
        if alone.HasField("error"):
            assert response.error.code == alone.error.code
            continue
        for a, b in zip(response.layers, alone.layers, strict=True):
            assert torch.allclose(torch.tensor(a.mean), torch.tensor(b.mean), atol=1e-5)
    assert batch[2].error.code == pb.ActivationsError.CODE_INVALID_ARGUMENT
    assert batch[3].image_width == 64  # max_side downscaled the 144 px side


def test_full_maps_within_the_cap_and_refused_over_it(lite0, cat_png):
    [full] = compute_batch(lite0, [_request(cat_png, reduction=pb.REDUCTION_FULL)], kind="t")
    entry = full.layers[1]
    maps = torch.frombuffer(bytearray(entry.maps), dtype=torch.float32)
    maps = maps.view(entry.channels, entry.height, entry.width)
    assert torch.allclose(maps.mean(dim=(1, 2)), torch.tensor(entry.mean), atol=1e-6)
    [refused] = compute_batch(lite0, [_request(cat_png, reduction=pb.REDUCTION_FULL)],
                              kind="t", max_response_bytes=100_000)
    assert refused.error.code == pb.ActivationsError.CODE_RESOURCE_EXHAUSTED
    assert "REDUCTION_STATS" in refused.error.message
    with pytest.raises(ResourceExhausted, match="response cap"):
        stats_from_response(refused)


def test_request_errors_name_what_to_fix(lite0, cat_png):
    cases = {
        "no layer 'nope'": _request(cat_png, layers=["nope"]),
        "at least one layer": pb.ActivationsRequest(image=cat_png),
        "serves backbone": pb.ActivationsRequest(image=cat_png, backbone="vgg16",
                                                 layers=["block_1"]),
        "needs at least": _request(encode_png(sample_image("chelsea", size=8))),
        # each repeat was answered again, past the response size check (5000: over 64 MiB)
        "block_3 is asked for more than once": _request(cat_png, layers=["block_3"] * 10),
    }
    responses = compute_batch(lite0, list(cases.values()), kind="t")
    for (message, _), response in zip(cases.items(), responses, strict=True):
        with pytest.raises(InvalidArgument, match=message):
            stats_from_response(response)


def test_archived_state_dict_gives_the_registry_backbone(lite0):
    rebuilt = backbone_from_state_dict("efficientnet_lite0", lite0_state_dict())
    assert weights_digest(rebuilt) == weights_digest(lite0)


def test_responses_report_their_batch_and_forward_pass(lite0, cat_png, coffee_png):
    requests = [_request(cat_png), _request(coffee_png), _request(cat_png),
                _request(b"not an image"), _request(cat_png, layers=["block_3"])]
    batch = compute_batch(lite0, requests, kind="test")
    assert [r.batch_size for r in batch] == [5] * 5
    # the two same-size cats with the same layers share a pass; the others are alone;
    # a request that failed had no forward pass
    assert [r.shared_forward for r in batch] == [2, 1, 2, 0, 1]
    [alone] = compute_batch(lite0, [_request(cat_png)], kind="test")
    assert (alone.batch_size, alone.shared_forward) == (1, 1)


def test_the_handler_reports_torchserve_batch_size_unreadable_rows_included(lite0, cat_png):
    from handlers.backbone_handler import BackboneHandler

    handler = BackboneHandler()
    handler.backbone = lite0
    rows = [{"data": _request(cat_png).SerializeToString()}, {"body": b"\xff\xfe garbage"},
            {"data": bytearray(_request(cat_png).SerializeToString())}]
    answers = [pb.ActivationsResponse.FromString(a) for a in handler.handle(rows, None)]
    assert [a.batch_size for a in answers] == [3, 3, 3]
    assert [a.shared_forward for a in answers] == [2, 0, 2]
    assert answers[1].error.code == pb.ActivationsError.CODE_INVALID_ARGUMENT


def test_the_handler_loads_its_backbone_on_its_workers_share_of_the_cpus(tmp_path, monkeypatch):
    from ts.context import Context

    from dreamsuite.cpus import available_cpus
    from handlers.backbone_handler import BackboneHandler

    torch.save(lite0_state_dict(), tmp_path / "lite0.pt")
    manifest = {"model": {"modelName": "efficientnet_lite0", "serializedFile": "lite0.pt"}}
    context = Context("efficientnet_lite0", str(tmp_path), manifest, 1, None, "0.12.0",
                      model_yaml_config={"maxWorkers": 2,
                                         "handler": {"backbone": "efficientnet_lite0"}})
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(7)
        handler = BackboneHandler()
        handler.initialize(context)
        assert handler.backbone is not None and handler.backbone.name == "efficientnet_lite0"
        assert torch.get_num_threads() == max(1, available_cpus() // 2)
    finally:
        torch.set_num_threads(before)


def test_out_of_memory_retries_image_by_image_then_asks_for_a_retry(lite0, cat_png, monkeypatch):
    """A forward pass that runs out of memory is run again one image at a time; an image that
    does not fit even alone gets CODE_OUT_OF_MEMORY, which callers retry (not a refusal for
    good, as an over-cap response is); the others are answered as if alone."""
    real = type(lite0).activations
    calls = []

    def tight_memory(self, images, layers):
        calls.append(tuple(images.shape))
        if len(images) > 1 or images.shape[-1] > 150:  # the cat is 144 px wide
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, images, layers)

    big = encode_png(torch.rand(3, 120, 160, generator=torch.Generator().manual_seed(0)))
    [expected] = compute_batch(lite0, [_request(cat_png)], kind="test")
    monkeypatch.setattr(type(lite0), "activations", tight_memory)
    batch = compute_batch(lite0, [_request(cat_png), _request(big), _request(cat_png)],
                          kind="test")
    assert sorted(n for n, *_ in calls) == [1, 1, 1, 2]  # the pair, each cat, the big one
    for i in (0, 2):
        assert not batch[i].HasField("error")
        assert batch[i].shared_forward == 1
        assert list(batch[i].layers[1].mean) == list(expected.layers[1].mean)
    assert batch[1].error.code == pb.ActivationsError.CODE_OUT_OF_MEMORY
    with pytest.raises(ResourceExhausted, match="160x120 image") as info:
        stats_from_response(batch[1])
    assert info.value.retry_after == 1.0
