"""Fuzzing the running guide service: every field of ``GuideWeightsRequest``,
``SelectNeuronsRequest`` and ``GuideActivationsRequest``, with huge, negative, NaN, empty and
very long values, each next to otherwise valid requests (see ``mutated`` in the conftest)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dreamsuite.v1 import common_pb2, guide_pb2

pytestmark = pytest.mark.slow

VALID_LAYERS = ("stem", "block_0", "block_3", "block_6", "block_10", "head")


def _optional(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.none(), strategy)


def _backbones(fuzz) -> st.SearchStrategy[str]:
    return st.one_of(fuzz.names("", "efficientnet_lite0"), st.sampled_from(fuzz.backbones))


def _layer_names(fuzz, valid: bool) -> st.SearchStrategy[list[str]]:
    if valid:
        return st.lists(st.sampled_from(VALID_LAYERS), min_size=1, max_size=2)
    return fuzz.repeated(fuzz.names(*fuzz.layers), floods=(2, 257, 100_000))


def _guide_layers(fuzz, valid: bool) -> st.SearchStrategy[list]:
    weight = st.floats(-10, 10, allow_nan=False) if valid else fuzz.doubles(1.0, -1.0, 0.0)
    layer = st.builds(lambda name, w: guide_pb2.GuideLayer(name=name) if w is None
                      else guide_pb2.GuideLayer(name=name, weight=w),
                      st.sampled_from(VALID_LAYERS) if valid else fuzz.names(*fuzz.layers),
                      _optional(weight))
    if valid:
        return st.lists(layer, min_size=1, max_size=2, unique_by=lambda g: g.name)
    return fuzz.repeated(layer, floods=(2, 257))


def _refs(fuzz, target, valid: bool, *, most: int, floods: tuple[int, ...]) -> st.SearchStrategy:
    if valid:
        return st.lists(fuzz.valid_image_refs(target.uris), min_size=1, max_size=most)
    return fuzz.repeated(fuzz.image_refs(target.uris, target.store), max_size=most,
                         floods=floods)


def guide_weights_requests(fuzz, target) -> st.SearchStrategy:
    def parts(valid: bool) -> dict[str, st.SearchStrategy]:
        return {"guides": _refs(fuzz, target, valid, most=2, floods=(17,)),
                "backbone": st.sampled_from(["", "efficientnet_lite0"]) if valid
                else _backbones(fuzz),
                "layers": _guide_layers(fuzz, valid)}

    return fuzz.mutated(guide_pb2.GuideWeightsRequest, parts(True), parts(False))


def select_requests(fuzz, target) -> st.SearchStrategy:
    prefixes = st.one_of(st.just(""), st.sampled_from([
        "fuzz/", f"{target.store.url}/fuzz/", "fuzz/a", "nothing/", "s3://bucket/p/"]),
        fuzz.uris(target.uris, target.store))

    def parts(valid: bool) -> dict[str, st.SearchStrategy]:
        return {"images": _refs(fuzz, target, valid, most=2, floods=(1025,)),
                "prefix": st.sampled_from(["", "fuzz/a", f"{target.store.url}/fuzz/b"])
                if valid else prefixes,
                "backbone": st.sampled_from(["", "efficientnet_lite0"]) if valid
                else _backbones(fuzz),
                "layers": _layer_names(fuzz, valid),
                "top_k": st.integers(1, 3) if valid else fuzz.integers(*fuzz.UINT32, 0, 1, 16),
                "bottom_k": st.integers(0, 2) if valid
                else fuzz.integers(*fuzz.UINT32, 0, 1, 16)}

    return fuzz.mutated(guide_pb2.SelectNeuronsRequest, parts(True), parts(False))


def activations_requests(fuzz, target) -> st.SearchStrategy:
    def image(ref: common_pb2.ImageRef | None) -> common_pb2.ImageRef | None:
        return ref

    def parts(valid: bool) -> dict[str, st.SearchStrategy]:
        return {"image": fuzz.valid_image_refs(target.uris) if valid
                else _optional(fuzz.image_refs(target.uris, target.store)),
                "backbone": st.sampled_from(["", "efficientnet_lite0"]) if valid
                else _backbones(fuzz),
                "layers": _layer_names(fuzz, valid),
                "max_side": st.sampled_from([0, 32, 64, 512, 2**32 - 1]) if valid
                else fuzz.integers(*fuzz.UINT32, 0, 1, 31, 32)}

    def build(image, **rest) -> guide_pb2.GuideActivationsRequest:
        request = guide_pb2.GuideActivationsRequest(**rest)
        if image is not None:
            request.image.CopyFrom(image)
        return request

    return fuzz.mutated(build, parts(True), parts(False))


STRATEGIES = {
    "ComputeGuideWeights": (guide_weights_requests, guide_pb2.GuideWeightsRequest),
    "SelectNeurons": (select_requests, guide_pb2.SelectNeuronsRequest),
    "Activations": (activations_requests, guide_pb2.GuideActivationsRequest),
}


@pytest.mark.parametrize("rpc", sorted(STRATEGIES))
def test_guide_answers_every_request_with_a_documented_code(guide_target, fuzz, rpc):
    strategy, message = STRATEGIES[rpc]
    fields = fuzz.field_names(message.DESCRIPTOR)

    @fuzz.settings
    @given(request=strategy(fuzz, guide_target), extra=fuzz.unknown_fields())
    def one(request, extra: bytes) -> None:
        fuzz.counts[rpc] += 1
        outcome = guide_target.call(rpc, request.SerializeToString() + extra)
        guide_target.judge(outcome, fields, request, rpc)

    one()
    assert fuzz.counts[rpc] >= fuzz.examples
