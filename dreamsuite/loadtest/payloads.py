"""The requests a load test sends, built once per process from a :class:`Calls`.

Images are scikit-image's bundled photos scaled with Pillow (no torch: a Locust process stays
small and starts in a second) or the scenario's files, sent as they are. A malformed request of
each kind (image bytes that are no image; a ``Sample`` of no seeds) is kept beside the valid
ones for the scenario's ``invalid`` fraction: the service must answer it ``INVALID_ARGUMENT``.
A dream with a ``model`` is a one-pass request (image, model, condition and output only).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import Message

from dreamsuite.loadtest.scenario import Calls
from dreamsuite.v1 import common_pb2, dream_pb2, gan_pb2, guide_pb2

__all__ = ["PHOTOS", "INVALID_IMAGE", "Payloads", "build_payloads", "photo_png"]

#: scikit-image's public-domain / CC0 photos (``dreamsuite.images.SAMPLES``, which needs torch).
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
#: The image of a deliberately malformed request.
INVALID_IMAGE = b"dreamsuite loadtest: a deliberately malformed image"


@dataclass(frozen=True)
class Payloads:
    """Ready requests of one kind: ``valid`` ones (sent in turn) and one ``invalid``."""

    method: str
    valid: tuple[Message, ...]
    invalid: Message

    def pick(self, index: int, invalid: bool) -> tuple[Message, int]:
        """The request to send and its size on the wire (bytes)."""
        request = self.invalid if invalid else self.valid[index % len(self.valid)]
        return request, request.ByteSize()


def photo_png(name: str, size: int) -> bytes:
    """scikit-image's photo ``name`` scaled so its shorter side is ``size`` pixels, as PNG."""
    from PIL import Image
    from skimage import data

    array = getattr(data, name)()
    image = Image.fromarray(array).convert("RGB")
    scale = size / min(image.size)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                         Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _images(calls: Calls) -> list[bytes]:
    if calls.images:
        return [Path(path).read_bytes() for path in calls.images]
    return [photo_png(name, size) for size in calls.sizes for name in PHOTOS]


def _refs(images: list[bytes], start: int, count: int) -> list[common_pb2.ImageRef]:
    return [common_pb2.ImageRef(data=images[(start + i) % len(images)]) for i in range(count)]


def _dream(calls: Calls, image: bytes) -> dream_pb2.DreamRequest:
    output = None if calls.preview else dream_pb2.OutputOptions(
        preview_format=dream_pb2.PREVIEW_FORMAT_NONE)
    if calls.model:  # a one-pass dream: the image, the model and its condition only
        return dream_pb2.DreamRequest(image=common_pb2.ImageRef(data=image), model=calls.model,
                                      condition=calls.condition, output=output)
    schedule = {name: getattr(calls, name) for name in ("octaves", "steps", "octave_scale")
                if getattr(calls, name) is not None}
    maplist = common_pb2.Maplist(layers=[common_pb2.LayerTerm(layer=name) for name in calls.layers])
    return dream_pb2.DreamRequest(
        image=common_pb2.ImageRef(data=image), backbone=calls.backbone,
        maplist=maplist if calls.layers else None,
        schedule=dream_pb2.OctaveSchedule(**schedule), output=output)


def _guide_weights(calls: Calls, images: list[bytes], start: int) -> guide_pb2.GuideWeightsRequest:
    return guide_pb2.GuideWeightsRequest(
        guides=_refs(images, start, calls.guides), backbone=calls.backbone,
        layers=[guide_pb2.GuideLayer(name=name) for name in calls.layers])


def _select(calls: Calls, images: list[bytes], start: int) -> guide_pb2.SelectNeuronsRequest:
    return guide_pb2.SelectNeuronsRequest(
        images=_refs(images, start, calls.batch), backbone=calls.backbone,
        layers=list(calls.layers), top_k=calls.top_k, bottom_k=calls.bottom_k)


def _sample(calls: Calls, seed: int) -> gan_pb2.SampleRequest:
    return gan_pb2.SampleRequest(model=calls.model, seed=seed, count=calls.count,
                                 inline_images=calls.inline)


def build_payloads(calls: Calls) -> Payloads:
    """The requests of ``calls``: one per image (``sample``: 16 seeds) and a malformed one."""
    if calls.kind == "sample":
        valid = tuple(_sample(calls, seed * calls.count) for seed in range(16))
        invalid = gan_pb2.SampleRequest(model=calls.model, count=0)
        return Payloads(calls.method, valid, invalid)
    images = _images(calls)
    if calls.kind == "dream":
        valid = tuple(_dream(calls, image) for image in images)
        return Payloads(calls.method, valid, _dream(calls, INVALID_IMAGE))
    make = _guide_weights if calls.kind == "guide_weights" else _select
    valid = tuple(make(calls, images, i) for i in range(len(images)))
    return Payloads(calls.method, valid, make(calls, [INVALID_IMAGE], 0))
