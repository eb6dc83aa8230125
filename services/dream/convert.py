"""proto <-> library conversions of the dream service (no logic beyond that).

The DreamConfig and maplist conversions are the shared ones (:mod:`dreamsuite.wire.convert`);
the engine's one validation runs in :func:`services.dream.jobs.prepare`.
"""

from __future__ import annotations

import math

from dreamsuite.backbones import BackboneSpec
from dreamsuite.engine.config import MAX_MAPLIST_CHANNELS, MAX_MAPLIST_TERMS, check_count
from dreamsuite.errors import InvalidArgument, shorten
from dreamsuite.v1 import common_pb2, dream_pb2
from dreamsuite.wire.convert import artifact_message, config_from_request, enum_value
from services.dream.jobs import DreamSpec, ImageInput, OutputSpec, SelectionSpec
from services.dream.outputs import OctaveOutput, StoredImage

__all__ = ["spec_from_request", "update_from_output", "backbones_response"]

_PREVIEWS = {dream_pb2.PREVIEW_FORMAT_JPEG: "jpeg", dream_pb2.PREVIEW_FORMAT_PNG: "png",
             dream_pb2.PREVIEW_FORMAT_NONE: "none"}


def _image(ref: common_pb2.ImageRef, field: str) -> ImageInput:
    return ImageInput(field=field, data=ref.data, uri=ref.uri)


def _guide_weights(guidance: dream_pb2.Guidance) -> dict[str, list[float]] | None:
    if not guidance.guide_weights:
        return None
    check_count(len(guidance.guide_weights), "guidance.guide_weights", MAX_MAPLIST_TERMS,
                "entries")
    out = {}
    for i, entry in enumerate(guidance.guide_weights):
        where = f"guidance.guide_weights[{i}]"
        if entry.layer in out:
            raise InvalidArgument(f"{where}: layer {shorten(entry.layer)!r} repeats")
        # Counted before they are copied: a message may carry millions of them.
        check_count(len(entry.weights), f"{where}.weights", MAX_MAPLIST_CHANNELS, "weights")
        out[entry.layer] = list(entry.weights)
    return out


def _guide_masks(request: dream_pb2.DreamRequest) -> tuple[ImageInput | None, ...]:
    """The mask of each guide region (None where a region sets none); () without masks."""
    masks = tuple(_image(r.mask, f"guide_regions[{i}].mask")
                  if r.HasField("mask") and (r.mask.data or r.mask.uri) else None
                  for i, r in enumerate(request.guide_regions))
    return masks if any(m is not None for m in masks) else ()


def _selection(request: dream_pb2.DreamRequest) -> SelectionSpec | None:
    if not request.HasField("selection"):
        return None
    s = request.selection
    images = tuple(_image(ref, f"selection.images[{i}]") for i, ref in enumerate(s.images))
    return SelectionSpec(tuple(s.layers), s.top_k, s.bottom_k, images)


def _output(options: dream_pb2.OutputOptions) -> OutputSpec:
    defaults = OutputSpec()
    return OutputSpec(
        preview_format=enum_value(options.preview_format, _PREVIEWS, "jpeg",
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
        config=config_from_request(request),
        guides=guides,
        guide_weights=_guide_weights(request.guidance),
        guide_masks=_guide_masks(request),
        selection=_selection(request),
        output=_output(request.output),
        model=request.model,
        condition=request.condition,
    )


def _artifact(stored: StoredImage | None) -> common_pb2.Artifact | None:
    if stored is None:
        return None
    return artifact_message(stored.artifact, stored.presigned_url)


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
            layers=[common_pb2.LayerInfo(name=i.name, channels=i.channels, aliases=i.aliases)
                    for i in spec.layers],
        )
        for spec, status in backbones
    ])
