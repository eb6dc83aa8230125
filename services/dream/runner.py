"""The dream service's data plane: checks a request, runs it on the device worker and turns
each finished octave into an output. It knows nothing of gRPC.

>>> runner = DreamRunner(store, DreamMetrics(registry), device="cpu", queue_size=4)
>>> job = await runner.start(spec)          # ResourceExhausted when the queue is full
>>> async for output in job.outputs(): ...  # one OctaveOutput per octave, the last with result
>>> job.cancel()                            # the optimisation stops within one step
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

import torch

from dreamsuite.artifacts import ArtifactStore
from dreamsuite.backbones import (
    BackboneSpec,
    get_backbone,
    get_backbone_spec,
    list_backbones,
    weights_status,
)
from dreamsuite.device import select_device
from dreamsuite.engine import DreamConfig, DreamProgress, DreamResult, dream
from dreamsuite.engine.guide import select_neurons
from dreamsuite.engine.objectives import Maplist
from dreamsuite.errors import Cancelled, DreamsuiteError, WeightsMissing
from dreamsuite.images import DEFAULT_MAX_PIXELS
from services.dream.jobs import DreamSpec, PreparedJob, prepare
from services.dream.metrics import DreamMetrics
from services.dream.outputs import InstrumentedStore, OctaveOutput, Publisher
from services.dream.worker import DeviceWorker

__all__ = ["DreamRunner", "DreamJob", "GuideWeightsProvider"]

log = logging.getLogger(__name__)


class GuideWeightsProvider(Protocol):
    """Computes guide weights somewhere else (e.g. the guide service).

    Called on the device worker thread; returns normalised per-map weights ``{layer: [C]}``
    exactly as :func:`dreamsuite.engine.guide.guide_weights` would, or raises a library error."""

    def guide_weights(self, backbone: str, weights: str, guides: Sequence[torch.Tensor],
                      layers: Sequence[str]) -> dict[str, torch.Tensor]: ...


class _Events:
    """Hands events from the worker thread to the event loop, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def put(self, kind: str, payload: Any) -> None:
        # RuntimeError: the loop is gone, nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, payload))


class DreamJob:
    """One accepted dream: its outputs as they come, and a way to stop it."""

    def __init__(self, job: PreparedJob, events: _Events, cancel: threading.Event,
                 publisher: Publisher, dequeue: Callable[[], object] = lambda: None):
        self._job = job
        self._events = events
        self._cancel = cancel
        self._publisher = publisher
        self._dequeue = dequeue

    def cancel(self) -> None:
        """Stop the optimisation before its next step, or take the job out of the queue."""
        self._cancel.set()
        self._dequeue()

    @property
    def canceller(self) -> Callable[[], None]:
        """:meth:`cancel` without a reference to the job, for callbacks that may outlive it
        (a finished call's context keeps its callbacks)."""
        stop, dequeue = self._cancel.set, self._dequeue

        def cancel() -> None:
            stop()
            dequeue()

        return cancel

    async def outputs(self) -> AsyncIterator[OctaveOutput]:
        """One output per octave in order; the last one carries the stored result."""
        last: DreamProgress | None = None
        try:
            while True:
                kind, payload = await self._events.queue.get()
                if kind == "error":
                    raise payload
                if kind == "result":
                    assert last is not None
                    yield await asyncio.to_thread(self._publisher.final, self._job, last, payload)
                    return
                if payload.octave + 1 < payload.octaves:
                    yield await asyncio.to_thread(self._publisher.octave, self._job, payload)
                else:
                    last = payload  # sent with the result, once that is stored
        finally:
            self.cancel()
            self._job = None  # type: ignore[assignment]  # free the images now, not later


class DreamRunner:
    """Dreams on one device worker with a bounded queue; outputs through an artifact store."""

    def __init__(self, store: ArtifactStore, metrics: DreamMetrics, *,
                 device: str | torch.device | None = None, queue_size: int = 4,
                 max_pixels: int = DEFAULT_MAX_PIXELS, inline_limit: int = 16 << 20,
                 guide_provider: GuideWeightsProvider | None = None):
        self.store = InstrumentedStore(store, metrics)
        self.metrics = metrics
        self.device = select_device(device)
        self.max_pixels = max_pixels
        self.guide_provider = guide_provider
        self.worker = DeviceWorker(queue_size, metrics)
        self.publisher = Publisher(self.store, inline_limit=inline_limit)

    async def start(self, spec: DreamSpec) -> DreamJob:
        """Check ``spec``, decode its images and queue it for the device."""
        self.worker.check_capacity()  # refuse before decoding anything when full
        job = await asyncio.to_thread(self._prepare, spec)
        events = _Events(asyncio.get_running_loop())
        cancel = threading.Event()
        queued = self.worker.submit(lambda: self._run(job, events, cancel))
        # Cancelled while queued: the worker drops it and its place in the queue at once.
        return DreamJob(job, events, cancel, self.publisher, dequeue=queued.cancel)

    def _prepare(self, spec: DreamSpec) -> PreparedJob:
        return prepare(spec, self.store, max_pixels=self.max_pixels)

    def _run(self, job: PreparedJob, events: _Events, cancel: threading.Event) -> None:
        """On the worker thread: the whole optimisation, reported through ``events``."""
        started = time.perf_counter()
        octave_started = [started]
        outcome = "error"

        def progress(p: DreamProgress) -> None:
            if p.image is not None:
                now = time.perf_counter()
                self.metrics.octave_seconds.labels(job.config.backbone).observe(
                    now - octave_started[0])
                octave_started[0] = now
                events.put("octave", p)

        try:
            if cancel.is_set():
                raise Cancelled("cancelled while waiting in the queue")
            result = self._dream(job, progress, cancel)
            outcome = "ok"
            events.put("result", result)
        except Exception as exc:
            outcome = "cancelled" if isinstance(exc, Cancelled) else "error"
            if not isinstance(exc, DreamsuiteError):
                log.error("dream failed", exc_info=exc)
            # The traceback holds the optimisation's frames and tensors: drop it to free them.
            events.put("error", exc.with_traceback(None))
        finally:
            self.metrics.job_seconds.labels(job.config.backbone, outcome).observe(
                time.perf_counter() - started)
            self._release_memory(thorough=outcome != "ok")

    def _dream(self, job: PreparedJob, progress, cancel: threading.Event) -> DreamResult:
        config = job.config
        if job.spec.selection is not None:
            config = dataclasses.replace(config, maplist=self._select(job, config))
        weights = job.guide_weights
        if job.guides and self.guide_provider is not None and config.guide_mode == "weights":
            layers = (config.maplist.layers if config.maplist
                      else [get_backbone_spec(config.backbone).default_layer])
            weights = self.guide_provider.guide_weights(config.backbone, config.weights,
                                                        job.guides, layers)
        return dream(job.image, config, guides=job.guides, guide_weights_override=weights,
                     progress=progress, should_cancel=cancel.is_set, device=self.device,
                     max_pixels=self.max_pixels)

    def _select(self, job: PreparedJob, config: DreamConfig) -> Maplist:
        selection = job.spec.selection
        assert selection is not None
        backbone = get_backbone(config.backbone, weights=config.weights, device=self.device)
        images = job.selection_images or [job.image]
        chosen = select_neurons(backbone, images, selection.layers,
                                top_k=selection.top_k, bottom_k=selection.bottom_k)
        return chosen.maplist()

    def _release_memory(self, *, thorough: bool) -> None:
        if thorough:  # a failed dream may leave reference cycles holding tensors
            gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.metrics.sample_device_memory(self.device)

    def preload(self, names: Sequence[str]) -> None:
        """Load backbones (pretrained) now; one whose weights are missing is only logged."""
        for name in names:
            try:
                get_backbone(name, device=self.device)
                log.info("loaded %s on %s", name, self.device)
            except WeightsMissing as exc:
                log.warning("not preloading %s: %s", name, exc)

    def backbones(self) -> list[tuple[BackboneSpec, str]]:
        """Every registered backbone with its weight status (blocking: probes layers once)."""
        return [(spec, weights_status(spec))
                for spec in (get_backbone_spec(name) for name in list_backbones())]

    async def close(self) -> None:
        """Let the running dream end (cancelled ones stop within a step), drop queued ones, then
        close the artifact store and the guide provider's connection, if it has one."""
        await asyncio.to_thread(self.worker.shutdown)
        await asyncio.to_thread(self.store.close)
        close_provider = getattr(self.guide_provider, "close", None)
        if close_provider is not None:
            await asyncio.to_thread(close_provider)
