"""The GAN service reads a trainer's progress events whatever figures they lack."""

from __future__ import annotations

import asyncio
import json
import math

from dreamsuite.gan.job import _finite
from services.gan.jobs import JobManager, JobSnapshot, _Job


def _applied(event: dict) -> JobSnapshot:
    async def run() -> JobSnapshot:
        job = _Job(JobSnapshot(job_id="j", dataset="d", model="dcgan64", total=100), {})
        # Progress events touch only the job: no manager state is needed.
        await JobManager._apply(None, job, event)
        return job.snapshot

    return asyncio.run(run())


def test_a_progress_event_with_null_losses_and_rates_keeps_the_job_followed():
    """A resumed trainer's first progress event has no losses yet, and NaN rates arrive as
    null (JSON has no NaN): both read as 0, not as the end of the job (a TypeError there
    made the service report a resumed job lost)."""
    event = json.loads(json.dumps(_finite({
        "event": "progress", "state": "RUNNING", "step": 12, "total": 100, "images_seen": 384,
        "d_loss": None, "g_loss": None, "d_real_sign": None,
        "steps_per_second": math.nan, "eta_seconds": math.nan})))
    assert event["d_loss"] is None and event["steps_per_second"] is None
    snapshot = _applied(event)
    assert (snapshot.step, snapshot.images_seen, snapshot.state) == (12, 384, "RUNNING")
    assert snapshot.d_loss == snapshot.g_loss == snapshot.steps_per_second == 0.0
    assert snapshot.eta_seconds == 0.0


def test_a_progress_event_with_figures_sets_them():
    snapshot = _applied({"event": "progress", "step": 5, "total": 100, "d_loss": 0.5,
                         "g_loss": 1.5, "d_real_sign": 0.25, "steps_per_second": 2.0,
                         "eta_seconds": 47.5})
    assert (snapshot.d_loss, snapshot.g_loss, snapshot.d_real_sign) == (0.5, 1.5, 0.25)
    assert (snapshot.steps_per_second, snapshot.eta_seconds) == (2.0, 47.5)
