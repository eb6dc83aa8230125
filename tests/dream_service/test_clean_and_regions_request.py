"""The dream request's cleaning options, guide regions and layer octave weights: wire
conversion both ways, the service's checks and decoding, and a dream through the server."""

from __future__ import annotations

import json

import pytest
import torch

from dreamsuite.artifacts import open_store
from dreamsuite.engine import DreamConfig, dream
from dreamsuite.engine.objectives import LayerTerm, Maplist
from dreamsuite.errors import InvalidArgument
from dreamsuite.images import encode_png, load_image, sample_image
from dreamsuite.v1 import common_pb2, dream_pb2
from dreamsuite.wire.convert import config_from_request, request_from_config
from services.dream.convert import spec_from_request
from services.dream.jobs import prepare

MAPLIST = Maplist((LayerTerm("block_6"),))


@pytest.fixture(scope="module")
def pngs() -> dict[str, bytes]:
    cat = sample_image("chelsea", size=64)  # 64x96
    h, w = cat.shape[-2:]
    left = torch.zeros(3, h, w)
    left[..., : w // 2] = 1
    return {"cat": encode_png(cat), "coffee": encode_png(sample_image("coffee", size=64)),
            "left": encode_png(left), "square": encode_png(torch.ones(3, 32, 32))}


# --- wire conversion ----------------------------------------------------------------------------


def test_options_and_octave_weights_survive_the_wire(pngs):
    config = DreamConfig(maplist=MAPLIST, octaves=3, laplacian=2, decorrelate=False,
                         fourier=0.75, guide_octave_weights=((1.0, 0.5, 0.0), ()),
                         layer_octave_weights={"block_6": (0.0, 1.0, 2.0)})
    request = request_from_config(config, pngs["cat"], guides=[pngs["coffee"], pngs["coffee"]],
                                  guide_masks=[pngs["left"], None])
    assert request.laplacian_levels == 2 and request.decorrelate is False
    assert [bool(r.mask.data) for r in request.guide_regions] == [True, False]
    assert config_from_request(dream_pb2.DreamRequest.FromString(
        request.SerializeToString())) == config
    spec = spec_from_request(request)
    assert spec.guide_masks[0].data == pngs["left"] and spec.guide_masks[0].field == (
        "guide_regions[0].mask")
    assert spec.guide_masks[1] is None


def test_unset_fields_take_the_engine_defaults(pngs):
    config = config_from_request(dream_pb2.DreamRequest(image=common_pb2.ImageRef(
        data=pngs["cat"])))
    default = DreamConfig()
    assert (config.laplacian, config.decorrelate, config.fourier) == (
        default.laplacian, default.decorrelate, default.fourier)
    assert config.guide_octave_weights == () and config.layer_octave_weights is None
    # Regions that carry neither masks nor octave weights ask for nothing.
    request = dream_pb2.DreamRequest(guide_regions=[dream_pb2.GuideRegion()])
    assert spec_from_request(request).guide_masks == ()
    assert config_from_request(request).guide_octave_weights == ()


def test_octave_weight_lists_are_counted_before_they_are_copied():
    request = dream_pb2.DreamRequest(guide_regions=[dream_pb2.GuideRegion(
        octave_weights=[1.0] * 100_000)])
    with pytest.raises(InvalidArgument, match=r"guide_regions\[0\].octave_weights: 100000"):
        config_from_request(request)
    request = dream_pb2.DreamRequest(layer_octave_weights=[
        common_pb2.LayerWeights(layer="block_6", weights=[1.0] * 4)] * 2)
    with pytest.raises(InvalidArgument, match="layer 'block_6' repeats"):
        config_from_request(request)


# --- the service's checks -----------------------------------------------------------------------


def _request(pngs, *, masks=(), guides=("coffee",), octaves=2, **config) -> dream_pb2.DreamRequest:
    config = DreamConfig(maplist=MAPLIST, octaves=octaves, steps=1, **config)
    return request_from_config(config, pngs["cat"], guides=[pngs[g] for g in guides],
                               guide_masks=[None if m is None else pngs[m] for m in masks])


def test_prepare_decodes_one_mask_per_guide(pngs, tmp_path):
    job = prepare(spec_from_request(_request(pngs, masks=["left", None],
                                             guides=["coffee", "cat"])),
                  open_store(tmp_path), max_pixels=10**6)
    assert job.guide_masks[0].shape == (3, 64, 96) and job.guide_masks[1] is None
    torch.testing.assert_close(job.guide_masks[0], load_image(pngs["left"]))


@pytest.mark.parametrize("masks, guides, config, message", [
    (["left"], ["coffee", "cat"], {}, "guide_regions: guide_masks: 1 masks for 2 guides"),
    (["square"], ["coffee"], {}, r"guide_regions\[0\].mask: is 32x32, the image 96x64"),
    ([], ["coffee"], {"guide_octave_weights": ((1.0, 1.0), (1.0, 1.0))},
     "guide_octave_weights: 2 entries for 1 guides"),
    ([], ["coffee"], {"guide_octave_weights": ((1.0,),)}, r"one weight per octave \(2\)"),
    (["left"], ["coffee"], {"guide_mode": "match"}, "guide_masks need guide_mode 'weights'"),
    ([], [], {"laplacian": 99}, "laplacian must be between 0 and 12"),
    ([], [], {"fourier": 9.0}, "fourier must be between 0 and 4"),
    ([], [], {"layer_octave_weights": {"block_9": (1.0, 1.0)}}, "not a layer of the maplist"),
])
def test_bad_requests_are_refused_naming_the_field(pngs, tmp_path, masks, guides, config,
                                                   message):
    # Built past DreamConfig's own checks: a client may send anything.
    request = _request(pngs, masks=masks, guides=guides)
    for name, value in config.items():
        if name == "laplacian":
            request.laplacian_levels = value
        elif name == "fourier":
            request.fourier_decay = value
        elif name == "guide_mode":
            request.guidance.mode = dream_pb2.GUIDE_MODE_MATCH
        elif name == "guide_octave_weights":
            del request.guide_regions[:]
            for weights in value:
                request.guide_regions.add(octave_weights=weights)
        else:
            request.layer_octave_weights.add(layer="block_9", weights=[1.0, 1.0])
    with pytest.raises(InvalidArgument, match=message):
        prepare(spec_from_request(request), open_store(tmp_path), max_pixels=10**6)


def test_precomputed_guide_weights_cannot_carry_regions(pngs, tmp_path):
    request = _request(pngs, guides=[])
    request.guidance.guide_weights.add(layer="block_6", weights=[1.0] * 80)
    request.guide_regions.add(octave_weights=[1.0, 0.0])
    with pytest.raises(InvalidArgument, match="guide_octave_weights: 1 entries for 0 guides"):
        prepare(spec_from_request(request), open_store(tmp_path), max_pixels=10**6)


# --- through the server -------------------------------------------------------------------------


@pytest.mark.slow
def test_service_dream_with_options_equals_the_in_process_dream(dream_server, pngs):
    config = DreamConfig(maplist=MAPLIST, octaves=2, steps=2, octave_scale=1.3, jitter=4,
                         seed=7, laplacian=2, decorrelate=False, fourier=0.5,
                         guide_octave_weights=((0.0, 1.0),),
                         layer_octave_weights={"block_6": (1.0, 0.5)})
    request = request_from_config(config, pngs["cat"], guides=[pngs["coffee"]],
                                  output=dream_pb2.OutputOptions(inline_images=True))
    server = dream_server()
    with server.client() as client:
        result = list(client.dream(request, timeout=120))[-1].result
    local = dream(load_image(pngs["cat"]), config, guides=[load_image(pngs["coffee"])],
                  device="cpu")
    assert torch.equal(load_image(result.image), load_image(encode_png(local.image)))
    recorded = json.loads(result.provenance_json)["config"]
    assert (recorded["laplacian"], recorded["decorrelate"], recorded["fourier"]) == (2, False,
                                                                                     0.5)
    assert recorded["guide_octave_weights"] == [[0.0, 1.0]]
