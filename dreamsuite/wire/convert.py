"""proto <-> library conversions that clients and services share, one function per direction.

The dream client builds a ``DreamRequest`` from a :class:`DreamConfig` with
:func:`request_from_config`; the dream service reads it back with :func:`config_from_request`.
Unset optional fields take the engine's defaults; every error names the request field.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dreamsuite.engine.config import (
    MAX_GUIDES,
    MAX_LAYERS,
    RANGES,
    DreamConfig,
    check_count,
    check_maplist_size,
)
from dreamsuite.engine.objectives import LayerTerm, Maplist
from dreamsuite.errors import InvalidArgument, shorten
from dreamsuite.v1 import common_pb2, dream_pb2

if TYPE_CHECKING:  # the stores import their S3 client: not on every importer's path
    from dreamsuite.artifacts import Artifact

__all__ = [
    "ARTIFACT_SCHEMES",
    "WEIGHTS",
    "GUIDE_MODES",
    "enum_value",
    "image_ref",
    "artifact_message",
    "maplist_to_proto",
    "maplist_from_proto",
    "request_from_config",
    "config_from_request",
]

#: URI schemes an ``ImageRef.uri`` may use (the service's artifact store).
ARTIFACT_SCHEMES = ("s3://", "file://")
WEIGHTS = {common_pb2.WEIGHTS_PRETRAINED: "pretrained", common_pb2.WEIGHTS_RANDOM: "random"}
GUIDE_MODES = {dream_pb2.GUIDE_MODE_WEIGHTS: "weights", dream_pb2.GUIDE_MODE_MATCH: "match"}

# (sub-message, proto field, DreamConfig field)
_CONFIG_FIELDS = (
    ("schedule", "octaves", "octaves"),
    ("schedule", "octave_scale", "octave_scale"),
    ("schedule", "steps", "steps"),
    ("schedule", "step_size", "step_size"),
    ("regularisers", "jitter", "jitter"),
    ("regularisers", "tv", "tv"),
    ("regularisers", "smooth", "smooth"),
    ("regularisers", "blur_every", "blur_every"),
    ("regularisers", "blur_sigma", "blur_sigma"),
    (None, "tile", "tile"),
    (None, "seed", "seed"),
    (None, "laplacian_levels", "laplacian"),
    (None, "decorrelate", "decorrelate"),
    (None, "fourier_decay", "fourier"),
)


def enum_value(value: int, known: dict[int, str], default: str, field: str) -> str:
    """The library name of a proto enum value (``0``, unspecified: ``default``)."""
    if value == 0 or value in known:
        return known.get(value, default)
    raise InvalidArgument(f"{field}: unknown value {value}")


def image_ref(source: str | bytes | os.PathLike) -> common_pb2.ImageRef:
    """Inline bytes, an artifact URI (``s3://``, ``file://``), or a local file read inline."""
    if isinstance(source, bytes):
        return common_pb2.ImageRef(data=source)
    text = os.fspath(source)
    if text.startswith(ARTIFACT_SCHEMES):
        return common_pb2.ImageRef(uri=text)
    path = Path(text)
    if not path.is_file():
        raise InvalidArgument(f"image {shorten(text)!r} does not exist or is not a file")
    return common_pb2.ImageRef(data=path.read_bytes())


def artifact_message(artifact: Artifact, presigned_url: str) -> common_pb2.Artifact:
    """A stored object as the wire's ``Artifact``, with the URL clients fetch it from."""
    return common_pb2.Artifact(uri=artifact.uri, presigned_url=presigned_url,
                               sha256=artifact.sha256, size_bytes=artifact.size,
                               content_type=artifact.content_type)


def maplist_to_proto(maplist: Maplist) -> common_pb2.Maplist:
    """A library maplist as the wire message."""
    out = common_pb2.Maplist()
    for term in maplist.terms:
        entry = out.layers.add(layer=term.layer, weight=term.weight)
        for channel, weight in (term.channels or {}).items():
            entry.channels.add(channel=channel, weight=weight)
    return out


def maplist_from_proto(message: common_pb2.Maplist, field: str = "maplist") -> Maplist | None:
    """The library maplist of a wire message (None when it has no layers); one too large to
    dream is refused before its entries are converted."""
    check_maplist_size(len(message.layers),
                       lambda: sum(len(term.channels) for term in message.layers))
    terms = []
    for i, term in enumerate(message.layers):
        if not term.layer:
            raise InvalidArgument(f"{field}.layers[{i}].layer is empty")
        channels: dict[int, float] = {}
        for c in term.channels:
            if c.channel in channels:
                raise InvalidArgument(f"{field}.layers[{i}].channels: channel {c.channel} "
                                      "repeats")
            channels[c.channel] = c.weight
        weight = term.weight if term.HasField("weight") else 1.0
        terms.append(LayerTerm(term.layer, weight, channels or None))
    return Maplist(tuple(terms)) if terms else None


def request_from_config(
    config: DreamConfig,
    image: str | bytes | os.PathLike,
    *,
    guides: Sequence[str | bytes | os.PathLike] = (),
    guide_masks: Sequence[str | bytes | os.PathLike | None] = (),
    output: dream_pb2.OutputOptions | None = None,
) -> dream_pb2.DreamRequest:
    """The ``DreamRequest`` for ``config`` (every field set explicitly) and the images;
    ``guide_masks`` (one per guide, None for a guide without one) ride in ``guide_regions``
    with the config's guide octave weights."""
    weights = {name: number for number, name in WEIGHTS.items()}
    modes = {name: number for number, name in GUIDE_MODES.items()}
    return dream_pb2.DreamRequest(
        image=image_ref(image),
        backbone=config.backbone,
        weights=weights.get(config.weights, common_pb2.WEIGHTS_PRETRAINED),
        maplist=maplist_to_proto(config.maplist) if config.maplist else None,
        schedule=dream_pb2.OctaveSchedule(octaves=config.octaves,
                                          octave_scale=config.octave_scale,
                                          steps=config.steps, step_size=config.step_size),
        regularisers=dream_pb2.Regularisers(jitter=config.jitter, tv=config.tv,
                                            smooth=config.smooth, blur_every=config.blur_every,
                                            blur_sigma=config.blur_sigma),
        guidance=dream_pb2.Guidance(guides=[image_ref(g) for g in guides],
                                    mode=modes.get(config.guide_mode, 0)),
        tile=config.tile,
        seed=config.seed,
        output=output,
        laplacian_levels=config.laplacian,
        decorrelate=config.decorrelate,
        fourier_decay=config.fourier,
        guide_regions=_guide_regions(config, guide_masks),
        layer_octave_weights=[common_pb2.LayerWeights(layer=layer, weights=list(w))
                              for layer, w in (config.layer_octave_weights or {}).items()],
    )


def _guide_regions(config: DreamConfig, masks: Sequence[str | bytes | os.PathLike | None],
                   ) -> list[dream_pb2.GuideRegion]:
    count = max(len(masks), len(config.guide_octave_weights))
    regions = []
    for i in range(count):
        mask = masks[i] if i < len(masks) else None
        octave_weights = config.guide_octave_weights[i] if i < len(
            config.guide_octave_weights) else ()
        regions.append(dream_pb2.GuideRegion(
            mask=image_ref(mask) if mask is not None else None,
            octave_weights=list(octave_weights)))
    return regions


def config_from_request(request: dream_pb2.DreamRequest) -> DreamConfig:
    """The :class:`DreamConfig` a ``DreamRequest`` asks for (defaults for unset fields; not yet
    validated: :func:`dreamsuite.engine.check_config` does that)."""
    values: dict = {}
    for parent, name, target in _CONFIG_FIELDS:
        message = getattr(request, parent) if parent else request
        if message.HasField(name):
            values[target] = getattr(message, name)
    if request.backbone:
        values["backbone"] = request.backbone
    values["weights"] = enum_value(request.weights, WEIGHTS, "pretrained", "weights")
    values["guide_mode"] = enum_value(request.guidance.mode, GUIDE_MODES, "weights",
                                      "guidance.mode")
    values["maplist"] = maplist_from_proto(request.maplist)
    values.update(_octave_weights(request))
    return DreamConfig(**values)


def _octave_weights(request: dream_pb2.DreamRequest) -> dict:
    """The config's guide and layer octave weights (counted before they are copied)."""
    values: dict = {}
    check_count(len(request.guide_regions), "guide_regions", MAX_GUIDES, "entries")
    if any(region.octave_weights for region in request.guide_regions):
        values["guide_octave_weights"] = tuple(
            tuple(_counted(region.octave_weights, f"guide_regions[{i}].octave_weights"))
            for i, region in enumerate(request.guide_regions))
    if request.layer_octave_weights:
        check_count(len(request.layer_octave_weights), "layer_octave_weights", MAX_LAYERS,
                    "entries")
        layers: dict[str, tuple[float, ...]] = {}
        for i, entry in enumerate(request.layer_octave_weights):
            where = f"layer_octave_weights[{i}]"
            if entry.layer in layers:
                raise InvalidArgument(f"{where}: layer {shorten(entry.layer)!r} repeats")
            layers[entry.layer] = tuple(_counted(entry.weights, f"{where}.weights"))
        values["layer_octave_weights"] = layers
    return values


def _counted(values: Sequence[float], field: str) -> list[float]:
    # Octave weights are one per octave: a longer list is refused before it is copied.
    check_count(len(values), field, int(RANGES["octaves"][1]), "weights (one per octave)")
    return list(values)
