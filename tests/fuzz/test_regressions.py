"""One regression test per class of failure the fuzzing found (or the issue named), each at the
root it was fixed in: decoding, URIs, numbers, counts, message sizes, odd image shapes."""

from __future__ import annotations

import io
import math
import struct
import time

import grpc
import pytest
import torch
from PIL import Image

from dreamsuite.artifacts.s3 import S3Store, parse_s3_url
from dreamsuite.engine import RANGES, DreamConfig, dream, select_neurons
from dreamsuite.engine.config import field_errors
from dreamsuite.errors import InvalidArgument, NotFound
from dreamsuite.images import encode_png, load_image, read_png_text, sample_image
from dreamsuite.v1 import common_pb2, dream_pb2, guide_pb2
from dreamsuite.wire.status import MAX_DETAILS_BYTES, status_for

pytestmark = pytest.mark.slow

OK, INVALID = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (20, 120, 220)).save(buffer, format="PNG")
    return buffer.getvalue()


def _request(image: bytes | None = None, **fields) -> dream_pb2.DreamRequest:
    """A cheap valid dream (one octave, one step), changed by ``fields``."""
    request = dream_pb2.DreamRequest(
        image=common_pb2.ImageRef(data=image or encode_png(sample_image("chelsea", size=40))),
        maplist=common_pb2.Maplist(layers=[common_pb2.LayerTerm(layer="block_3")]),
        schedule=dream_pb2.OctaveSchedule(octaves=1, steps=1),
        output=dream_pb2.OutputOptions(preview_format=dream_pb2.PREVIEW_FORMAT_NONE))
    for path, value in fields.items():
        *parents, leaf = path.split("__")
        target = request
        for parent in parents:
            target = getattr(target, parent)
        if isinstance(value, list):
            getattr(target, leaf).extend(value)
        else:
            setattr(target, leaf, value)
    return request


def _dream(target, request: dream_pb2.DreamRequest, fuzz, deadline: float = 5.0):
    outcome = target.call("Dream", request.SerializeToString(), stream=True, deadline=deadline)
    target.judge(outcome, fuzz.field_names(dream_pb2.DreamRequest.DESCRIPTOR), request)
    return outcome


def _guide(target, rpc: str, request, fuzz):
    outcome = target.call(rpc, request.SerializeToString())
    target.judge(outcome, fuzz.field_names(request.DESCRIPTOR), request)
    return outcome


# --- decoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [SyntaxError("broken PNG file"), struct.error("unpack"),
                                   EOFError(), TypeError("x"), ZeroDivisionError(),
                                   MemoryError(), IndexError(), KeyError("mode"),
                                   Image.DecompressionBombError("bomb")])
def test_any_decoder_failure_is_invalid_argument(monkeypatch, error):
    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(Image, "open", broken)
    with pytest.raises(InvalidArgument, match="not a readable"):
        load_image(b"\x89PNG\r\n\x1a\n....")
    with pytest.raises(InvalidArgument, match="not a readable PNG"):
        read_png_text(b"\x89PNG\r\n\x1a\n....")


def test_a_png_that_breaks_pillow_mid_decode_is_refused_by_both_services(
        dream_target, guide_target, fuzz):
    data = (fuzz.corpus / "bad-png-idat-short.png").read_bytes()
    with pytest.raises(InvalidArgument, match="SyntaxError"):  # what used to escape
        load_image(data)
    outcome = _dream(dream_target, _request(data), fuzz)
    assert outcome.code == INVALID and outcome.details.startswith("image: ")
    outcome = _guide(guide_target, "Activations", guide_pb2.GuideActivationsRequest(
        image=common_pb2.ImageRef(data=data), layers=["block_3"]), fuzz)
    assert outcome.code == INVALID and outcome.details.startswith("image: ")


@pytest.mark.parametrize("name", ["bad-other.ico", "bad-other.pcx", "bad-other.tga",
                                  "bad-other.ppm", "bad-other.sgi", "bad-other.xbm",
                                  "bad-other.dib"])
def test_formats_pillow_reads_but_the_allow_list_refuses(fuzz, name):
    data = (fuzz.corpus / name).read_bytes()
    assert Image.open(io.BytesIO(data)).size  # Pillow alone would decode it
    with pytest.raises(InvalidArgument, match="PNG, JPEG, WebP, TIFF, BMP, GIF"):
        load_image(data)


@pytest.mark.parametrize("name", ["bad-png-bomb-20000x20000.png", "bad-png-8000x8000-short.png",
                                  "bad-png-2147483647-square.png", "bad-gif-65535x65535.gif",
                                  "bad-tiff-huge-width.tif", "bad-jpeg-65535x65535.jpg"])
def test_absurd_declared_sizes_are_refused_before_decoding(fuzz, name):
    data = (fuzz.corpus / name).read_bytes()
    started = time.monotonic()
    with pytest.raises(InvalidArgument, match="pixels"):
        load_image(data, max_pixels=4096 * 4096)
    assert time.monotonic() - started < 0.5


def test_png_text_has_the_same_refusals(fuzz):
    for name in ("bad-png-idat-short.png", "bad-png-bomb-20000x20000.png", "valid-rgb.jpg"):
        with pytest.raises(InvalidArgument, match="PNG|pixels"):
            read_png_text((fuzz.corpus / name).read_bytes())


def test_sixteen_bit_grey_is_scaled_not_clipped(fuzz):
    image = load_image((fuzz.corpus / "valid-16bit-grey.png").read_bytes())
    assert 0.2 < float(image.mean()) < 0.8


# --- artifact URIs ------------------------------------------------------------------------------


def _uris(target) -> dict[str, grpc.StatusCode]:
    root = target.store.url
    return {
        f"{root}/%00.png": INVALID,  # NUL once decoded: used to crash resolving the path
        "file://[::1/x.png": INVALID,  # urlparse raises ValueError
        "s3://[bucket/x.png": INVALID,
        f"{root}/{'a' * 300}.png": NOT_FOUND,  # ENAMETOOLONG: used to be INTERNAL
        f"{root}/sha256/{'b' * 300}/c.png": NOT_FOUND,
        f"{root}/sha256/": NOT_FOUND,  # a folder of the store
        f"{root}/sha256": NOT_FOUND,
        "a\x00b": INVALID,
        "x" * 3000: INVALID,
        "http://example.com/x.png": INVALID,
    }


def test_malformed_uris_are_refused_never_internal_or_unavailable(dream_target, guide_target,
                                                                  fuzz):
    for uri, code in _uris(dream_target).items():
        outcome = _dream(dream_target, _request(image__uri=uri), fuzz)
        assert (outcome.code, outcome.details[:6]) == (code, "image:"), (uri, outcome)
    for uri, code in _uris(guide_target).items():
        outcome = _guide(guide_target, "SelectNeurons", guide_pb2.SelectNeuronsRequest(
            images=[common_pb2.ImageRef(uri=uri)], layers=["block_3"], top_k=1), fuzz)
        assert outcome.code == code and outcome.details.startswith("images[0]: "), (uri, outcome)
    for prefix in (f"{guide_target.store.url}/{'a' * 300}/", "file://[::1/", "%00/"):
        outcome = _guide(guide_target, "SelectNeurons", guide_pb2.SelectNeuronsRequest(
            prefix=prefix, layers=["block_3"], top_k=1), fuzz)
        assert outcome.code == INVALID and outcome.details.startswith("prefix: "), outcome


def test_s3_store_refuses_malformed_uris_without_a_call():
    store = S3Store(parse_s3_url("s3://bucket?endpoint=127.0.0.1:9&secure=false"))
    with pytest.raises(InvalidArgument, match="malformed"):
        store.get("s3://[bucket/key.png")
    with pytest.raises(NotFound, match="folder"):
        store.get("s3://bucket/sha256/")


# --- message sizes ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["x" * 10_000, "\U0001f600" * 10_000, "%" * 10_000,
                                  "é\udcff" * 3000])
def test_status_messages_fit_the_trailing_metadata(text):
    _, message = status_for(InvalidArgument(text))
    wire = sum(1 if " " <= c <= "~" and c != "%" else 3 * len(c.encode()) for c in message)
    assert wire <= MAX_DETAILS_BYTES and message.endswith("chars]")
    with pytest.raises(InvalidArgument) as info, field_errors("a.b[3]"), field_errors("c"):
        raise InvalidArgument(message)  # wrapping once more cannot grow it past the limit
    assert len(status_for(info.value)[1]) <= 2100


def test_echoed_names_never_blow_the_metadata_limit(dream_target, guide_target, fuzz):
    name = "\U0001f600" * 5000  # used to end as "received metadata size exceeds hard limit"
    weights = [common_pb2.LayerWeights(layer=name)] * 2
    outcome = _dream(dream_target, _request(guidance__guide_weights=weights), fuzz)
    assert outcome.code == INVALID and outcome.details.startswith("guidance.guide_weights[1]")
    layers = [guide_pb2.GuideLayer(name=name)] * 2
    outcome = _guide(guide_target, "ComputeGuideWeights", guide_pb2.GuideWeightsRequest(
        guides=[common_pb2.ImageRef(data=_png(40, 40))], layers=layers), fuzz)
    assert outcome.code == INVALID and outcome.details.startswith("layers[1].name: ")


@pytest.mark.parametrize("field", ["backbone", "maplist__layers"])
def test_long_names_are_bounded(dream_target, fuzz, field):
    name = "n" * 100_000
    request = (_request(backbone=name) if field == "backbone" else
               _request(maplist__layers=[common_pb2.LayerTerm(layer=name)]))
    outcome = _dream(dream_target, request, fuzz)
    assert outcome.code == INVALID and "at most 128" in outcome.details
    assert len(outcome.details) < 300


# --- odd image shapes ---------------------------------------------------------------------------


def test_a_thin_strip_under_the_pixel_limit_is_refused_without_the_worker(dream_server, fuzz):
    server = dream_server(max_pixels=100_000, queue_size=0)
    started = time.monotonic()
    with server.client() as client:
        request = _request(_png(20_000, 1))
        with pytest.raises(grpc.RpcError) as info:
            list(client.stub.Dream(request, timeout=5))
    assert info.value.code() == INVALID and info.value.details().startswith("image: ")
    assert "1x20000" in info.value.details() and time.monotonic() - started < 5
    assert server.sample("dream_job_seconds_count",
                         {"backbone": "efficientnet_lite0", "kind": "dream", "outcome": "error"}) == 0


def test_guides_and_selection_images_below_the_minimum_input_are_refused(lite0, coffee):
    tiny = torch.rand(3, 1, 1)
    # inception_v3's valid convolutions cannot take a 1x1 guide: refused before it is built.
    config = DreamConfig(backbone="inception_v3", weights="random", octaves=1, steps=1)
    with pytest.raises(InvalidArgument, match=r"guides\[0\]: image is 1x1.*75 pixels"):
        dream(coffee, config, guides=[tiny])
    with pytest.raises(InvalidArgument, match=r"images\[1\]: image is 1x1"):
        select_neurons(lite0, [coffee, tiny], ["block_3"], top_k=1)


def test_tiny_guides_and_selection_images_in_the_dream_service(dream_target, fuzz):
    tiny = common_pb2.ImageRef(data=_png(2, 2))
    outcome = _dream(dream_target, _request(guidance__guides=[tiny]), fuzz)
    assert outcome.code == INVALID and outcome.details.startswith("guidance.guides[0]: ")
    selection = dream_pb2.NeuronSelection(layers=["block_3"], top_k=1, images=[tiny])
    outcome = _dream(dream_target, _with_selection(selection), fuzz)
    assert outcome.code == INVALID and outcome.details.startswith("selection.images[0]: ")
    outcome = _dream(dream_target, _with_selection(
        dream_pb2.NeuronSelection(layers=["block_3"], top_k=1), _png(2, 2)), fuzz)
    assert outcome.code == INVALID and outcome.details.startswith("selection.images is empty")


def _with_selection(selection: dream_pb2.NeuronSelection,
                    image: bytes | None = None) -> dream_pb2.DreamRequest:
    request = _request(image)
    request.selection.CopyFrom(selection)
    return request


# --- counts -------------------------------------------------------------------------------------


def test_counts_are_capped_early_with_the_field_named(dream_target, guide_target, fuzz):
    image = common_pb2.ImageRef(data=_png(40, 40))
    cases = {
        "guidance.guides: 17 guide images; at most 16": _request(guidance__guides=[image] * 17),
        "maplist has 257 entries": _request(
            maplist__layers=[common_pb2.LayerTerm(layer="block_3")] * 256),
        "maplist has 70000 channel weights": _request(maplist__layers=[common_pb2.LayerTerm(
            layer="head", channels=[common_pb2.ChannelWeight(channel=c % 1280, weight=1)
                                    for c in range(70_000)])]),
        "guidance.guide_weights[0].weights: 70000 weights": _request(
            guidance__guide_weights=[common_pb2.LayerWeights(layer="block_3",
                                                             weights=[0.5] * 70_000)]),
        "selection.images: 65 images; at most 64": _with_selection(dream_pb2.NeuronSelection(
            layers=["block_3"], top_k=1, images=[image] * 65)),
        "selection: layers: 100000 layers; at most 256": _with_selection(
            dream_pb2.NeuronSelection(layers=["block_3"] * 100_000, top_k=1)),
    }
    for expected, request in cases.items():
        started = time.monotonic()
        outcome = _dream(dream_target, request, fuzz)
        assert outcome.code == INVALID and outcome.details.startswith(expected), outcome
        assert time.monotonic() - started < 2, expected
    outcome = _guide(guide_target, "ComputeGuideWeights", guide_pb2.GuideWeightsRequest(
        guides=[image] * 17, layers=[guide_pb2.GuideLayer(name="block_3")]), fuzz)
    assert outcome.details.startswith("guides: 17 images; at most 16"), outcome
    outcome = _guide(guide_target, "Activations", guide_pb2.GuideActivationsRequest(
        image=image, layers=["block_3"] * 100_000), fuzz)
    assert outcome.details.startswith("layers: 100000 layers; at most 256"), outcome


def test_repeated_guide_layers_and_channels_are_refused(dream_target, guide_target, fuzz):
    channels = [common_pb2.ChannelWeight(channel=3, weight=1.0)] * 2
    outcome = _dream(dream_target, _request(
        maplist__layers=[common_pb2.LayerTerm(layer="block_3", channels=channels)]), fuzz)
    assert outcome.code == INVALID and "channel 3 repeats" in outcome.details
    outcome = _guide(guide_target, "ComputeGuideWeights", guide_pb2.GuideWeightsRequest(
        guides=[common_pb2.ImageRef(data=_png(40, 40))],
        layers=[guide_pb2.GuideLayer(name="block_3", weight=1.0),
                guide_pb2.GuideLayer(name="block_3", weight=-1.0)]), fuzz)
    assert outcome.code == INVALID and outcome.details.startswith("layers[1].name: ")


# --- numbers ------------------------------------------------------------------------------------

_WIRE = {"octaves": "schedule__octaves", "octave_scale": "schedule__octave_scale",
         "steps": "schedule__steps", "step_size": "schedule__step_size",
         "jitter": "regularisers__jitter", "tv": "regularisers__tv",
         "smooth": "regularisers__smooth", "blur_every": "regularisers__blur_every",
         "blur_sigma": "regularisers__blur_sigma", "tile": "tile", "seed": "seed"}
_INTS = {"octaves", "steps", "jitter", "blur_every", "tile", "seed"}


def _out_of_range(name: str) -> list:
    low, high = RANGES[name]
    if name == "seed":
        return []  # every int64 is a seed
    if name in _INTS:
        return [v for v in (-(2**31), -1, 0, 2**31 - 1) if not low <= v <= high]
    return [math.nan, math.inf, -math.inf, 1e308, -1e308, low - 1e-3 if low else -1e-300,
            high * 2]


def test_every_number_out_of_its_range_names_its_field(dream_target, fuzz):
    for name, path in _WIRE.items():
        for value in _out_of_range(name):
            outcome = _dream(dream_target, _request(**{path: value}), fuzz)
            assert outcome.code == INVALID and outcome.details.startswith(name), (name, value)


@pytest.mark.parametrize(("path", "value"), [
    ("seed", -(2**63)), ("seed", 2**63 - 1), ("regularisers__tv", -0.0),
    ("regularisers__jitter", 4096), ("tile", 8192), ("schedule__octave_scale", 4.0),
    ("regularisers__smooth", 64.0), ("output__preview_max_side", 4096),
    ("output__preview_max_bytes", 1024)])
def test_extreme_values_inside_the_ranges_dream(dream_target, fuzz, path, value):
    assert _dream(dream_target, _request(**{path: value}), fuzz).code == OK


@pytest.mark.parametrize(("path", "value"), [
    ("output__preview_max_side", -1), ("output__preview_max_side", 2**31 - 1),
    ("output__preview_max_bytes", -(2**31)), ("output__preview_max_bytes", 2**31 - 1),
    ("output__preview_format", 99), ("weights", -7), ("guidance__mode", 2**31 - 1)])
def test_output_numbers_and_enums_out_of_range(dream_target, fuzz, path, value):
    outcome = _dream(dream_target, _request(**{path: value}), fuzz)
    assert outcome.code == INVALID and outcome.details.startswith(path.replace("__", "."))


def test_selection_counts_name_their_field(dream_target, guide_target, fuzz):
    for top_k, bottom_k, field in ((-1, 2, "selection: top_k"), (2**31 - 1, 0, "selection: top_k"),
                                   (1, -(2**31), "selection: bottom_k")):
        outcome = _dream(dream_target, _with_selection(dream_pb2.NeuronSelection(
            layers=["block_3"], top_k=top_k, bottom_k=bottom_k)), fuzz)
        assert outcome.code == INVALID and outcome.details.startswith(field), outcome
    outcome = _guide(guide_target, "SelectNeurons", guide_pb2.SelectNeuronsRequest(
        images=[common_pb2.ImageRef(data=_png(40, 40))], layers=["stem"], top_k=20,
        bottom_k=20), fuzz)
    assert outcome.code == INVALID and outcome.details.startswith("top_k + bottom_k = 40")
    outcome = _guide(guide_target, "Activations", guide_pb2.GuideActivationsRequest(
        image=common_pb2.ImageRef(data=_png(40, 40)), layers=["stem"], max_side=2**32 - 1),
        fuzz)
    assert outcome.code == OK
