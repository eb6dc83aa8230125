"""The job manager when things go wrong around the trainer: a launcher that cannot start it, a
Kubernetes API that is briefly down, a trainer that ends right after its last status, a cancel
during a restart or across a service restart. The Kubernetes cases use the real
:class:`KubernetesLauncher` against the fake API server of ``test_kube``; the others a small
in-test launcher whose trainers run until stopped."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from dreamsuite.artifacts import open_store
from dreamsuite.errors import Unavailable
from services.gan.jobs import JobManager
from services.gan.kube import KubernetesLauncher
from services.gan.manifests import job_name
from services.gan.metrics import GanMetrics
from tests.gan_service.test_kube import IMAGE, JOBS, NS, TOKEN, FakeApi

CONFIG = {"dataset": "d" * 16, "model": "dcgan64", "steps": 10}


class Trainers:
    """A launcher whose trainers run until stopped (then they say "stopped" and exit 0) or until
    the test ends them. ``start_gate``: a start waits for it (a slow spawn); ``fail_start``:
    job id -> the error its start raises."""

    events_in_store = False

    def __init__(self):
        self.state: dict[str, str] = {}
        self.pending: dict[str, list[dict]] = {}
        self.starts: list[str] = []
        self.stops: list[str] = []
        self.fail_start: dict[str, Exception] = {}
        self.start_gate: threading.Event | None = None
        self.stop_gate: threading.Event | None = None

    def start(self, job_id: str, config: dict) -> None:
        self.starts.append(job_id)
        if self.start_gate is not None:
            assert self.start_gate.wait(10)
        if job_id in self.fail_start:
            raise self.fail_start[job_id]
        self.state[job_id] = "running"

    def poll(self, job_id: str) -> str:
        return self.state.get(job_id, "missing")

    def stop(self, job_id: str, *, grace: float) -> None:
        self.stops.append(job_id)
        if self.stop_gate is not None:
            assert self.stop_gate.wait(10)
        if self.state.get(job_id) == "running":
            self.pending.setdefault(job_id, []).append({"event": "stopped"})
            self.state[job_id] = "succeeded"

    def events(self, job_id: str) -> list[dict]:
        return self.pending.pop(job_id, [])


def _manager(store, launcher, **options) -> JobManager:
    options = {"poll_seconds": 0.02, "stop_grace": 1.0, **options}
    return JobManager(store, launcher, GanMetrics(CollectorRegistry()), **options)


async def _until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def _last(jobs: JobManager, job_id: str):
    """The job's snapshot once it has ended."""
    async for snapshot in jobs.watch(job_id):
        last = snapshot
    return last


def _record(store, job_id: str) -> dict:
    return json.loads(store.get(f"jobs/{job_id}/job.json"))


@pytest.fixture
def store(tmp_path):
    return open_store(tmp_path / "store")


@pytest.fixture
def kube(api) -> KubernetesLauncher:
    return KubernetesLauncher(IMAGE, NS, api_url=api.url, token=TOKEN, timeout=5, environ={})


def _complete(api: FakeApi, job_id: str) -> None:
    api.job(job_name(job_id))["status"] = {
        "succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}


# --- a job never left active with nothing running it ------------------------------------------

def test_a_job_whose_trainer_cannot_start_fails_and_frees_its_slot(store, api, kube):
    async def main():
        jobs = _manager(store, kube, max_jobs=1)
        api.fail[("POST", "jobs")] = (503, "etcd is down")
        with pytest.raises(Unavailable, match="etcd is down"):
            await jobs.start(CONFIG)
        [failed] = jobs.list()
        assert failed.state == "FAILED" and "could not be started" in failed.message
        assert "etcd is down" in failed.message
        assert _record(store, failed.job_id)["snapshot"]["state"] == "FAILED"
        del api.fail[("POST", "jobs")]  # the API is back: the slot is free
        job_id = await jobs.start(CONFIG)
        assert jobs.get(job_id).state == "RUNNING"
        await jobs.close()

    asyncio.run(main())


def test_every_unfinished_job_resumes_and_one_that_cannot_does_not_stop_the_rest(store):
    for job_id in ("job0", "job1", "job2"):
        snapshot = {"job_id": job_id, "dataset": CONFIG["dataset"], "model": CONFIG["model"],
                    "state": "RUNNING", "total": 10}
        store.put_at(f"jobs/{job_id}/job.json", json.dumps(
            {"config": {**CONFIG, "job_id": job_id}, "snapshot": snapshot}).encode())
    trainers = Trainers()
    trainers.fail_start["job1"] = Unavailable("the Kubernetes API is unreachable")

    async def main():
        jobs = _manager(store, trainers, max_jobs=1)
        assert await jobs.resume_unfinished() == ["job0", "job2"]
        assert trainers.state == {"job0": "running", "job2": "running"}
        assert jobs.get("job1").state == "FAILED"
        assert "unreachable" in _record(store, "job1")["snapshot"]["message"]
        cancelled = await asyncio.wait_for(jobs.cancel("job2"), 5)  # beyond max_jobs: followed
        assert cancelled.state == "CANCELLED" and trainers.state["job2"] == "succeeded"
        await jobs.close()

    asyncio.run(main())


def test_a_job_nobody_follows_any_more_is_cancelled_at_once(store):
    trainers = Trainers()

    async def main():
        jobs = _manager(store, trainers)
        job_id = await jobs.start(CONFIG)
        await jobs.close()  # the service stops: its followers end
        await asyncio.sleep(0.1)
        ended = await asyncio.wait_for(jobs.cancel(job_id), 5)
        assert ended.state == "CANCELLED"
        assert _record(store, job_id)["snapshot"]["state"] == "CANCELLED"
        assert trainers.stops[-1] == job_id

    asyncio.run(main())


# --- Kubernetes: an API hiccup, a trainer's last word -------------------------------------------

def test_a_kubernetes_api_briefly_down_is_waited_out(store, api, kube):
    async def main():
        jobs = _manager(store, kube, max_restarts=0)
        job_id = await jobs.start(CONFIG)
        api.fail[("GET", "jobs")] = (503, "etcd is down")
        await _until(lambda: api.calls().count(("GET", f"{JOBS}/{job_name(job_id)}")) >= 3)
        assert jobs.get(job_id).state == "RUNNING"
        del api.fail[("GET", "jobs")]
        store.put_at(f"jobs/{job_id}/status.json", json.dumps({"event": "done", "step": 10}).encode())
        _complete(api, job_id)
        snapshot = await _last(jobs, job_id)
        assert snapshot.state == "SUCCEEDED" and snapshot.restarts == 0
        await jobs.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_kubernetes_api_down_for_too_long_fails_the_job_and_stops_its_trainer(store, api, kube):
    async def main():
        jobs = _manager(store, kube, lost_after=0.5)
        job_id = await jobs.start(CONFIG)
        api.fail[("GET", "jobs")] = (503, "etcd is down")
        snapshot = await _last(jobs, job_id)
        assert snapshot.state == "FAILED"
        assert "unavailable" in snapshot.message and "etcd is down" in snapshot.message
        assert ("DELETE", f"{JOBS}/{job_name(job_id)}") in api.calls()
        await jobs.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_kubernetes_job_that_ends_right_after_its_done_status_succeeds(store, api, kube):
    async def main():
        jobs = _manager(store, kube, max_restarts=0)
        job_id = await jobs.start(CONFIG)
        await asyncio.sleep(0.3)  # its status was read; the next read is seconds away
        store.put_at(f"jobs/{job_id}/status.json", json.dumps({"event": "done", "step": 10}).encode())
        _complete(api, job_id)
        snapshot = await _last(jobs, job_id)
        assert snapshot.state == "SUCCEEDED" and snapshot.step == 10
        assert [c for c in api.calls() if c[0] == "POST" and c[1] == JOBS] == [("POST", JOBS)]
        await jobs.close()

    asyncio.run(asyncio.wait_for(main(), 30))


# --- a cancelled job stays cancelled ------------------------------------------------------------

def test_a_cancel_during_a_restart_stops_the_new_trainer(store):
    trainers = Trainers()
    trainers.start_gate = threading.Event()
    trainers.start_gate.set()

    async def main():
        jobs = _manager(store, trainers)
        job_id = await jobs.start(CONFIG)
        trainers.start_gate.clear()
        trainers.state[job_id] = "failed"  # it crashes; the follower restarts it (slowly)
        await _until(lambda: len(trainers.starts) == 2)
        cancel = asyncio.create_task(jobs.cancel(job_id))
        await _until(lambda: job_id in trainers.stops)  # nothing to stop yet
        trainers.start_gate.set()
        ended = await asyncio.wait_for(cancel, 5)
        assert ended.state == "CANCELLED" and trainers.state[job_id] == "succeeded"
        assert trainers.stops == [job_id, job_id]
        await jobs.close()

    try:
        asyncio.run(main())
    finally:
        trainers.start_gate.set()


def test_a_cancel_interrupted_by_a_service_restart_is_honoured(store):
    first = Trainers()
    first.stop_gate = threading.Event()  # the trainer checkpoints, slowly

    async def main():
        jobs = _manager(store, first)
        job_id = await jobs.start(CONFIG)
        cancel = asyncio.create_task(jobs.cancel(job_id))
        await _until(lambda: first.stops == [job_id])
        cancel.cancel()
        await jobs.close()  # a rolling update, mid-cancel
        assert _record(store, job_id)["cancel_requested"] is True
        first.stop_gate.set()

        second = Trainers()
        again = _manager(store, second)
        assert await again.resume_unfinished() == []
        snapshot = await _last(again, job_id)
        assert snapshot.state == "CANCELLED" and second.starts == []
        assert second.stops == [job_id]  # on Kubernetes its Job may still run
        await _until(lambda: _record(store, job_id)["snapshot"]["state"] == "CANCELLED")
        await again.close()

    try:
        asyncio.run(main())
    finally:
        first.stop_gate.set()
