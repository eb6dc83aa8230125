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
from dreamsuite.device import out_of_memory, release_cached
from dreamsuite.engine import DreamConfig, DreamProgress, DreamResult
from dreamsuite.engine.batch import BatchCalibration, dream_together
from dreamsuite.engine.dream import DreamRun, prepare_dream
from dreamsuite.engine.guide import select_neurons
from dreamsuite.engine.objectives import Maplist
from dreamsuite.errors import Cancelled, DreamsuiteError, ResourceExhausted, WeightsMissing
from dreamsuite.images import DEFAULT_MAX_PIXELS
from services.dream.config import BATCHING
from services.dream.jobs import (
    CheckedRequest,
    DreamSpec,
    PreparedJob,
    batch_key,
    check_request,
    prepare,
    work_size,
)
from services.dream.metrics import DreamMetrics
from services.dream.outputs import InstrumentedStore, OctaveOutput, Publisher
from services.dream.scheduler import Scheduler, Ticket
from services.dream.worker import DeviceWorkers, worker_devices

__all__ = ["DreamRunner", "DreamJob", "GuideWeightsProvider", "BATCHING_MODES", "Task",
           "TaskJob"]

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


#: ``batching`` modes: measure per size (``auto``), never, or always up to ``max_batch``.
BATCHING_MODES = BATCHING


class Task:
    """Device work other than a dream (a reconstruction, a style transfer): ``run(device,
    should_cancel, report)`` on a worker thread returns the result; ``report(payload)`` streams
    progress. It takes its own turn in the queue and is never batched. ``label`` is its
    backbone and ``kind`` what it is (``dream_job_seconds``' labels)."""

    def __init__(self, label: str, run: Callable[[torch.device, Callable[[], bool],
                                                   Callable[[Any], None]], Any],
                 kind: str = "task"):
        self.label = label
        self.kind = kind
        self.run = run


class TaskJob:
    """One accepted task: its events (``("progress", payload)`` ... then ``("result", value)``
    or an exception raised), and a way to stop it."""

    def __init__(self, events: _Events, cancel: threading.Event,
                 dequeue: Callable[[], object]):
        self._events = events
        stop = cancel.set

        def canceller() -> None:
            stop()
            dequeue()

        self.canceller = canceller

    def cancel(self) -> None:
        self.canceller()

    async def events(self) -> AsyncIterator[tuple[str, Any]]:
        try:
            while True:
                kind, payload = await self._events.queue.get()
                if kind == "error":
                    raise payload
                yield kind, payload
                if kind == "result":
                    return
        finally:
            self.cancel()


class DreamRunner:
    """Dreams on device workers (one per GPU, or the CPU) fed by a fair, bounded queue, with
    compatible dreams batched; outputs through an artifact store."""

    def __init__(self, store: ArtifactStore, metrics: DreamMetrics, *,
                 device: str | torch.device | None = None, queue_size: int = 4,
                 max_pixels: int = DEFAULT_MAX_PIXELS, inline_limit: int = 16 << 20,
                 guide_provider: GuideWeightsProvider | None = None,
                 batching: str = "auto", max_batch: int = 8, batch_window: float = 0.025):
        if batching not in BATCHING_MODES:
            raise ValueError(f"batching must be one of {BATCHING_MODES}")
        self.store = InstrumentedStore(store, metrics)
        self.metrics = metrics
        self.devices = worker_devices(device)
        self.device = self.devices[0]
        self.max_pixels = max_pixels
        self.guide_provider = guide_provider
        self.batching = batching
        self.max_batch = max_batch
        self.calibration = BatchCalibration(max_batch)
        self.scheduler = Scheduler(
            queue_size, len(self.devices), batch_size=self._batch_size, window=batch_window,
            on_drop=lambda reason: metrics.dropped.labels(reason).inc(),
            on_depth=self._publish_depth)
        self.workers = DeviceWorkers(self.scheduler, self.devices, self._run_batch)
        self.publisher = Publisher(self.store, inline_limit=inline_limit)

    def _publish_depth(self, waiting: int, running: int) -> None:
        self.metrics.queue_depth.set(waiting)
        self.metrics.in_flight.set(running)

    async def start(self, spec: DreamSpec, *, caller: str = "",
                    deadline: float | None = None) -> DreamJob:
        """Check ``spec``, decode its images and queue it for a device. ``caller`` names who
        asks (callers take turns); ``deadline`` (``time.monotonic()``) is when the call ends:
        a dream still queued then is dropped unstarted."""
        # A bad request is refused as such, even when the queue is full (clients retry a
        # RESOURCE_EXHAUSTED); a full queue is refused before any image is decoded.
        request = await asyncio.to_thread(check_request, spec, max_pixels=self.max_pixels)
        self.check_capacity()
        job = await asyncio.to_thread(self._prepare, spec, request)
        events = _Events(asyncio.get_running_loop())
        cancel = threading.Event()
        ticket = Ticket((job, events, cancel), caller=caller, deadline=deadline,
                        key=batch_key(job),
                        on_drop=lambda exc: events.put("error", exc))
        try:
            self.scheduler.submit(ticket)
        except ResourceExhausted:
            self.metrics.rejected.inc()
            raise
        # Cancelled while queued: the dream leaves the queue at once and never runs.
        return DreamJob(job, events, cancel, self.publisher,
                        dequeue=lambda: self.scheduler.drop(ticket))

    async def start_task(self, task: Task, *, caller: str = "",
                         deadline: float | None = None) -> TaskJob:
        """Queue ``task`` on the device workers (same queue, turns and deadlines as dreams)."""
        self.check_capacity()
        events = _Events(asyncio.get_running_loop())
        cancel = threading.Event()
        ticket = Ticket((task, events, cancel), caller=caller, deadline=deadline,
                        key=object(), on_drop=lambda exc: events.put("error", exc))
        try:
            self.scheduler.submit(ticket)
        except ResourceExhausted:
            self.metrics.rejected.inc()
            raise
        return TaskJob(events, cancel, dequeue=lambda: self.scheduler.drop(ticket))

    def _run_task(self, ticket: Ticket, device: torch.device) -> None:
        task, events, cancel = ticket.payload
        ticket.payload = None
        started = time.perf_counter()
        label = "error"
        try:
            if cancel.is_set():
                raise Cancelled("cancelled while waiting in the queue")
            result = task.run(device, cancel.is_set, lambda p: events.put("progress", p))
            label = "ok"
            events.put("result", result)
        except Exception as exc:
            label = "cancelled" if isinstance(exc, Cancelled) else "error"
            exc = self._refusal(exc, device, task.label)
            if not isinstance(exc, DreamsuiteError):
                log.error("%s failed", task.label, exc_info=exc)
            events.put("error", exc.with_traceback(None))
        finally:
            self.metrics.job_seconds.labels(task.label, task.kind, label).observe(
                time.perf_counter() - started)
            self._release_memory(device, thorough=label != "ok")

    def check_capacity(self) -> None:
        """:class:`ResourceExhausted` (counted) when the queue is full: callers refuse a request
        with it before decoding anything."""
        try:
            self.scheduler.check_capacity()
        except ResourceExhausted:
            self.metrics.rejected.inc()
            raise

    def _prepare(self, spec: DreamSpec, request: CheckedRequest | None = None) -> PreparedJob:
        return prepare(spec, self.store, max_pixels=self.max_pixels, request=request)

    def _batch_size(self, ticket: Ticket, device: torch.device | None) -> int:
        """How many dreams like ``ticket``'s to step together on ``device`` (measured there:
        the worker asking, not another worker's device busy with its own batch)."""
        if self.batching == "off" or self.max_batch == 1 or isinstance(ticket.payload[0], Task):
            return 1
        if self.batching == "always":
            return self.max_batch
        job: PreparedJob = ticket.payload[0]
        config = job.config
        spec = get_backbone_spec(config.backbone)
        backbone = get_backbone(config.backbone, weights=config.weights,
                                device=device or self.device)
        layers = (list(job.spec.selection.layers) if job.spec.selection is not None
                  else config.maplist.layers if config.maplist is not None
                  else [spec.default_layer])
        size = work_size(job)
        if max(size) > config.tile:  # tiled: the passes are tile-sized
            size = (min(size[0], config.tile), min(size[1], config.tile))
        return self.calibration.best(backbone, layers, size)

    def _run_batch(self, tickets: list[Ticket], device: torch.device) -> None:
        """On a worker thread: plan each dream, then step them together (or the one alone);
        every dream reports through its own events."""
        if isinstance(tickets[0].payload[0], Task):
            for ticket in tickets:
                self._run_task(ticket, device)
            return
        self.metrics.batch_size.observe(len(tickets))
        started = time.perf_counter()
        members = []
        failed = False
        for ticket in tickets:
            job, events, cancel = ticket.payload
            # The call's cancel callback keeps the ticket: it must not keep the images too.
            ticket.payload = None
            try:
                if cancel.is_set():
                    raise Cancelled("cancelled while waiting in the queue")
                members.append((job, events, self._plan(job, device), cancel))
            except Exception as exc:  # planning runs on the device too (selection, guides)
                self._report(job, events, self._refusal(exc, device, "the dream"), started)
                failed |= not isinstance(exc, Cancelled)
        del tickets
        if not members:
            if failed:
                self._release_memory(device, thorough=True)
            return
        progress = [self._progress(job, events) for job, events, _, _ in members]
        cancels = [cancel.is_set for _, _, _, cancel in members]
        runs = [run for _, _, run, _ in members]
        try:
            if len(runs) == 1:
                outcomes: list = [runs[0].run(progress[0], cancels[0])]
            else:
                outcomes = dream_together(runs, progress, cancels)
        except Exception as exc:  # every dream of the batch hears of it: none is left waiting
            outcomes = [exc.with_traceback(None)] * len(runs)
        del runs
        for (job, events, _, _), outcome in zip(members, outcomes, strict=True):
            if not isinstance(outcome, DreamResult):
                outcome = self._refusal(outcome, device, "the dream")
            self._report(job, events, outcome, started)
            failed |= not isinstance(outcome, DreamResult)
        del members, outcomes
        self._release_memory(device, thorough=failed)

    def _refusal(self, exc: Exception, device: torch.device, what: str) -> Exception:
        """An out-of-memory error as :class:`ResourceExhausted`, with a retry hint: the same
        request may fit once the device is less busy (or with a smaller image or tile)."""
        if not out_of_memory(exc):
            return exc
        log.warning("%s ran out of memory on %s: %s", what, device, str(exc).partition("\n")[0])
        return ResourceExhausted(
            f"{what} ran out of memory on the dream service's {device.type} device; retry "
            "later, or send a smaller image or tile", retry_after=self.scheduler.retry_after())

    def _progress(self, job: PreparedJob, events: _Events) -> Callable[[DreamProgress], None]:
        octave_started = [time.perf_counter()]

        def progress(p: DreamProgress) -> None:
            if p.image is not None:
                now = time.perf_counter()
                self.metrics.octave_seconds.labels(job.config.backbone).observe(
                    now - octave_started[0])
                octave_started[0] = now
                events.put("octave", p)

        return progress

    def _report(self, job: PreparedJob, events: _Events, outcome: DreamResult | Exception,
                started: float) -> None:
        if isinstance(outcome, DreamResult):
            events.put("result", outcome)
            label = "ok"
        else:
            label = "cancelled" if isinstance(outcome, Cancelled) else "error"
            if not isinstance(outcome, DreamsuiteError):
                log.error("dream failed", exc_info=outcome)
            # The traceback holds the optimisation's frames and tensors: drop it to free them.
            events.put("error", outcome.with_traceback(None))
        self.metrics.job_seconds.labels(job.config.backbone, "dream", label).observe(
            time.perf_counter() - started)

    def _plan(self, job: PreparedJob, device: torch.device) -> DreamRun:
        config = job.config
        if job.spec.selection is not None:
            config = dataclasses.replace(config, maplist=self._select(job, config, device))
        weights = job.guide_weights
        if job.guides and self.guide_provider is not None and config.guide_mode == "weights":
            layers = (config.maplist.layers if config.maplist
                      else [get_backbone_spec(config.backbone).default_layer])
            weights = self.guide_provider.guide_weights(config.backbone, config.weights,
                                                        job.guides, layers)
        return prepare_dream(job.image, config, guides=job.guides,
                             guide_weights_override=weights, device=device,
                             max_pixels=self.max_pixels, guide_masks=job.guide_masks)

    def _select(self, job: PreparedJob, config: DreamConfig, device: torch.device) -> Maplist:
        selection = job.spec.selection
        assert selection is not None
        backbone = get_backbone(config.backbone, weights=config.weights, device=device)
        images = job.selection_images or [job.image]
        chosen = select_neurons(backbone, images, selection.layers,
                                top_k=selection.top_k, bottom_k=selection.bottom_k)
        return chosen.maplist()

    def _release_memory(self, device: torch.device, *, thorough: bool) -> None:
        if thorough:  # a failed dream may leave reference cycles holding tensors
            gc.collect()
            # Only then: after a dream that went well, the allocator's cached blocks are what
            # the next dream allocates again (handing them back costs a cudaFree each, and
            # cudaMallocs after). After a failure (out of memory) they go back to the device.
            release_cached(device)
        self.metrics.sample_device_memory(device)

    def preload(self, names: Sequence[str]) -> None:
        """Load backbones (pretrained) on every device now; missing weights are only logged."""
        for name in names:
            for device in self.devices:
                try:
                    get_backbone(name, device=device)
                    log.info("loaded %s on %s", name, device)
                except WeightsMissing as exc:
                    log.warning("not preloading %s: %s", name, exc)
                    break

    def backbones(self) -> list[tuple[BackboneSpec, str]]:
        """Every registered backbone with its weight status (blocking: probes layers once)."""
        return [(spec, weights_status(spec))
                for spec in (get_backbone_spec(name) for name in list_backbones())]

    async def close(self) -> None:
        """Let the running dream end (cancelled ones stop within a step), drop queued ones, then
        close the artifact store and the guide provider's connection, if it has one."""
        await asyncio.to_thread(self.workers.shutdown)
        await asyncio.to_thread(self.store.close)
        close_provider = getattr(self.guide_provider, "close", None)
        if close_provider is not None:
            await asyncio.to_thread(close_provider)
