"""``GuideService``: converts requests to :class:`GuideCore` calls and results to responses."""

from __future__ import annotations

import math

import grpc

from dreamsuite.errors import InvalidArgument
from dreamsuite.guide import guided_maplist
from dreamsuite.objectives import Maplist
from dreamsuite.v1 import activations_pb2, common_pb2, guide_pb2, guide_pb2_grpc
from services.guide.core import GuideCore
from services.guide.sources import ImageSources

__all__ = ["GuideServicer", "maplist_to_proto"]


def maplist_to_proto(maplist: Maplist) -> common_pb2.Maplist:
    """A library maplist as the wire message."""
    out = common_pb2.Maplist()
    for term in maplist.terms:
        entry = out.layers.add(layer=term.layer, weight=term.weight)
        for channel, weight in (term.channels or {}).items():
            entry.channels.add(channel=channel, weight=weight)
    return out


def _layer_weight(index: int, layer: guide_pb2.GuideLayer) -> float:
    if not layer.HasField("weight"):
        return 1.0
    if not math.isfinite(layer.weight):
        raise InvalidArgument(f"layers[{index}].weight must be a finite number")
    return layer.weight


class GuideServicer(guide_pb2_grpc.GuideServiceServicer):
    def __init__(self, core: GuideCore, sources: ImageSources):
        self.core = core
        self.sources = sources

    async def ComputeGuideWeights(
        self, request: guide_pb2.GuideWeightsRequest, context: grpc.aio.ServicerContext
    ) -> guide_pb2.GuideWeightsResponse:
        guides = await self.sources.read_all("guides", [(g.data, g.uri) for g in request.guides])
        names = [layer.name for layer in request.layers]
        layer_weights = {layer.name: _layer_weight(i, layer)
                         for i, layer in enumerate(request.layers)}
        weights = await self.core.guide_weights(guides, request.backbone, names)
        backbone, _ = self.core.check(request.backbone, names)
        response = guide_pb2.GuideWeightsResponse(
            backbone=backbone, backend_version=self.core.version(backbone),
            maplist=maplist_to_proto(guided_maplist(weights, layer_weights)),
        )
        for name, values in weights.items():
            response.layers.add(layer=name, weights=values.tolist())
        return response

    async def SelectNeurons(
        self, request: guide_pb2.SelectNeuronsRequest, context: grpc.aio.ServicerContext
    ) -> guide_pb2.SelectNeuronsResponse:
        images = await self.sources.read_all("images", [(i.data, i.uri) for i in request.images])
        if request.prefix:
            images += await self.sources.under_prefix(request.prefix,
                                                      self.core.max_images - len(images))
        selection = await self.core.select(images, request.backbone, list(request.layers),
                                           top_k=request.top_k, bottom_k=request.bottom_k)
        backbone, _ = self.core.check(request.backbone, list(request.layers))
        response = guide_pb2.SelectNeuronsResponse(
            backbone=backbone, images=len(images), backend_version=self.core.version(backbone),
            maplist=maplist_to_proto(selection.maplist()),
        )
        for layer, means in selection.means.items():
            response.layers.add(layer=layer, top=selection.top[layer],
                                bottom=selection.bottom[layer], means=means.tolist())
        return response

    async def Activations(
        self, request: guide_pb2.GuideActivationsRequest, context: grpc.aio.ServicerContext
    ) -> guide_pb2.GuideActivationsResponse:
        image = await self.sources.read("image", request.image.data, request.image.uri)
        backbone, layers = self.core.check(request.backbone, list(request.layers))
        stats = await self.core.stats(image, backbone, layers, max_side=request.max_side)
        response = guide_pb2.GuideActivationsResponse(
            backbone=backbone, backend_version=self.core.version(backbone))
        for layer, s in stats.items():
            response.layers.append(activations_pb2.LayerActivations(
                layer=layer, channels=s.mean.numel(), height=s.height, width=s.width,
                sum=s.sum.tolist(), mean=s.mean.tolist(), max=s.max.tolist()))
        return response
