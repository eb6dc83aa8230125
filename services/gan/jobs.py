"""Training jobs: started on a launcher, followed through the trainer's events, restarted from
their latest checkpoint when the trainer dies, cancelled by SIGTERM (checkpoint, then stop).

Knows nothing of gRPC. A job's record (config, state, restarts) is kept in the store as
``jobs/<id>/job.json``, so a restarted service lists old jobs and resumes unfinished ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from dreamsuite.artifacts import ArtifactStore
from dreamsuite.errors import (
    DreamsuiteError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    shorten,
)
from dreamsuite.gan.data import read_manifest
from dreamsuite.gan.train import TrainConfig
from services.gan.launchers import Launcher
from services.gan.metrics import GanMetrics

__all__ = ["JobSnapshot", "JobManager", "TERMINAL", "ACTIVE", "check_training"]

log = logging.getLogger(__name__)

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
ACTIVE = frozenset({"QUEUED", "RUNNING", "EVALUATING"})
_STATUS_POLL_SECONDS = 2.0
_MAX_BACKOFF_SECONDS = 30.0  # between polls of a launcher that is unavailable


def check_training(store: ArtifactStore, config: dict) -> dict:
    """``config`` checked by the trainer's own rules (every field named in errors), for data
    sets that exist (dream2dream: of one size); returns it with the trainer's defaults filled
    in."""
    ids = list(dict.fromkeys([config["dataset"], *config.get("datasets", ())]))
    sizes = {read_manifest(store, dataset).size for dataset in ids}  # NotFound names the data set
    checked = TrainConfig(job_id="pending", artifacts=store.url, **config).validate()
    if len(sizes) > 1:
        raise InvalidArgument(f"datasets: the data sets of one model must have one size, not "
                              f"{', '.join(f'{s} px' for s in sorted(sizes))}")
    return {k: v for k, v in checked.to_dict().items() if k not in ("job_id", "artifacts")}


@dataclass(frozen=True)
class StoredRef:
    """An object the job wrote: key, its URI, a presigned URL, digest and step."""

    key: str
    uri: str = ""
    url: str = ""
    sha256: str = ""
    step: int = 0


@dataclass(frozen=True)
class JobSnapshot:
    """A job's state at one moment (what ``WatchJob`` streams)."""

    job_id: str
    dataset: str
    model: str
    state: str = "QUEUED"
    step: int = 0
    total: int = 0
    images_seen: int = 0
    d_loss: float = 0.0
    g_loss: float = 0.0
    d_real_sign: float = 0.0
    steps_per_second: float = 0.0
    eta_seconds: float = 0.0
    checkpoint: StoredRef | None = None
    evaluation: dict = field(default_factory=dict)  # {"step": int, "metrics": {name: value}}
    preview: StoredRef | None = None
    message: str = ""
    restarts: int = 0
    version: int = 0

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL


class _Job:
    def __init__(self, snapshot: JobSnapshot, config: dict):
        self.snapshot = snapshot
        self.config = config
        self.changed = asyncio.Condition()
        self.cancel_requested = False  # saved in the job's record: a restarted service honours it
        self.starting = False  # the launcher is starting its trainer (no follower yet)
        self.ended_with: str | None = None  # the trainer's last word: "done" | "stopped"
        self.task: asyncio.Task | None = None

    async def update(self, **changes) -> None:
        async with self.changed:
            self.snapshot = dataclasses.replace(self.snapshot, version=self.snapshot.version + 1,
                                                **changes)
            self.changed.notify_all()


class JobManager:
    """Runs training jobs on ``launcher``; at most ``max_jobs`` at once."""

    def __init__(self, store: ArtifactStore, launcher: Launcher, metrics: GanMetrics, *,
                 max_jobs: int = 1, max_restarts: int = 3, stop_grace: float = 60.0,
                 poll_seconds: float = 0.2, train_device: str | None = None,
                 deterministic: bool = False, lost_after: float = 300.0):
        self.store = store
        self.launcher = launcher
        self.metrics = metrics
        self.max_jobs = max_jobs
        self.max_restarts = max_restarts
        self.stop_grace = stop_grace
        self.poll_seconds = poll_seconds
        self.train_device = train_device
        self.deterministic = deterministic
        #: seconds the launcher may stay unavailable (Kubernetes API down) while following a
        #: job before the job is given up (FAILED, its trainer stopped)
        self.lost_after = lost_after
        self._jobs: dict[str, _Job] = {}

    # --- starting -------------------------------------------------------------------------

    def _active(self) -> int:
        return sum(1 for job in self._jobs.values() if job.snapshot.state in ACTIVE)

    async def start(self, config: dict) -> str:
        """Start a job for ``config`` (a checked ``TrainConfig.to_dict()`` without job id and
        store); returns its id at once."""
        if self._active() >= self.max_jobs:
            self.metrics.rejected.inc()
            raise ResourceExhausted(f"{self._active()} training(s) running, the most this service "
                                    f"runs at once ({self.max_jobs}); retry when one ends")
        job_id = uuid.uuid4().hex
        config = {**config, "job_id": job_id, "artifacts": self.store.url}
        if self.train_device and not config.get("device"):
            config["device"] = self.train_device
        if self.deterministic:
            config["deterministic"] = True
        job = _Job(JobSnapshot(job_id, config["dataset"], config["model"],
                               total=int(config["steps"])), config)
        job.starting = True  # from now: a cancel waits for the follower
        self._jobs[job_id] = job
        await self._save(job)
        try:
            await self._launch(job)
        except Exception as exc:  # the job must not stay QUEUED, holding a slot, with no trainer
            error = await self._failed_to_start(job, exc)
            raise error from None
        self.metrics.started.inc()
        return job_id

    async def _launch(self, job: _Job, **changes) -> None:
        """Start the job's trainer and its follower; a cancel that came meanwhile stops it."""
        job.starting = True
        try:
            await asyncio.to_thread(self.launcher.start, job.snapshot.job_id, job.config)
        finally:
            job.starting = False
        await job.update(state="RUNNING", **changes)
        job.task = asyncio.create_task(self._follow(job, stop_first=job.cancel_requested),
                                       name=f"job-{job.snapshot.job_id[:8]}")

    async def _failed_to_start(self, job: _Job, exc: Exception) -> Exception:
        """Mark ``job`` FAILED (saved) because its trainer could not be started; returns the
        error to raise: the launcher's own, or :class:`Unavailable` for an unexpected OSError."""
        log.error("cannot start the trainer of job %s", job.snapshot.job_id, exc_info=exc)
        await self._finish(job, "FAILED", eta_seconds=0.0, message=shorten(
            f"the trainer could not be started: {exc}", 2000))
        if isinstance(exc, OSError) and not isinstance(exc, DreamsuiteError):
            return Unavailable(f"cannot start the trainer of job {job.snapshot.job_id}: {exc}")
        return exc

    async def resume_unfinished(self) -> list[str]:
        """Jobs a previous run of the service left unfinished: list them, restart the active
        ones (the trainer resumes from its latest checkpoint); returns the ids restarted.

        Every active job is restarted, even beyond ``max_jobs`` (a limit lowered since): each
        was admitted under the limit of its time, and one left waiting would hold a slot with
        nothing running it. New jobs are refused until the count is under the limit again.
        A job whose cancel was requested is not restarted: its trainer is stopped (one may
        still run on Kubernetes) and it ends CANCELLED. A job that cannot be restarted ends
        FAILED (saved, logged); the others are resumed all the same."""
        keys = await asyncio.to_thread(
            lambda: [k for k in self.store.iter_keys("jobs/") if k.endswith("/job.json")])
        resumed = []
        for key in keys:
            try:
                record = json.loads(await asyncio.to_thread(self.store.get, key))
                snapshot = JobSnapshot(**{**record["snapshot"], "checkpoint": None,
                                          "preview": None})
                config = dict(record["config"])
            except (ValueError, KeyError, TypeError):
                log.warning("skipping the unreadable job record %s", key)
                continue
            except Exception as exc:  # the store: the service starts all the same
                log.error("cannot read the job record %s: %s", key, exc)
                continue
            if snapshot.job_id in self._jobs:
                continue
            job = _Job(snapshot, config)
            job.cancel_requested = bool(record.get("cancel_requested"))
            self._jobs[snapshot.job_id] = job
            if snapshot.state not in ACTIVE:
                continue
            if job.cancel_requested:
                log.info("job %s was being cancelled; stopping it", snapshot.job_id)
                job.task = asyncio.create_task(self._follow(job, stop_first=True),
                                               name=f"job-{snapshot.job_id[:8]}")
                continue
            try:
                await self._launch(job, message="resumed after a service restart")
            except Exception as exc:
                await self._failed_to_start(job, exc)
                continue
            resumed.append(snapshot.job_id)
        return resumed

    # --- following --------------------------------------------------------------------------

    async def _follow(self, job: _Job, *, stop_first: bool = False) -> None:
        """Follow the job's trainer until the job ends. The launcher being unavailable (the
        Kubernetes API down: a timeout, a 5xx) is waited out, polling less and less often,
        for up to ``lost_after`` seconds; then the job is given up. ``stop_first``: stop the
        trainer first (a cancel that came while it was being started)."""
        job_id = job.snapshot.job_id
        last_status = 0.0
        unavailable_since: float | None = None
        delay = self.poll_seconds
        try:
            if stop_first:
                await self._stop_quietly(job)
            while True:
                try:
                    events = await asyncio.to_thread(self.launcher.events, job_id)
                    if (self.launcher.events_in_store
                            and time.monotonic() - last_status > _STATUS_POLL_SECONDS):
                        last_status = time.monotonic()
                        events = await self._status_from_store(job)
                    for event in events:
                        await self._apply(job, event)
                    status = await asyncio.to_thread(self.launcher.poll, job_id)
                    if status != "running":
                        events = await asyncio.to_thread(self.launcher.events, job_id)
                        if self.launcher.events_in_store:  # its last word ("done") may be new
                            events = await self._status_from_store(job, strict=True)
                        for event in events:
                            await self._apply(job, event)
                        if not await self._ended(job, status):
                            return
                except Unavailable as exc:
                    now = time.monotonic()
                    if unavailable_since is None:
                        unavailable_since = now
                        log.warning("job %s: the launcher is unavailable (%s); retrying",
                                    job_id, exc)
                    elif now - unavailable_since >= self.lost_after:
                        raise _GaveUp(f"the launcher was unavailable for "
                                      f"{now - unavailable_since:.0f} s: {exc}") from exc
                    delay = min(delay * 2, _MAX_BACKOFF_SECONDS)
                else:
                    if unavailable_since is not None:
                        log.info("job %s: the launcher is available again", job_id)
                    unavailable_since, delay = None, self.poll_seconds
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the follower must never leave a job hanging in RUNNING
            log.error("following job %s failed", job_id, exc_info=exc)
            await self._stop_quietly(job)  # nobody follows it any more
            detail = str(exc) if isinstance(exc, _GaveUp) else f"{type(exc).__name__}: {exc}"
            await self._finish(job, "FAILED", eta_seconds=0.0, message=shorten(
                f"the service lost track of the trainer ({detail})", 2000))

    async def _stop_quietly(self, job: _Job) -> None:
        try:
            await asyncio.to_thread(self.launcher.stop, job.snapshot.job_id, grace=self.stop_grace)
        except Exception as exc:
            log.warning("cannot stop the trainer of job %s: %s", job.snapshot.job_id, exc)

    async def _status_from_store(self, job: _Job, *, strict: bool = False) -> list[dict]:
        """A Kubernetes job's latest event, which the trainer mirrors to the store. A store
        that fails is :class:`Unavailable` when ``strict``, else no event (the next poll reads
        it again)."""
        try:
            raw = await asyncio.to_thread(self.store.get, f"jobs/{job.snapshot.job_id}/status.json")
            event = json.loads(raw)
        except (NotFound, ValueError):
            return []
        except Exception as exc:
            if strict:
                raise Unavailable(f"cannot read the status of job {job.snapshot.job_id} from "
                                  f"the store: {exc}") from exc
            return []
        return [event] if isinstance(event, dict) else []

    async def _stored(self, key: str, step: int = 0, sha256: str = "") -> StoredRef:
        def look() -> StoredRef:
            info = self.store.stat(key)
            return StoredRef(key, info.uri, self.store.presign(info.uri), sha256 or info.sha256,
                             step)
        try:
            return await asyncio.to_thread(look)
        except Exception:  # the reference is still worth showing without a URL
            return StoredRef(key, step=step, sha256=sha256)

    async def _apply(self, job: _Job, event: dict) -> None:
        kind = event.get("event")
        step = int(event.get("step", job.snapshot.step) or 0)
        if kind == "progress":
            state = event.get("state", "RUNNING")
            await job.update(
                state=state if state in ACTIVE else "RUNNING", step=step,
                total=int(event.get("total", job.snapshot.total)),
                images_seen=int(event.get("images_seen", 0)),
                d_loss=_number(event, "d_loss"), g_loss=_number(event, "g_loss"),
                d_real_sign=_number(event, "d_real_sign"),
                steps_per_second=_number(event, "steps_per_second"),
                eta_seconds=_number(event, "eta_seconds"))
        elif kind == "checkpoint":
            ref = await self._stored(str(event["key"]), step, str(event.get("sha256", "")))
            await job.update(checkpoint=ref, step=max(step, job.snapshot.step))
        elif kind == "evaluation":
            await job.update(evaluation={"step": step, "metrics": dict(event.get("metrics", {}))},
                             state="RUNNING" if job.snapshot.state == "EVALUATING"
                             else job.snapshot.state)
        elif kind == "preview":
            await job.update(preview=await self._stored(str(event["key"]), step))
        elif kind in ("done", "stopped"):
            job.ended_with = kind
            if event.get("key"):
                ref = await self._stored(str(event["key"]), step, str(event.get("sha256", "")))
                await job.update(checkpoint=ref, step=max(step, job.snapshot.step))
        elif kind == "error":
            await job.update(message=shorten(event.get("message", ""), 500))

    async def _ended(self, job: _Job, status: str) -> bool:
        """The trainer exited: decide the job's fate. True when it was restarted."""
        if job.ended_with == "done" and status == "succeeded":
            await self._finish(job, "SUCCEEDED", step=job.snapshot.total, eta_seconds=0.0)
        elif job.cancel_requested:
            await self._finish(job, "CANCELLED", eta_seconds=0.0)
        elif job.snapshot.restarts < self.max_restarts:
            reason = ("stopped without being asked" if job.ended_with == "stopped"
                      else f"the trainer {status}")
            restarts = job.snapshot.restarts + 1
            log.warning("job %s: %s; restarting from its latest checkpoint (%d/%d)",
                        job.snapshot.job_id, reason, restarts, self.max_restarts)
            # Unavailable here: the follower tries again, and the restart counts once
            await asyncio.to_thread(self.launcher.start, job.snapshot.job_id, job.config)
            job.ended_with = None
            self.metrics.restarts.inc()
            await job.update(restarts=restarts, state="RUNNING",
                             message=f"{reason}; restarted from the latest checkpoint "
                                     f"({restarts}/{self.max_restarts})")
            await self._save(job)
            if job.cancel_requested:  # cancelled while the new trainer was being started
                await self._stop_quietly(job)
            return True
        else:
            tail = await asyncio.to_thread(getattr(self.launcher, "log_tail", lambda _id: ""),
                                           job.snapshot.job_id)
            await self._finish(job, "FAILED", message=shorten(
                f"the trainer {status} {job.snapshot.restarts} time(s) after restarts; "
                f"last log lines: {tail}", 2000))
        return False

    async def _finish(self, job: _Job, state: str, **changes) -> None:
        """End ``job`` in ``state`` (with ``changes`` to its snapshot): counted and saved."""
        await job.update(state=state, **changes)
        self.metrics.finished.labels(state).inc()
        await self._save(job)

    async def _save(self, job: _Job) -> None:
        snapshot = dataclasses.asdict(job.snapshot)
        record = {"config": job.config, "snapshot": snapshot,
                  "cancel_requested": job.cancel_requested}
        try:
            await asyncio.to_thread(
                self.store.put_at, f"jobs/{job.snapshot.job_id}/job.json",
                json.dumps(record, sort_keys=True).encode(), content_type="application/json")
        except Exception as exc:  # the job goes on; its record is written at the next change
            log.warning("cannot save the record of job %s: %s", job.snapshot.job_id, exc)

    # --- asking -----------------------------------------------------------------------------

    def _job(self, job_id: str) -> _Job:
        if not job_id:
            raise InvalidArgument("job_id is empty")
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {shorten(job_id)!r}")
        return job

    def get(self, job_id: str) -> JobSnapshot:
        return self._job(job_id).snapshot

    def list(self) -> list[JobSnapshot]:
        return [job.snapshot for job in self._jobs.values()]

    async def watch(self, job_id: str) -> AsyncIterator[JobSnapshot]:
        """The current state at once, then every change, until the job ends."""
        job = self._job(job_id)
        seen = -1
        while True:
            async with job.changed:
                await job.changed.wait_for(
                    lambda seen=seen: job.snapshot.version != seen)
                snapshot = job.snapshot
            seen = snapshot.version
            yield snapshot
            if snapshot.finished:
                return

    async def cancel(self, job_id: str) -> JobSnapshot:
        """Checkpoint, then stop; returns once the job has ended."""
        job = self._job(job_id)
        if job.snapshot.finished:
            return job.snapshot
        job.cancel_requested = True
        await self._save(job)  # a service restarted meanwhile does not resume it
        if (job.task is None or job.task.done()) and not job.starting:
            # nothing follows it (the service is stopping): stop what may run, end it here
            await self._stop_quietly(job)
            if not job.snapshot.finished:
                await self._finish(job, "CANCELLED", eta_seconds=0.0)
            return job.snapshot
        await asyncio.to_thread(self.launcher.stop, job_id, grace=self.stop_grace)
        async with job.changed:
            await job.changed.wait_for(lambda: job.snapshot.finished)
        return job.snapshot

    async def close(self) -> None:
        """Stop following; running trainers are stopped (they checkpoint) and resumed by the
        next start of the service."""
        for job in self._jobs.values():
            if job.task is not None:
                job.task.cancel()
        stop_all = getattr(self.launcher, "close", None)
        if stop_all is not None:
            await asyncio.to_thread(stop_all, self.stop_grace)


class _GaveUp(Exception):
    """The follower gave a job up (its launcher unavailable for too long)."""


def _number(event: dict, key: str) -> float:
    """A progress figure of a trainer's event: 0 when missing or null (the trainer writes NaN
    as null, and a progress event before the first step since a resume has no losses yet)."""
    value = event.get(key)
    return 0.0 if value is None else float(value)
