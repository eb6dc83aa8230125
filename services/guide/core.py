"""The guide service's data plane: guide weights, neuron selection and statistics from an
activation backend, through a cache. Knows nothing of gRPC (the servicer converts).

The arithmetic is the engine's (:mod:`dreamsuite.engine.guide`) on the same per-map means, so
the service returns what ``guide_weights`` and ``select_neurons`` return in-process.
Identical requests in flight at the same time share one backend call (single flight).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from dreamsuite.activations.backend import layer_stats
from dreamsuite.activations.base import ActivationBackend
from dreamsuite.activations.compute import LayerStats
from dreamsuite.backbones import get_backbone_spec
from dreamsuite.defaults import DEFAULT_BACKBONE
from dreamsuite.engine.config import (
    MAX_GUIDES,
    canonical_layer_keys,
    check_count,
    check_layer_names,
    check_name,
    check_weight,
    field_errors,
)
from dreamsuite.engine.guide import (
    GUIDE_MAX_SIDE,
    Selection,
    check_selection,
    combine_guide_means,
    guided_maplist,
    selection_from_means,
)
from dreamsuite.engine.objectives import Maplist
from dreamsuite.errors import InvalidArgument
from services.guide.cache import StatsCache, StatsKey
from services.guide.metrics import GuideMetrics

__all__ = ["GuideCore", "GuideWeights", "Selected", "Stats"]

_Flight = tuple[str, str, int, tuple[str, ...]]


@dataclass(frozen=True)
class GuideWeights:
    """Guide weights ``{layer: [C]}`` of some guides, and the guided maplist they make."""

    backbone: str
    weights: dict[str, torch.Tensor]
    maplist: Maplist
    backend_version: str


@dataclass(frozen=True)
class Selected:
    """A neuron selection over ``images`` images."""

    backbone: str
    selection: Selection
    images: int
    backend_version: str


@dataclass(frozen=True)
class Stats:
    """Per-layer statistics of one image."""

    backbone: str
    layers: dict[str, LayerStats]
    backend_version: str


class GuideCore:
    """Statistics through a cache in front of ``backend``; ``concurrency`` bounds the backend
    calls in flight (enough for TorchServe to batch, few enough not to flood it)."""

    def __init__(self, backend: ActivationBackend, metrics: GuideMetrics, *,
                 cache: StatsCache | None = None, concurrency: int = 8, max_images: int = 1024):
        self.backend = backend
        self.metrics = metrics
        self.cache = cache if cache is not None else StatsCache()
        self.max_images = max_images
        self._slots = asyncio.Semaphore(concurrency)
        self._flights: dict[_Flight, asyncio.Future[dict[str, LayerStats]]] = {}
        # Backend version per backbone, learned from its answers: part of every cache key.
        self._versions: dict[str, str] = {}

    def version(self, backbone: str) -> str:
        return self._versions.get(backbone, "")

    @staticmethod
    def check(backbone: str, layers: Sequence[str]) -> tuple[str, list[str]]:
        """The backbone name (default filled in) and layers without repeats by their friendly
        names (aliases resolved), checked against the registry
        (:func:`~dreamsuite.engine.config.check_layer_names`)."""
        check_name(backbone, "backbone")
        with field_errors("backbone"):
            spec = get_backbone_spec(backbone or DEFAULT_BACKBONE)
        return spec.name, check_layer_names(spec, layers)

    async def _compute(self, image: bytes, backbone: str, layers: list[str],
                       max_side: int) -> dict[str, LayerStats]:
        async with self._slots:
            computed, version = await layer_stats(
                self.backend, image, backbone, layers, max_side=max_side,
                on_response=self.metrics.observe_response)
        self._versions[backbone] = version
        return computed

    async def _single_flight(self, digest: str, image: bytes, backbone: str,
                             layers: list[str], max_side: int) -> dict[str, LayerStats]:
        key = (digest, backbone, max_side, tuple(layers))
        while (flight := self._flights.get(key)) is not None:
            # The same statistics are on their way: wait for them instead of asking again.
            try:
                result = await asyncio.shield(flight)
            except asyncio.CancelledError:
                if flight.cancelled():  # the call that asked was cancelled, not this one
                    continue
                raise
            self.metrics.cache_hits.labels(backbone).inc(len(layers))
            return result
        self.metrics.cache_misses.labels(backbone).inc(len(layers))
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            computed = await self._compute(image, backbone, layers, max_side)
        except asyncio.CancelledError:
            flight.cancel()
            raise
        except Exception as exc:
            flight.set_exception(exc)
            flight.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            del self._flights[key]
        for layer, stats in computed.items():
            self.cache.put(StatsKey(digest, backbone, layer, max_side, self.version(backbone)),
                           stats)
        flight.set_result(computed)
        return computed

    async def stats(self, image: bytes, backbone: str, layers: Sequence[str], *,
                    max_side: int = 0, field: str = "image") -> dict[str, LayerStats]:
        """``{layer: LayerStats}`` of one encoded image (cached per layer); errors about the
        image name ``field``."""
        if not image:
            raise InvalidArgument(f"{field}: no bytes were given")
        if max_side < 0:
            raise InvalidArgument("max_side must be >= 0 (0: the image as it is)")
        with field_errors(field):
            return await self._stats(image, backbone, layers, max_side)

    async def _stats(self, image: bytes, backbone: str, layers: Sequence[str],
                     max_side: int) -> dict[str, LayerStats]:
        digest = hashlib.sha256(image).hexdigest()
        found: dict[str, LayerStats] = {}
        for layer in dict.fromkeys(layers):
            hit = self.cache.get(StatsKey(digest, backbone, layer, max_side,
                                          self.version(backbone)))
            if hit is not None:
                found[layer] = hit
        missing = [layer for layer in dict.fromkeys(layers) if layer not in found]
        self.metrics.cache_hits.labels(backbone).inc(len(found))
        if missing:
            found.update(await self._single_flight(digest, image, backbone, missing, max_side))
        return {layer: found[layer] for layer in layers}

    async def image_stats(self, image: bytes, backbone: str, layers: Sequence[str], *,
                          max_side: int = 0) -> Stats:
        """:meth:`stats` with the backbone and layers checked first."""
        backbone, layers = self.check(backbone, layers)
        stats = await self.stats(image, backbone, layers, max_side=max_side)
        return Stats(backbone, stats, self.version(backbone))

    async def guide_weights(self, guides: Sequence[bytes], backbone: str,
                            layer_weights: Mapping[str, float]) -> GuideWeights:
        """Normalised per-map weights ``{layer: [C]}`` of ``guides`` (encoded images), and the
        guided maplist that weights each layer by ``layer_weights``; layers by their friendly
        names (aliases resolved)."""
        if not guides:
            raise InvalidArgument("guides: at least one guide image is needed")
        check_count(len(guides), "guides", MAX_GUIDES, "guide images")
        for i, weight in enumerate(layer_weights.values()):
            check_weight(weight, f"layers[{i}].weight")
        backbone, layers = self.check(backbone, list(layer_weights))
        layer_weights = canonical_layer_keys(get_backbone_spec(backbone), layer_weights,
                                             "layers")
        per_guide = await asyncio.gather(*(
            self.stats(g, backbone, layers, max_side=GUIDE_MAX_SIDE, field=f"guides[{i}]")
            for i, g in enumerate(guides)))
        weights = combine_guide_means([{k: v.mean for k, v in s.items()} for s in per_guide],
                                      layers)
        return GuideWeights(backbone, weights, guided_maplist(weights, layer_weights),
                            self.version(backbone))

    async def select(self, images: Sequence[bytes], backbone: str, layers: Sequence[str], *,
                     top_k: int, bottom_k: int) -> Selected:
        """Lucid-style selection over ``images`` (encoded), as ``select_neurons`` does it."""
        if not images:
            raise InvalidArgument("images: neuron selection needs at least one image")
        check_count(len(images), "images", self.max_images, "images")
        backbone, layers = self.check(backbone, layers)
        check_selection(get_backbone_spec(backbone), layers, top_k=top_k, bottom_k=bottom_k)
        per_image = await asyncio.gather(*(self.stats(image, backbone, layers,
                                                      field=f"images[{i}]")
                                           for i, image in enumerate(images)))
        means = [{k: v.mean for k, v in s.items()} for s in per_image]
        selection = selection_from_means(means, layers, top_k=top_k, bottom_k=bottom_k)
        return Selected(backbone, selection, len(images), self.version(backbone))
