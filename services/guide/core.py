"""The guide service's data plane: guide weights, neuron selection and statistics from an
activation backend, through a cache. Knows nothing of gRPC (the servicer converts).

The arithmetic is the engine's (:mod:`dreamsuite.guide`) on the same per-map means, so the
service returns what ``guide_weights`` and ``select_neurons`` return in-process.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

import torch

from dreamsuite.activations.backend import ActivationBackend, layer_stats
from dreamsuite.activations.compute import LayerStats
from dreamsuite.backbones import get_backbone_spec
from dreamsuite.errors import InvalidArgument
from dreamsuite.guide import (
    GUIDE_MAX_SIDE,
    Selection,
    combine_guide_means,
    selection_from_means,
)
from services.guide.cache import StatsCache, StatsKey
from services.guide.metrics import GuideMetrics

__all__ = ["GuideCore", "DEFAULT_BACKBONE"]

DEFAULT_BACKBONE = "efficientnet_lite0"


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
        # Backend version per backbone, learned from its answers: part of every cache key.
        self._versions: dict[str, str] = {}

    def version(self, backbone: str) -> str:
        return self._versions.get(backbone, "")

    @staticmethod
    def check(backbone: str, layers: Sequence[str]) -> tuple[str, list[str]]:
        """The backbone name (default filled in) and layers, checked against the registry."""
        backbone = backbone or DEFAULT_BACKBONE
        spec = get_backbone_spec(backbone)
        if not layers:
            raise InvalidArgument("layers: give at least one layer")
        for layer in layers:
            spec.layer(layer)
        return backbone, list(layers)

    async def stats(self, image: bytes, backbone: str, layers: Sequence[str], *,
                    max_side: int = 0) -> dict[str, LayerStats]:
        """``{layer: LayerStats}`` of one encoded image (cached per layer)."""
        if not image:
            raise InvalidArgument("image: no bytes were given")
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
            self.metrics.cache_misses.labels(backbone).inc(len(missing))
            async with self._slots:
                computed, version = await layer_stats(self.backend, image, backbone, missing,
                                                      max_side=max_side)
            self._versions[backbone] = version
            for layer, stats in computed.items():
                self.cache.put(StatsKey(digest, backbone, layer, max_side, version), stats)
            found.update(computed)
        return {layer: found[layer] for layer in layers}

    async def guide_weights(self, guides: Sequence[bytes], backbone: str,
                            layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Normalised per-map weights ``{layer: [C]}`` of ``guides`` (encoded images)."""
        if not guides:
            raise InvalidArgument("guides: at least one guide image is needed")
        backbone, layers = self.check(backbone, layers)
        per_guide = await asyncio.gather(*(
            self.stats(g, backbone, layers, max_side=GUIDE_MAX_SIDE) for g in guides))
        return combine_guide_means([{k: v.mean for k, v in s.items()} for s in per_guide], layers)

    async def select(self, images: Sequence[bytes], backbone: str, layers: Sequence[str], *,
                     top_k: int, bottom_k: int) -> Selection:
        """Lucid-style selection over ``images`` (encoded), as ``select_neurons`` does it."""
        if not images:
            raise InvalidArgument("images: neuron selection needs at least one image")
        if len(images) > self.max_images:
            raise InvalidArgument(f"images: {len(images)} images, more than the "
                                  f"{self.max_images} one selection may use")
        if top_k < 0 or bottom_k < 0 or top_k + bottom_k == 0:
            raise InvalidArgument("top_k and bottom_k must be >= 0 and not both zero")
        backbone, layers = self.check(backbone, layers)
        per_image = await asyncio.gather(*(self.stats(i, backbone, layers) for i in images))
        means = [{k: v.mean for k, v in s.items()} for s in per_image]
        return selection_from_means(means, layers, top_k=top_k, bottom_k=bottom_k)
