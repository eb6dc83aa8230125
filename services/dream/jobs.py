"""What a dream request asks for, in library terms, and its checked, decoded form.

:class:`DreamSpec` is the transport-free request (the servicer builds it from the proto);
:func:`prepare` runs the engine's one validation (:func:`dreamsuite.engine.check_config`) and
decodes the images, so a bad request fails before it takes a place in the device queue. Every
:class:`InvalidArgument` message starts with the request field it is about.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from dreamsuite.artifacts import ArtifactStore
from dreamsuite.backbones import get_backbone_spec
from dreamsuite.engine.config import (
    MAX_GUIDES,
    MAX_SELECTION_IMAGES,
    OUTPUT_RANGES,
    CheckedConfig,
    DreamConfig,
    check_config,
    check_count,
    check_dream_size,
    check_guide_shaping,
    check_guide_weights,
    check_range,
    field_errors,
)
from dreamsuite.engine.guide import GUIDE_MAX_SIDE, check_image_side, check_selection
from dreamsuite.engine.octaves import plan_octaves
from dreamsuite.errors import InvalidArgument
from dreamsuite.images import check_image_header, load_image

__all__ = ["ImageInput", "SelectionSpec", "OutputSpec", "DreamSpec", "PreparedJob", "prepare",
           "check_request", "CheckedRequest",
           "PREVIEW_FORMATS", "batch_key", "work_size"]

PREVIEW_FORMATS = ("jpeg", "png", "none")


@dataclass(frozen=True)
class ImageInput:
    """An image as sent: encoded bytes, or an artifact URI of the service's store."""

    field: str
    data: bytes = b""
    uri: str = ""


@dataclass(frozen=True)
class SelectionSpec:
    """Lucid-style neuron selection over ``images`` (empty: the input image)."""

    layers: tuple[str, ...]
    top_k: int
    bottom_k: int
    images: tuple[ImageInput, ...] = ()


@dataclass(frozen=True)
class OutputSpec:
    """What each update returns besides numbers."""

    preview_format: str = "jpeg"
    preview_max_side: int = 256
    preview_max_bytes: int = 64_000
    store_octaves: bool = False
    inline_images: bool = False


@dataclass(frozen=True)
class DreamSpec:
    """A dream request without transport details."""

    image: ImageInput | None
    config: DreamConfig
    guides: tuple[ImageInput, ...] = ()
    guide_weights: dict[str, list[float]] | None = None
    # One per guide (None: that guide covers the whole image), or () for none.
    guide_masks: tuple[ImageInput | None, ...] = ()
    selection: SelectionSpec | None = None
    output: OutputSpec = OutputSpec()
    #: A trained one-pass model served by TorchServe (``""``: the optimised dream) and which of
    #: its dream configs (``""``: the first).
    model: str = ""
    condition: str = ""


@dataclass
class PreparedJob:
    """A checked request with decoded ``[3, H, W]`` images, ready for the device worker."""

    spec: DreamSpec
    image: torch.Tensor
    input_data: bytes
    input_uri: str
    guides: list[torch.Tensor] = field(default_factory=list)
    guide_sources: list[tuple[bytes, str]] = field(default_factory=list)  # (data, uri) each
    guide_weights: dict[str, torch.Tensor] | None = None
    selection_images: list[torch.Tensor] = field(default_factory=list)
    guide_masks: list[torch.Tensor | None] = field(default_factory=list)  # [3, H, W] each

    @property
    def config(self) -> DreamConfig:
        return self.spec.config


def _check_output(output: OutputSpec) -> None:
    if output.preview_format not in PREVIEW_FORMATS:
        raise InvalidArgument(f"output.preview_format must be one of {PREVIEW_FORMATS}")
    for name, (low, high) in OUTPUT_RANGES.items():
        check_range(getattr(output, name), f"output.{name}", low, high)


def _check_guidance(spec: DreamSpec, checked: CheckedConfig) -> dict[str, torch.Tensor] | None:
    check_count(len(spec.guides), "guidance.guides", MAX_GUIDES, "guide images")
    with field_errors("guide_regions"):
        check_guide_shaping(spec.config, len(spec.guides), len(spec.guide_masks))
    if spec.guide_weights is None:
        return None
    if spec.guides:
        raise InvalidArgument("guidance: give guides or guide_weights, not both")
    if spec.config.guide_mode != "weights":
        raise InvalidArgument("guidance.guide_weights needs GUIDE_MODE_WEIGHTS")
    if spec.config.guide_octave_weights or spec.guide_masks:
        raise InvalidArgument("guide_regions need guide images (guidance.guides): each guide's "
                              "own weights, which guidance.guide_weights does not carry")
    return check_guide_weights(checked.spec, spec.guide_weights, checked.maplist.layers)


def _check_selection(spec: DreamSpec, checked: CheckedConfig) -> SelectionSpec | None:
    """The request's selection, its layers by their friendly names (aliases resolved)."""
    if spec.selection is None:
        return None
    check_count(len(spec.selection.images), "selection.images", MAX_SELECTION_IMAGES, "images")
    with field_errors("selection"):
        layers = check_selection(checked.spec, spec.selection.layers,
                                 top_k=spec.selection.top_k, bottom_k=spec.selection.bottom_k)
    return dataclasses.replace(spec.selection, layers=tuple(layers))


def _read(source: ImageInput, store: ArtifactStore) -> bytes:
    with field_errors(source.field):
        if source.data:
            return source.data
        if source.uri:
            return store.get(source.uri)
        raise InvalidArgument("is empty: give data (encoded image bytes) or uri (an artifact)")


def _decode(source: ImageInput, store: ArtifactStore, max_pixels: int,
            checked: CheckedConfig, max_side: int = 0) -> torch.Tensor:
    """A guide or selection image, decoded and big enough to measure."""
    data = _read(source, store)
    with field_errors(source.field):
        image = load_image(data, max_pixels=max_pixels)
        check_image_side(checked.spec, image, max_side=max_side)
    return image


def _decode_mask(source: ImageInput | None, store: ArtifactStore, max_pixels: int,
                 image: torch.Tensor) -> torch.Tensor | None:
    """A guide mask, decoded, of the input image's aspect ratio."""
    if source is None:
        return None
    data = _read(source, store)
    with field_errors(source.field):
        mask = load_image(data, max_pixels=max_pixels)
        (h, w), (mh, mw) = image.shape[-2:], mask.shape[-2:]
        if abs(mh / mw - h / w) > 0.02 * h / w:
            raise InvalidArgument(f"is {mw}x{mh}, the image {w}x{h}; give a mask of the "
                                  "image's aspect ratio")
    return mask


def _guide_sources(spec: DreamSpec) -> list[tuple[bytes, str]]:
    return [(g.data, g.uri) for g in spec.guides]


def work_size(job: PreparedJob) -> tuple[int, int]:
    """The size the dream's last octave runs at (its image, scaled up to the backbone's
    minimum input if smaller)."""
    spec = get_backbone_spec(job.config.backbone)
    return plan_octaves(tuple(job.image.shape[-2:]), 1, job.config.octave_scale,
                        spec.min_size).work_size


def batch_key(job: PreparedJob) -> tuple:
    """Dreams with equal keys run the same passes at the same sizes, so they can be stepped
    as one batch: same backbone and weights, image size, octaves, scale, steps and tile."""
    config = job.config
    return (config.backbone, config.weights, tuple(job.image.shape[-2:]), config.octaves,
            config.octave_scale, config.steps, config.tile)


class CheckedRequest(NamedTuple):
    """What :func:`check_request` found: the checked config, the guide weights given with the
    request (None: none) and the selection with its layers resolved."""

    checked: CheckedConfig
    weights: dict[str, torch.Tensor] | None
    selection: SelectionSpec | None


def check_request(spec: DreamSpec, *, max_pixels: int | None = None) -> CheckedRequest:
    """The checks of ``spec`` that need no image decoded (config, guidance, selection,
    output, the inline images' headers): a bad request is ``INVALID_ARGUMENT`` even when the
    queue is full, so clients do not retry it."""
    if spec.image is None:
        raise InvalidArgument("image: required; give image.data (encoded bytes) or image.uri")
    _check_output(spec.output)
    checked = check_config(spec.config)
    weights = _check_guidance(spec, checked)
    selection = _check_selection(spec, checked)
    for source in (spec.image, *spec.guides):  # sent inline: their headers (no decoding)
        if source.data:
            with field_errors(source.field):
                check_image_header(source.data, max_pixels=max_pixels)
    return CheckedRequest(checked, weights, selection)


def prepare(spec: DreamSpec, store: ArtifactStore, *, max_pixels: int,
            request: CheckedRequest | None = None) -> PreparedJob:
    """Check ``spec`` (unless ``request`` is its :func:`check_request` already) and decode its
    images (blocking: run it off the event loop). Everything the dream would refuse is refused
    here, before the job takes a place in the queue."""
    checked, weights, selection = request or check_request(spec, max_pixels=max_pixels)
    # From here on the job names layers as the engine does (aliases resolved).
    spec = dataclasses.replace(spec, config=checked.config, selection=selection)
    data = _read(spec.image, store)
    with field_errors(spec.image.field):
        image = load_image(data, max_pixels=max_pixels)
        check_dream_size(checked, tuple(image.shape[-2:]), max_pixels)
    if spec.selection is not None and not spec.selection.images:
        with field_errors("selection.images is empty, so the image is ranked"):
            check_image_side(checked.spec, image)
    return PreparedJob(
        spec=spec, image=image, input_data=data, input_uri=spec.image.uri,
        guides=[_decode(g, store, max_pixels, checked, GUIDE_MAX_SIDE) for g in spec.guides],
        guide_sources=_guide_sources(spec), guide_weights=weights,
        selection_images=[_decode(s, store, max_pixels, checked)
                          for s in (spec.selection.images if spec.selection else ())],
        guide_masks=[_decode_mask(m, store, max_pixels, image) for m in spec.guide_masks],
    )
