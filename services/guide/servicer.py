"""``GuideService``: converts requests to :class:`GuideCore` calls and results to responses,
nothing else."""

from __future__ import annotations

import grpc

from dreamsuite.engine.config import MAX_GUIDES, MAX_LAYERS, check_count
from dreamsuite.errors import InvalidArgument, shorten
from dreamsuite.v1 import activations_pb2, guide_pb2, guide_pb2_grpc
from dreamsuite.wire.convert import maplist_to_proto
from services.guide.core import GuideCore
from services.guide.sources import ImageSources

__all__ = ["GuideServicer"]


def _layer_weights(layers) -> dict[str, float]:
    """``{name: weight}`` of the request's layers (unset weight: 1); a name may not repeat."""
    check_count(len(layers), "layers", MAX_LAYERS, "layers")
    out: dict[str, float] = {}
    for i, layer in enumerate(layers):
        if layer.name in out:
            raise InvalidArgument(f"layers[{i}].name: {shorten(layer.name)!r} repeats")
        out[layer.name] = layer.weight if layer.HasField("weight") else 1.0
    return out


class GuideServicer(guide_pb2_grpc.GuideServiceServicer):
    def __init__(self, core: GuideCore, sources: ImageSources):
        self.core = core
        self.sources = sources

    async def ComputeGuideWeights(
        self, request: guide_pb2.GuideWeightsRequest, context: grpc.aio.ServicerContext
    ) -> guide_pb2.GuideWeightsResponse:
        guides = await self.sources.read_all("guides", [(g.data, g.uri) for g in request.guides],
                                             limit=MAX_GUIDES)
        result = await self.core.guide_weights(guides, request.backbone,
                                               _layer_weights(request.layers))
        response = guide_pb2.GuideWeightsResponse(
            backbone=result.backbone, backend_version=result.backend_version,
            maplist=maplist_to_proto(result.maplist))
        for name, values in result.weights.items():
            response.layers.add(layer=name, weights=values.tolist())
        return response

    async def SelectNeurons(
        self, request: guide_pb2.SelectNeuronsRequest, context: grpc.aio.ServicerContext
    ) -> guide_pb2.SelectNeuronsResponse:
        images = await self.sources.read_all("images", [(i.data, i.uri) for i in request.images],
                                             limit=self.core.max_images)
        if request.prefix:
            images += await self.sources.under_prefix(request.prefix,
                                                      self.core.max_images - len(images))
        result = await self.core.select(images, request.backbone, list(request.layers),
                                        top_k=request.top_k, bottom_k=request.bottom_k)
        selection = result.selection
        response = guide_pb2.SelectNeuronsResponse(
            backbone=result.backbone, images=result.images,
            backend_version=result.backend_version, maplist=maplist_to_proto(selection.maplist()))
        for layer, means in selection.means.items():
            response.layers.add(layer=layer, top=selection.top[layer],
                                bottom=selection.bottom[layer], means=means.tolist())
        return response

    async def Activations(
        self, request: guide_pb2.GuideActivationsRequest, context: grpc.aio.ServicerContext
    ) -> guide_pb2.GuideActivationsResponse:
        image = await self.sources.read("image", request.image.data, request.image.uri)
        result = await self.core.image_stats(image, request.backbone, list(request.layers),
                                             max_side=request.max_side)
        response = guide_pb2.GuideActivationsResponse(
            backbone=result.backbone, backend_version=result.backend_version)
        for layer, s in result.layers.items():
            response.layers.append(activations_pb2.LayerActivations(
                layer=layer, channels=s.mean.numel(), height=s.height, width=s.width,
                sum=s.sum.tolist(), mean=s.mean.tolist(), max=s.max.tolist()))
        return response
