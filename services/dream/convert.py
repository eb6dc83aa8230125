"""proto <-> library conversions of the dream service (no logic beyond that).

Unset optional fields take the engine's defaults; numbers are checked where they are used
(:mod:`services.dream.jobs`), so messages name the request field.
"""

from __future__ import annotations

import math

from dreamsuite.backbones import BackboneSpec
from dreamsuite.dream import DreamConfig
from dreamsuite.errors import InvalidArgument
from dreamsuite.objectives import LayerTerm, Maplist
from dreamsuite.v1 import common_pb2, dream_pb2
from services.dream.jobs import DreamSpec, ImageInput, OutputSpec, SelectionSpec
from services.dream.outputs import OctaveOutput, StoredImage

__all__ = ["spec_from_request", "update_from_output", "backbones_response"]

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
)
_WEIGHTS = {common_pb2.WEIGHTS_PRETRAINED: "pretrained", common_pb2.WEIGHTS_RANDOM: "random"}
_GUIDE_MODES = {dream_pb2.GUIDE_MODE_WEIGHTS: "weights", dream_pb2.GUIDE_MODE_MATCH: "match"}
_PREVIEWS = {dream_pb2.PREVIEW_FORMAT_JPEG: "jpeg", dream_pb2.PREVIEW_FORMAT_PNG: "png",
             dream_pb2.PREVIEW_FORMAT_NONE: "none"}


def _image(ref: common_pb2.ImageRef, field: str) -> ImageInput:
    return ImageInput(field=field, data=ref.data, uri=ref.uri)


def _maplist(message: common_pb2.Maplist) -> Maplist | None:
    terms = []
    for i, term in enumerate(message.layers):
        if not term.layer:
            raise InvalidArgument(f"maplist.layers[{i}].layer is empty")
        channels = {c.channel: c.weight for c in term.channels} or None
        weight = term.weight if term.HasField("weight") else 1.0
        terms.append(LayerTerm(term.layer, weight, channels))
    return Maplist(tuple(terms)) if terms else None


def _enum(value: int, known: dict[int, str], default: str, field: str) -> str:
    if value == 0 or value in known:
        return known.get(value, default)
    raise InvalidArgument(f"{field}: unknown value {value}")


def _config(request: dream_pb2.DreamRequest) -> DreamConfig:
    values: dict = {}
    for parent, name, target in _CONFIG_FIELDS:
        message = getattr(request, parent) if parent else request
        if message.HasField(name):
            values[target] = getattr(message, name)
    if request.backbone:
        values["backbone"] = request.backbone
    values["weights"] = _enum(request.weights, _WEIGHTS, "pretrained", "weights")
    values["guide_mode"] = _enum(request.guidance.mode, _GUIDE_MODES, "weights",
                                 "guidance.mode")
    values["maplist"] = _maplist(request.maplist)
    return DreamConfig(**values)


def _guide_weights(guidance: dream_pb2.Guidance) -> dict[str, list[float]] | None:
    if not guidance.guide_weights:
        return None
    out = {}
    for i, entry in enumerate(guidance.guide_weights):
        if entry.layer in out:
            raise InvalidArgument(f"guidance.guide_weights[{i}]: layer {entry.layer!r} repeats")
        out[entry.layer] = list(entry.weights)
    return out


def _selection(request: dream_pb2.DreamRequest) -> SelectionSpec | None:
    if not request.HasField("selection"):
        return None
    s = request.selection
    images = tuple(_image(ref, f"selection.images[{i}]") for i, ref in enumerate(s.images))
    return SelectionSpec(tuple(s.layers), s.top_k, s.bottom_k, images)


def _output(options: dream_pb2.OutputOptions) -> OutputSpec:
    defaults = OutputSpec()
    return OutputSpec(
        preview_format=_enum(options.preview_format, _PREVIEWS, "jpeg",
                             "output.preview_format"),
        preview_max_side=options.preview_max_side or defaults.preview_max_side,
        preview_max_bytes=options.preview_max_bytes or defaults.preview_max_bytes,
        store_octaves=options.store_octaves,
        inline_images=options.inline_images,
    )


def spec_from_request(request: dream_pb2.DreamRequest) -> DreamSpec:
    """The library form of a ``DreamRequest``."""
    guides = tuple(_image(ref, f"guidance.guides[{i}]")
                   for i, ref in enumerate(request.guidance.guides))
    return DreamSpec(
        image=_image(request.image, "image") if request.HasField("image") else None,
        config=_config(request),
        guides=guides,
        guide_weights=_guide_weights(request.guidance),
        selection=_selection(request),
        output=_output(request.output),
    )


def _artifact(stored: StoredImage | None) -> common_pb2.Artifact | None:
    if stored is None:
        return None
    a = stored.artifact
    return common_pb2.Artifact(uri=a.uri, presigned_url=stored.presigned_url, sha256=a.sha256,
                               size_bytes=a.size, content_type=a.content_type)


def update_from_output(out: OctaveOutput) -> dream_pb2.DreamUpdate:
    """The ``DreamUpdate`` of one octave (with the result on the last one)."""
    update = dream_pb2.DreamUpdate(
        octave=out.octave, octaves=out.octaves, height=out.size[0], width=out.size[1],
        loss=out.loss if math.isfinite(out.loss) else 0.0, elapsed_seconds=out.elapsed,
        preview=out.preview, preview_content_type=out.preview_type,
        octave_artifact=_artifact(out.stored), image=out.png,
    )
    if out.result is not None:
        r = out.result
        update.result.CopyFrom(dream_pb2.DreamResult(
            artifact=_artifact(r.stored), height=r.size[0], width=r.size[1],
            provenance_json=r.provenance_json, octave_losses=r.losses, warnings=r.warnings,
            image=r.png, input_artifact=_artifact(r.input),
        ))
    return update


def backbones_response(
    backbones: list[tuple[BackboneSpec, str]],
) -> dream_pb2.ListBackbonesResponse:
    """``ListBackbones``' answer from specs and their weight status."""
    return dream_pb2.ListBackbonesResponse(backbones=[
        common_pb2.BackboneInfo(
            name=spec.name, description=spec.description, default_layer=spec.default_layer,
            min_size=spec.min_size, weights_status=status,
            layers=[common_pb2.LayerInfo(name=i.name, channels=i.channels) for i in spec.layers],
        )
        for spec, status in backbones
    ])
