"""What a dream request asks for, in library terms, and its checked, decoded form.

:class:`DreamSpec` is the transport-free request (the servicer builds it from the proto);
:func:`prepare` checks every name and number against the backbone registry and decodes the
images, so a bad request fails before it takes a place in the device queue. Every
:class:`InvalidArgument` message starts with the request field it is about.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from dreamsuite.artifacts import ArtifactStore
from dreamsuite.backbones import BackboneSpec, get_backbone_spec
from dreamsuite.dream import DreamConfig
from dreamsuite.errors import InvalidArgument, NotFound
from dreamsuite.images import load_image

__all__ = ["ImageInput", "SelectionSpec", "OutputSpec", "DreamSpec", "PreparedJob", "prepare",
           "field_errors", "PREVIEW_FORMATS"]

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
    selection: SelectionSpec | None = None
    output: OutputSpec = OutputSpec()


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

    @property
    def config(self) -> DreamConfig:
        return self.spec.config


@contextlib.contextmanager
def field_errors(name: str) -> Iterator[None]:
    """Prefix :class:`InvalidArgument` (and artifact :class:`NotFound`) messages with ``name``."""
    try:
        yield
    except InvalidArgument as exc:
        raise type(exc)(f"{name}: {exc}") from None
    except NotFound as exc:
        raise NotFound(f"{name}: {exc}") from None


def _check_finite(value: float, name: str) -> None:
    if not math.isfinite(value):
        raise InvalidArgument(f"{name} must be a finite number, not {value}")


def _check_config(config: DreamConfig) -> BackboneSpec:
    config.validate()  # its messages start with the field name
    with field_errors("backbone"):
        spec = get_backbone_spec(config.backbone)
    for i, term in enumerate(config.maplist.terms if config.maplist else ()):
        where = f"maplist.layers[{i}]"
        _check_finite(term.weight, f"{where}.weight")
        with field_errors(where):
            spec.layer(term.layer)
            if term.channels is not None:
                spec.check_channels(term.layer, list(term.channels))
        for channel, weight in (term.channels or {}).items():
            _check_finite(weight, f"{where}.channels[{channel}].weight")
    return spec


def _check_guidance(spec: DreamSpec, backbone: BackboneSpec) -> dict[str, torch.Tensor] | None:
    if spec.guide_weights is None:
        return None
    if spec.guides:
        raise InvalidArgument("guidance: give guides or guide_weights, not both")
    if spec.config.guide_mode != "weights":
        raise InvalidArgument("guidance.guide_weights needs GUIDE_MODE_WEIGHTS")
    out = {}
    for i, (layer, weights) in enumerate(spec.guide_weights.items()):
        where = f"guidance.guide_weights[{i}]"
        with field_errors(where):
            channels = backbone.layer(layer).channels
        if len(weights) != channels:
            raise InvalidArgument(f"{where}: layer {layer!r} has {channels} maps, "
                                  f"got {len(weights)} weights")
        tensor = torch.tensor(weights, dtype=torch.float32)
        if not torch.isfinite(tensor).all():
            raise InvalidArgument(f"{where}.weights must be finite numbers")
        out[layer] = tensor
    return out


def _check_selection(selection: SelectionSpec, backbone: BackboneSpec) -> None:
    if not selection.layers:
        raise InvalidArgument("selection.layers: give at least one layer")
    if selection.top_k < 0 or selection.bottom_k < 0 or selection.top_k + selection.bottom_k == 0:
        raise InvalidArgument("selection: top_k and bottom_k must be >= 0 and not both zero")
    for layer in selection.layers:
        with field_errors("selection.layers"):
            channels = backbone.layer(layer).channels
        if selection.top_k + selection.bottom_k > channels:
            raise InvalidArgument(f"selection: layer {layer!r} has {channels} maps, fewer than "
                                  f"top_k + bottom_k = {selection.top_k + selection.bottom_k}")


def _read(source: ImageInput, store: ArtifactStore) -> bytes:
    with field_errors(source.field):
        if source.data:
            return source.data
        if source.uri:
            return store.get(source.uri)
        raise InvalidArgument("is empty: give data (encoded image bytes) or uri (an artifact)")


def _decode(source: ImageInput, store: ArtifactStore, max_pixels: int) -> torch.Tensor:
    data = _read(source, store)
    with field_errors(source.field):
        return load_image(data, max_pixels=max_pixels)


def _guide_sources(spec: DreamSpec) -> list[tuple[bytes, str]]:
    return [(g.data, g.uri) for g in spec.guides]


def prepare(spec: DreamSpec, store: ArtifactStore, *, max_pixels: int) -> PreparedJob:
    """Check ``spec`` and decode its images (blocking: run it off the event loop)."""
    if spec.image is None:
        raise InvalidArgument("image: required; give image.data (encoded bytes) or image.uri")
    if spec.output.preview_format not in PREVIEW_FORMATS:
        raise InvalidArgument(f"output.preview_format must be one of {PREVIEW_FORMATS}")
    if spec.output.preview_max_side < 8 or spec.output.preview_max_bytes < 1024:
        raise InvalidArgument("output: preview_max_side must be >= 8, preview_max_bytes >= 1024")
    backbone = _check_config(spec.config)
    weights = _check_guidance(spec, backbone)
    if spec.selection is not None:
        _check_selection(spec.selection, backbone)
    data = _read(spec.image, store)
    with field_errors(spec.image.field):
        image = load_image(data, max_pixels=max_pixels)
    return PreparedJob(
        spec=spec, image=image, input_data=data, input_uri=spec.image.uri,
        guides=[_decode(g, store, max_pixels) for g in spec.guides],
        guide_sources=_guide_sources(spec), guide_weights=weights,
        selection_images=[_decode(s, store, max_pixels)
                          for s in (spec.selection.images if spec.selection else ())],
    )
