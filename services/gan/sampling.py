"""Sampling in the GAN service: generators loaded from their checkpoints (a few kept in
memory), images stored as content-addressed artifacts. Each image depends on its seed alone."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dreamsuite.artifacts import Artifact, ArtifactStore
from dreamsuite.device import select_device
from dreamsuite.errors import InvalidArgument
from dreamsuite.gan.records import list_models, read_model
from dreamsuite.gan.sample import check_seeds, check_truncation, load_generator, sample
from dreamsuite.images import encode_png
from services.gan.metrics import GanMetrics

__all__ = ["Sampler", "SampledImage", "Samples", "MAX_SAMPLES", "seeds_of"]

#: Most images one Sample call may ask for.
MAX_SAMPLES = 1024


@dataclass(frozen=True)
class SampledImage:
    seed: int
    artifact: Artifact
    url: str
    png: bytes


@dataclass(frozen=True)
class Samples:
    model: str
    step: int
    images: list[SampledImage]


def seeds_of(seeds: Sequence[int], seed: int, count: int) -> list[int]:
    """The request's seeds: the list given, or ``seed .. seed + count - 1``."""
    if seeds and count:
        raise InvalidArgument("give seeds, or seed and count, not both")
    # Checked before the seeds are listed: a count of 2**31 - 1 took the event loop for minutes
    if count < 0 or count > MAX_SAMPLES or len(seeds) > MAX_SAMPLES:
        raise InvalidArgument(f"count: 1 to {MAX_SAMPLES} images per call, not "
                              f"{count or len(seeds)}")
    chosen = list(seeds) if seeds else [seed + i for i in range(count)]
    if not chosen:
        raise InvalidArgument("seeds: give at least one seed (or seed and count >= 1)")
    return check_seeds(chosen)


class Sampler:
    """Loads generators (``cache_size`` kept) and samples them on ``device``."""

    def __init__(self, store: ArtifactStore, metrics: GanMetrics, *,
                 device: str | torch.device | None = None, cache_size: int = 2):
        self.store = store
        self.metrics = metrics
        self.device = select_device(device)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.nn.Module] = OrderedDict()
        self._lock = threading.Lock()  # one sampling at a time on the device

    def _generator(self, checkpoint: str) -> torch.nn.Module:
        generator = self._cache.get(checkpoint)
        if generator is None:
            generator, _kind = load_generator(self.store, checkpoint, self.device)
            self._cache[checkpoint] = generator
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(checkpoint)
        return generator

    def _sample(self, model: str, seeds: list[int], truncation: float | None) -> Samples:
        record = read_model(self.store, model)
        started = time.perf_counter()
        with self._lock:
            images = sample(self._generator(record["checkpoint"]), seeds,
                            truncation=math.inf if truncation is None else truncation,
                            device=self.device)
        out = []
        for seed, image in zip(seeds, images, strict=True):
            png = encode_png(image)
            artifact = self.store.put(png, metadata={"model": model, "seed": str(seed),
                                                     "step": str(record.get("step", 0))})
            out.append(SampledImage(seed, artifact, self.store.presign(artifact.uri), png))
        self.metrics.sample_seconds.observe(time.perf_counter() - started)
        self.metrics.samples.inc(len(out))
        return Samples(model, int(record.get("step", 0)), out)

    async def sample(self, model: str, seeds: list[int], truncation: float | None) -> Samples:
        if truncation is not None:
            check_truncation(truncation)
        return await asyncio.to_thread(self._sample, model, seeds, truncation)

    async def models(self) -> list[dict]:
        return await asyncio.to_thread(list_models, self.store)
