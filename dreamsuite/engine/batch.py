"""Several dreams stepped as one batch, and the measurement that says when that pays.

Each dream keeps its own objective, weights, jitter, gradient normalisation, seed and tiles:
only the backbone's forward and backward passes are shared. The samples of a batch are
independent (BatchNorm is folded, nothing mixes images), so the gradient of the summed
objectives with respect to image ``i`` is the gradient of dream ``i``'s own objective. On the
CPU it is bit for bit the gradient of the pass alone (the backbones' convolutions run sample by
sample where a batched kernel would round differently: :mod:`dreamsuite.backbones.invariant`),
so a batched dream gives exactly the image it gives alone; on CUDA, to float tolerance.

>>> runs = [prepare_dream(image, config) for image, config in requests]
>>> results = dream_together(runs)    # a DreamResult or the exception of each dream, in order

Whether a batch is faster depends on the device and the size: on 2 CPU cores, EfficientNet-Lite0
steps 8 images at 64 px 2.75x faster as one batch, but 0.6x as fast at 512 px. So
:class:`BatchCalibration` measures it, once per backbone, layers and size.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from dreamsuite.backbones import Backbone
from dreamsuite.backbones.invariant import exact_batches
from dreamsuite.device import release_cached
from dreamsuite.engine.dream import (
    CancelCheck,
    DreamProgress,
    DreamResult,
    DreamRun,
    GradientRequest,
    gradient,
)
from dreamsuite.engine.objectives import layer_l2

__all__ = ["dream_together", "batch_gradients", "BatchCalibration", "Calibrated"]

log = logging.getLogger(__name__)

Answer = tuple[torch.Tensor, float]


def batch_gradients(requests: Sequence[GradientRequest]) -> list[Answer | Exception]:
    """Answer ``requests``: those with the same backbone and pixel shape as one batched
    forward+backward each, the others alone. If a batched pass fails (e.g. out of memory),
    its requests are answered one by one, so one request cannot fail the others; a request
    that fails alone too is answered with its exception."""
    answers: list[Answer | Exception | None] = [None] * len(requests)
    groups: dict[tuple, list[int]] = {}
    for i, request in enumerate(requests):
        key = (id(request.run.backbone), tuple(request.pixels.shape), request.pixels.dtype)
        groups.setdefault(key, []).append(i)
    for members in groups.values():
        if len(members) > 1:
            try:
                batch = _batched([requests[i] for i in members])
            except Exception as exc:  # out of memory, or one dream's objective failing
                log.warning("a batch of %d failed (%s); stepping its dreams one by one",
                            len(members), exc)
                batch = None
            if batch is None:  # outside the handler: its traceback held the batch's tensors
                release_cached(requests[members[0]].pixels.device)
            else:
                for i, answer in zip(members, batch, strict=True):
                    answers[i] = answer
                continue
        for i in members:
            try:
                answers[i] = gradient(requests[i])
            except Exception as exc:  # this request's dream ends; the others go on
                answers[i] = exc.with_traceback(None)
            if isinstance(answers[i], Exception):
                release_cached(requests[i].pixels.device)
    return answers  # type: ignore[return-value]


def _batched(requests: Sequence[GradientRequest]) -> list[Answer]:
    first = requests[0].run
    layers = frozenset().union(*(r.run.objective.layers for r in requests))
    extractor = first.backbone.extractor(layers)
    x = torch.cat([r.pixels for r in requests]).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    with exact_batches():  # each sample's gradient bit for bit as alone
        acts = first.features(extractor, x)
        values = []
        for i, request in enumerate(requests):
            own = {layer: acts[layer][i:i + 1] for layer in request.run.objective.layers}
            values.append(request.run.value(own, x[i:i + 1]))
        (grad,) = torch.autograd.grad(torch.stack(values).sum(), x)
    return [(grad[i:i + 1], float(v.detach())) for i, v in enumerate(values)]


def dream_together(
    runs: Sequence[DreamRun],
    progress: Sequence[Callable[[DreamProgress], None] | None] | None = None,
    should_cancel: Sequence[CancelCheck | None] | None = None,
    *,
    answer: Callable[[Sequence[GradientRequest]], list[Answer | Exception]] = batch_gradients,
) -> list[DreamResult | Exception]:
    """Run ``runs`` in lockstep, answering each round of their gradient requests with one
    call of ``answer`` (default :func:`batch_gradients`). Returns, in order, each run's
    :class:`DreamResult` or the exception that ended it: a run that fails or is cancelled
    (its ``should_cancel`` turns true), or whose request ``answer`` answers with an
    exception, leaves the round, the others go on undisturbed. Should ``answer`` itself
    raise, every run still in the round ends with that exception: never without an outcome."""
    progress = progress or [None] * len(runs)
    should_cancel = should_cancel or [None] * len(runs)
    outcomes: list[DreamResult | Exception | None] = [None] * len(runs)
    steps = [run.steps(p, c) for run, p, c in zip(runs, progress, should_cancel, strict=True)]
    pending: dict[int, GradientRequest] = {}

    def advance(i: int, reply: Answer | Exception | None) -> None:
        try:
            if reply is None:
                pending[i] = next(steps[i])
            elif isinstance(reply, Exception):  # raised where the dream waits for its answer
                pending[i] = steps[i].throw(reply)
            else:
                pending[i] = steps[i].send(reply)
        except StopIteration as done:
            outcomes[i] = done.value
            pending.pop(i, None)
        except Exception as exc:  # this dream ends; the others go on
            # A reply shared by the round (``answer`` raised) would collect every dream's
            # frames in its traceback: each keeps its own record only in the log.
            outcomes[i] = exc.with_traceback(None) if exc is reply else exc
            pending.pop(i, None)

    with torch.random.fork_rng(devices=[]):
        for i in range(len(runs)):
            advance(i, None)
        while pending:
            order = list(pending)
            try:
                replies = answer([pending[i] for i in order])
                if len(replies) != len(order):
                    raise RuntimeError(f"{len(replies)} answers to {len(order)} requests")
            except Exception as exc:
                log.error("answering a round of %d dreams failed; they all end", len(order),
                          exc_info=exc)
                replies = [exc.with_traceback(None)] * len(order)
            for i, reply in zip(order, replies, strict=True):
                advance(i, reply)
    return outcomes  # type: ignore[return-value]


def calibration_size(size: Sequence[int], min_size: int = 1) -> tuple[int, tuple[int, int]]:
    """The band of image area that ``size`` (``(H, W)``) falls in (a factor of sqrt(2) wide)
    and the square, at the band's middle, that stands for it in a calibration. Whether batches
    pay follows the pixel count; measured per exact size, every input size (and so every
    octave plan) paid a calibration of its own, about 1.8 s at 256 px on 2 CPU cores, and
    sizes one pixel apart came out as 8 and as 4 by noise."""
    band = round(2 * math.log2(max(1, size[0] * size[1])))
    side = max(8, round(2 ** (band / 4) / 8) * 8, min_size)
    return band, (side, side)


@dataclass(frozen=True)
class Calibrated:
    """What a calibration measured: seconds per image of one forward+backward at each batch
    size tried (none when even single images failed), and the batch size chosen."""

    backbone: str
    layer: str
    size: tuple[int, int]
    per_image: dict[int, float]
    best: int

    def speedup(self, batch: int) -> float:
        if batch not in self.per_image:
            return float("nan")
        return self.per_image[1] / self.per_image[batch]


class BatchCalibration:
    """The batch size worth using for a backbone, deepest layer and image size on a device,
    from a measurement made the first time it is asked (then cached): one per band of image
    area (:func:`calibration_size`).

    Batch sizes 2, 4, 8 ... up to ``max_batch`` are each timed against single images, the two
    alternating (after a warm-up), so that the machine's drift and other threads' load hit
    both alike: at least ``repeats`` pairs and, for small fast passes, as many more as fit in
    ``min_seconds`` (up to 25). Timed one after the other, a busy server's single passes
    measured 8 ms in one round and 15 ms in the next, enough to turn a 1.5x gain into a loss.
    The smallest size within ``tolerance`` of the fastest per image is chosen, if it beats
    single images by at least ``min_gain``; else 1. Doubling stops as soon as a size is no
    faster per image than the one before, so sizes where batching loses cost only two
    measurements. A batch size that fails (out of memory) ends the doubling: the sizes that
    worked decide; a calibration that fails outright means batch 1. Either is cached like a
    measurement: it is not tried again before every dream of that size."""

    def __init__(self, max_batch: int = 8, *, repeats: int = 3, min_gain: float = 0.10,
                 tolerance: float = 0.05, min_seconds: float = 0.25):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.max_batch = max_batch
        self.repeats = repeats
        self.min_gain = min_gain
        self.tolerance = tolerance
        self.min_seconds = min_seconds
        self._cache: dict[tuple, Calibrated] = {}
        self._lock = threading.Lock()

    def known(self) -> list[Calibrated]:
        with self._lock:
            return list(self._cache.values())

    def best(self, backbone: Backbone, layers: Sequence[str], size: tuple[int, int]) -> int:
        """The batch size to use for dreams of ``size`` (``(H, W)``) up to ``layers``."""
        return self.measure(backbone, layers, size).best

    def measure(self, backbone: Backbone, layers: Sequence[str],
                size: tuple[int, int]) -> Calibrated:
        deepest = max((backbone.spec.layer(name) for name in layers), key=lambda info: info.index)
        band, square = calibration_size(size, backbone.spec.min_size)
        key = (backbone.name, backbone.weights, str(backbone.device), deepest.name, band)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        try:
            calibrated = self._measure(backbone, deepest.name, square)
        except Exception as exc:  # noqa: BLE001 (even single passes fail: dreams run alone)
            log.warning("batch calibration %s %s %dx%d failed (%s); batch 1", backbone.name,
                        deepest.name, *square, exc)
            calibrated = Calibrated(backbone.name, deepest.name, square, {}, 1)
        if not calibrated.per_image:  # outside the except: its traceback holds the tensors
            release_cached(backbone.device)
        log.info("batch calibration %s %s %dx%d (for %dx%d): %s -> batch %d", backbone.name,
                 deepest.name, *square, size[0], size[1],
                 ", ".join(f"{b}: {1e3 * t:.1f} ms/image" for b, t in calibrated.per_image.items()),
                 calibrated.best)
        with self._lock:
            return self._cache.setdefault(key, calibrated)

    def _measure(self, backbone: Backbone, layer: str, size: tuple[int, int]) -> Calibrated:
        one = self._timer(backbone, layer, size, 1)
        singles: list[float] = []
        ratios = {1: 1.0}  # seconds per image over a single image's, measured side by side
        batch, previous = 2, 1
        failed = False
        while batch <= self.max_batch:
            try:
                alone, together = self._alternating(one, self._timer(backbone, layer, size, batch))
            except Exception as exc:  # noqa: BLE001 (out of memory most likely)
                log.warning("batch calibration %s %dx%d: batch %d failed (%s); batches up to "
                            "%d only", backbone.name, size[0], size[1], batch, exc, previous)
                failed = True
                break
            singles += alone
            ratios[batch] = statistics.median(together) / batch / statistics.median(alone)
            if ratios[batch] >= ratios[previous]:
                break
            previous, batch = batch, batch * 2
        if failed:
            release_cached(backbone.device)
        if not singles:
            singles = [one() for _ in range(self.repeats)]
        single = statistics.median(singles)
        per_image = {b: single * ratio for b, ratio in ratios.items()}
        fastest = min(per_image.values())
        best = 1
        if per_image[1] >= (1 + self.min_gain) * fastest:
            best = min(b for b, t in per_image.items() if t <= (1 + self.tolerance) * fastest)
        return Calibrated(backbone.name, layer, size, per_image, best)

    def _alternating(self, one: Callable[[], float], other: Callable[[], float]
                     ) -> tuple[list[float], list[float]]:
        """Seconds of ``one`` and of ``other``, run in turn."""
        ones: list[float] = []
        others: list[float] = []
        started = time.perf_counter()
        while len(ones) < self.repeats or (
                len(ones) < 25 and time.perf_counter() - started < self.min_seconds):
            ones.append(one())
            others.append(other())
        return ones, others

    def _timer(self, backbone: Backbone, layer: str, size: tuple[int, int],
               batch: int) -> Callable[[], float]:
        """A function that times one forward+backward of ``batch`` random images (in
        seconds), run once here to warm up (first-call allocations, kernel choices, the
        batch-invariance checks)."""
        objective = layer_l2(layer)
        extractor = backbone.extractor([layer])
        autocast = backbone.device.type == "cuda"
        generator = torch.Generator().manual_seed(batch)
        pixels = torch.rand(batch, 3, *size, generator=generator).to(backbone.device)
        pixels = pixels.contiguous(memory_format=torch.channels_last)

        def once() -> float:
            x = pixels.clone().requires_grad_()
            started = time.perf_counter()
            with exact_batches():  # as the batched pass runs; backward outside autocast
                with torch.autocast("cuda", dtype=torch.float16, enabled=autocast):
                    acts = extractor(x)
                    total = torch.stack([objective({layer: acts[layer][i:i + 1]})
                                         for i in range(batch)]).sum()
                torch.autograd.grad(total, x)
            if autocast:
                torch.cuda.synchronize(backbone.device)
            return time.perf_counter() - started

        once()
        return once
