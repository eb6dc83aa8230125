"""``StyleService`` on the dream service: reconstructions and style transfers as device tasks
(same queue, turns, deadlines, cancellation, metrics and artifact store as dreams).

The servicer converts requests to :mod:`dreamsuite.engine.style` calls and results to messages;
the images are decoded and checked before the task takes a place in the queue.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from collections.abc import AsyncIterator

import grpc
import torch

import dreamsuite
from dreamsuite.artifacts import ArtifactStore
from dreamsuite.engine.provenance import provenance_text, sha256_of
from dreamsuite.engine.style import (
    ReconstructConfig,
    StyleConfig,
    StyleProgress,
    check_reconstruct,
    check_stylize,
    reconstruct,
    stylize,
)
from dreamsuite.errors import InvalidArgument
from dreamsuite.images import encode_png, encode_preview, load_image
from dreamsuite.v1 import common_pb2, style_pb2, style_pb2_grpc
from dreamsuite.wire.convert import enum_value
from services.dream.runner import DreamRunner, Task
from services.dream.servicer import caller_of

__all__ = ["StyleServicer", "SERVICE_NAME"]

SERVICE_NAME = style_pb2.DESCRIPTOR.services_by_name["StyleService"].full_name

MAX_STYLES = 8
MAX_LAYERS = 32
_WEIGHTS = {common_pb2.WEIGHTS_UNSPECIFIED: "pretrained", common_pb2.WEIGHTS_PRETRAINED:
            "pretrained", common_pb2.WEIGHTS_RANDOM: "random"}
_TRANSFORMS = {style_pb2.FEATURE_TRANSFORM_GRAM: "gram",
               style_pb2.FEATURE_TRANSFORM_SOFTMAX: "softmax",
               style_pb2.FEATURE_TRANSFORM_PYRAMID: "pyramid"}
_OPTIMIZERS = {style_pb2.STYLE_OPTIMIZER_UNSPECIFIED: "lbfgs",
               style_pb2.STYLE_OPTIMIZER_LBFGS: "lbfgs", style_pb2.STYLE_OPTIMIZER_ADAM: "adam"}
_INITS = {style_pb2.STYLE_INIT_UNSPECIFIED: "content", style_pb2.STYLE_INIT_CONTENT: "content",
          style_pb2.STYLE_INIT_STYLE: "style", style_pb2.STYLE_INIT_NOISE: "noise"}
_MODES = {style_pb2.RECONSTRUCT_MODE_UNSPECIFIED: "content",
          style_pb2.RECONSTRUCT_MODE_CONTENT: "content",
          style_pb2.RECONSTRUCT_MODE_STYLE: "style"}


def _finite(value: float, field: str) -> float:
    if not math.isfinite(value):
        raise InvalidArgument(f"{field} must be a finite number")
    return value


def _decode(ref: common_pb2.ImageRef, field: str, store: ArtifactStore,
            max_pixels: int) -> torch.Tensor:
    if ref.data:
        data = ref.data
    elif ref.uri:
        data = store.get(ref.uri)
    else:
        raise InvalidArgument(f"{field}: required; give data (encoded bytes) or uri")
    try:
        return load_image(data, max_pixels=max_pixels)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{field}: {exc}") from None


def stylize_config(request: style_pb2.StylizeRequest) -> StyleConfig:
    """The library config of a ``StylizeRequest`` (defaults for unset fields)."""
    base = StyleConfig()
    layers = None
    if request.style_layers:
        if len(request.style_layers) > MAX_LAYERS:
            raise InvalidArgument(f"style_layers: at most {MAX_LAYERS}")
        layers = {entry.layer: _finite(entry.weight or 1.0, f"style_layers[{i}].weight")
                  for i, entry in enumerate(request.style_layers)}
    transform = enum_value(request.transform, _TRANSFORMS, base.transform, "transform")
    return dataclasses.replace(
        base,
        backbone=request.backbone or base.backbone,
        weights=enum_value(request.weights, _WEIGHTS, "pretrained", "weights"),
        style_layers=layers,
        content_layer=request.content_layer or None,
        content_weight=_finite(request.content_weight, "content_weight")
        if request.HasField("content_weight") else base.content_weight,
        style_weight=_finite(request.style_weight, "style_weight")
        if request.HasField("style_weight") else base.style_weight,
        tv_weight=_finite(request.tv_weight, "tv_weight"),
        transform=transform,
        temperature=_finite(request.temperature, "temperature")
        if request.HasField("temperature") else base.temperature,
        init=enum_value(request.init, _INITS, base.init, "init"),
        optimizer=enum_value(request.optimizer, _OPTIMIZERS, "lbfgs", "optimizer"),
        iterations=request.iterations or base.iterations,
        learning_rate=_finite(request.learning_rate, "learning_rate") or base.learning_rate,
        scales=request.scales or base.scales,
        style_scale=_finite(request.style_scale, "style_scale") or base.style_scale,
        preserve_color=request.preserve_color,
        tile=request.tile,
        seed=request.seed,
    )


def reconstruct_config(request: style_pb2.ReconstructRequest) -> ReconstructConfig:
    base = ReconstructConfig()
    return dataclasses.replace(
        base,
        backbone=request.backbone or base.backbone,
        weights=enum_value(request.weights, _WEIGHTS, "pretrained", "weights"),
        mode=enum_value(request.mode, _MODES, "content", "mode"),
        iterations=request.iterations or base.iterations,
        optimizer=enum_value(request.optimizer, _OPTIMIZERS, "lbfgs", "optimizer"),
        transform=enum_value(request.transform, _TRANSFORMS, base.transform, "transform"),
        seed=request.seed,
    )


class StyleServicer(style_pb2_grpc.StyleServiceServicer):
    """Streams progress, then the stored images, of reconstructions and style transfers."""

    def __init__(self, runner: DreamRunner):
        self.runner = runner

    async def Reconstruct(self, request: style_pb2.ReconstructRequest,
                          context: grpc.aio.ServicerContext
                          ) -> AsyncIterator[style_pb2.ReconstructResponse]:
        config = reconstruct_config(request)
        layers = list(request.layers)
        if not layers:
            raise InvalidArgument("layers: give at least one layer")
        if len(layers) > MAX_LAYERS:
            raise InvalidArgument(f"layers: at most {MAX_LAYERS}")
        check_reconstruct(config, layers)  # a bad request is refused as such, queue full or not
        self.runner.check_capacity()
        image = await asyncio.to_thread(_decode, request.image, "image", self.runner.store,
                                        self.runner.max_pixels)
        names = ["all"] if request.all_at_once else layers

        def run(device, should_cancel, report):
            return reconstruct(image, layers, config, all_at_once=request.all_at_once,
                               progress=report, should_cancel=should_cancel, device=device)

        provenance = {"dreamsuite": dreamsuite.__version__, "method": "reconstruct",
                      "config": dataclasses.asdict(config), "layers": layers,
                      "all_at_once": request.all_at_once, "input_sha256": sha256_of(image)}
        task = Task(config.backbone, run, kind="reconstruct")
        async for progress, result in self._stream(task, context,
                                                   provenance, names, request.inline_images):
            yield style_pb2.ReconstructResponse(progress=progress, result=result)

    async def Stylize(self, request: style_pb2.StylizeRequest,
                      context: grpc.aio.ServicerContext
                      ) -> AsyncIterator[style_pb2.StylizeResponse]:
        config = stylize_config(request)
        if not request.styles:
            raise InvalidArgument("styles: give at least one style image")
        if len(request.styles) > MAX_STYLES:
            raise InvalidArgument(f"styles: at most {MAX_STYLES}")
        weights = [_finite(s.weight, f"styles[{i}].weight") or 1.0
                   for i, s in enumerate(request.styles)]
        if any(w < 0 for w in weights):
            raise InvalidArgument("styles: weights must be >= 0")
        check_stylize(config)  # a bad request is refused as such, queue full or not
        self.runner.check_capacity()
        store, limit = self.runner.store, self.runner.max_pixels

        def decode_all():
            content = _decode(request.content, "content", store, limit)
            styles = [_decode(s.image, f"styles[{i}].image", store, limit)
                      for i, s in enumerate(request.styles)]
            return content, styles

        content, styles = await asyncio.to_thread(decode_all)

        def run(device, should_cancel, report):
            return {"": stylize(content, list(zip(styles, weights, strict=True)), config,
                                progress=report, should_cancel=should_cancel, device=device)}

        provenance = {"dreamsuite": dreamsuite.__version__, "method": "stylize",
                      "config": {**dataclasses.asdict(config),
                                 "style_layers": config.resolved_style_layers(),
                                 "content_layer": config.resolved_content_layer()},
                      "style_weights": weights, "input_sha256": sha256_of(content),
                      "styles_sha256": [sha256_of(s) for s in styles]}
        task = Task(config.backbone, run, kind="stylize")
        async for progress, result in self._stream(task, context,
                                                   provenance, [""], request.inline_images):
            yield style_pb2.StylizeResponse(progress=progress, result=result)

    async def _stream(self, task: Task, context, provenance: dict, names: list[str],
                      inline: bool):
        """``(progress, None)`` pairs, then ``(None, result)``."""
        remaining = context.time_remaining()
        job = await self.runner.start_task(
            task, caller=caller_of(context),
            deadline=None if remaining is None else time.monotonic() + remaining)
        cancel = job.canceller
        context.add_done_callback(lambda _: cancel())
        started = time.monotonic()
        async for kind, payload in job.events():
            if kind == "progress":
                yield await asyncio.to_thread(_progress, payload, names, started), None
            else:
                yield None, await asyncio.to_thread(self._result, payload, provenance, inline)

    def _result(self, images: dict[str, torch.Tensor], provenance: dict,
                inline: bool) -> style_pb2.StyleResult:
        result = style_pb2.StyleResult(provenance_json=json.dumps(provenance, sort_keys=True))
        for layer, image in images.items():
            png = encode_png(image, provenance_text({**provenance, "layer": layer}))
            artifact = self.runner.store.put(png, content_type="image/png",
                                             metadata={"method": provenance["method"],
                                                       "layer": layer})
            url = self.runner.store.presign(artifact.uri)
            entry = result.images.add(
                layer=layer, width=image.shape[-1], height=image.shape[-2],
                artifact=common_pb2.Artifact(uri=artifact.uri, presigned_url=url,
                                             sha256=artifact.sha256,
                                             size_bytes=artifact.size,
                                             content_type=artifact.content_type))
            if inline and len(png) <= self.runner.publisher.inline_limit:
                entry.image = png
        return result


def _progress(p: StyleProgress, names: list[str], started: float) -> style_pb2.StyleProgress:
    update = style_pb2.StyleProgress(
        scale=p.scale, scales=p.scales, iteration=p.iteration, iterations=p.iterations,
        loss=p.loss if math.isfinite(p.loss) else 0.0, height=p.size[0], width=p.size[1],
        elapsed_seconds=time.monotonic() - started,
        layer=names[p.scale] if len(names) == p.scales and names != [""] else "")
    if p.image is not None:
        update.preview = encode_preview(p.image)
    return update

