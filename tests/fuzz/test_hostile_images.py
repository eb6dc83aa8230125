"""The hostile-image corpus (``tests/data/hostile-images``, written by
``tests/data/make_hostile_images.py``) against both running services: each file as the dream's
image, as its guide, and through the guide service's three RPCs.

``valid-*`` files must be dreamed and measured, ``bad-*`` files refused with INVALID_ARGUMENT
everywhere, ``edge-*`` and ``mut-*`` files either; every answer within the deadline, naming the
field, with the server still SERVING and nothing logged at ERROR.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import grpc
import pytest

from dreamsuite.images import encode_png, sample_image
from dreamsuite.v1 import common_pb2, dream_pb2, guide_pb2

pytestmark = pytest.mark.slow

CORPUS = Path(__file__).resolve().parents[1] / "data" / "hostile-images"
FILES = sorted(path.name for path in CORPUS.iterdir())
OK, INVALID = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT
EXPECTED = {"valid": {OK}, "bad": {INVALID}, "edge": {OK, INVALID}, "mut": {OK, INVALID}}


def test_the_corpus_is_what_the_script_writes():
    spec = importlib.util.spec_from_file_location(
        "make_hostile_images", CORPUS.parent / "make_hostile_images.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert set(script.corpus()) == set(FILES)  # the bytes may differ with another Pillow
    assert len(FILES) >= 50
    assert all((CORPUS / name).stat().st_size < 200_000 for name in FILES)
    assert {name.split("-")[0] for name in FILES} == set(EXPECTED)
    for suffix in (".png", ".jpg", ".webp", ".tif", ".bmp", ".gif"):
        assert any(n.startswith("valid-") and n.endswith(suffix) for n in FILES), suffix
        assert any(n.startswith("bad-") and n.endswith(suffix) for n in FILES), suffix


def _dream(image: common_pb2.ImageRef, guide: common_pb2.ImageRef | None = None):
    return dream_pb2.DreamRequest(
        image=image, backbone="efficientnet_lite0",
        maplist=common_pb2.Maplist(layers=[common_pb2.LayerTerm(layer="block_3")]),
        schedule=dream_pb2.OctaveSchedule(octaves=1, steps=1),
        guidance=dream_pb2.Guidance(guides=[guide] if guide else []),
        output=dream_pb2.OutputOptions(preview_format=dream_pb2.PREVIEW_FORMAT_NONE))


@pytest.fixture(scope="module")
def cat() -> common_pb2.ImageRef:
    return common_pb2.ImageRef(data=encode_png(sample_image("chelsea", size=40)))


@pytest.mark.parametrize("name", FILES)
def test_each_file_is_dreamed_or_refused(name, dream_target, guide_target, cat, fuzz):
    ref = common_pb2.ImageRef(data=(CORPUS / name).read_bytes())
    expected = EXPECTED[name.split("-")[0]]
    dream_fields = fuzz.field_names(dream_pb2.DreamRequest.DESCRIPTOR)
    for what, request in (("image", _dream(ref)), ("guide", _dream(cat, ref))):
        outcome = dream_target.call("Dream", request.SerializeToString(), stream=True)
        dream_target.judge(outcome, dream_fields, f"{name} as {what}", "Dream (corpus)")
        assert outcome.code in expected, (name, what, outcome)
        if outcome.code == INVALID:
            assert outcome.details.startswith("image: " if what == "image"
                                              else "guidance.guides[0]: "), outcome.details

    layers = ["block_3", "head"]
    for rpc, request, field in (
        ("ComputeGuideWeights", guide_pb2.GuideWeightsRequest(
            guides=[ref], layers=[guide_pb2.GuideLayer(name=n) for n in layers]), "guides[0]"),
        ("SelectNeurons", guide_pb2.SelectNeuronsRequest(images=[ref], layers=layers, top_k=2,
                                                         bottom_k=1), "images[0]"),
        ("Activations", guide_pb2.GuideActivationsRequest(image=ref, layers=layers), "image"),
    ):
        outcome = guide_target.call(rpc, request.SerializeToString())
        guide_target.judge(outcome, fuzz.field_names(request.DESCRIPTOR), name,
                           f"{rpc} (corpus)")
        assert outcome.code in expected, (name, rpc, outcome)
        if outcome.code == INVALID:
            assert outcome.details.startswith(f"{field}: "), outcome.details
