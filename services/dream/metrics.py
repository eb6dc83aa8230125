"""The ``dream_*`` metric families of the dream service (on a registry the server owns)."""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Iterator

import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.common.telemetry import HANDLING_BUCKETS

__all__ = ["DreamMetrics"]


class DreamMetrics:
    """The ``dream_*`` families of the dream service."""

    def __init__(self, registry: CollectorRegistry):
        self.octave_seconds = Histogram(
            "dream_octave_seconds", "Time to dream one octave (all its steps).",
            ["backbone"], buckets=HANDLING_BUCKETS, registry=registry)
        self.job_seconds = Histogram(
            "dream_job_seconds", "Time a job spent on the device worker, by backbone, kind "
            "(dream, reconstruct, stylize) and outcome (ok, cancelled, error).",
            ["backbone", "kind", "outcome"], buckets=HANDLING_BUCKETS, registry=registry)
        self.queue_depth = Gauge("dream_queue_depth", "Dreams waiting for the device worker.",
                                 registry=registry)
        self.in_flight = Gauge("dream_in_flight", "Dreams running on the device worker.",
                               registry=registry)
        self.rejected = Counter("dream_rejected_total",
                                "Dreams refused because the queue was full.", registry=registry)
        self.dropped = Counter(
            "dream_dropped_total", "Queued dreams dropped before they started, by reason "
            "(cancelled: the caller went away; deadline: the call's deadline passed).",
            ["reason"], registry=registry)
        self.batch_size = Histogram(
            "dream_batch_size", "Dreams stepped together as one batch on a device worker.",
            buckets=(1, 2, 4, 8, 16, 32), registry=registry)
        self.device_memory = Gauge(
            "dream_device_memory_bytes",
            "Device memory: CUDA allocated/peak bytes, or the process's peak RSS on the CPU.",
            ["device", "kind"], registry=registry)
        self.one_pass_seconds = Histogram(
            "dream_one_pass_seconds", "One-pass dreams (a trained model on TorchServe), end to "
            "end, by model (\"other\" until a model has answered once) and outcome (ok, error).",
            ["model", "outcome"],
            buckets=HANDLING_BUCKETS, registry=registry)
        self.store_seconds = Histogram(
            "dream_artifact_store_seconds", "Artifact-store call latency.", ["operation"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry)
        self.store_errors = Counter("dream_artifact_store_errors_total",
                                    "Artifact-store calls that failed (after retries).",
                                    ["operation"], registry=registry)

    @contextlib.contextmanager
    def store_call(self, operation: str) -> Iterator[None]:
        """Time one artifact-store call; count it as an error if it raises."""
        start = time.perf_counter()
        try:
            yield
        except BaseException:
            self.store_errors.labels(operation).inc()
            raise
        finally:
            self.store_seconds.labels(operation).observe(time.perf_counter() - start)

    def sample_device_memory(self, device: torch.device) -> None:
        """Record the memory of ``device`` (a :class:`torch.device`)."""
        if device.type == "cuda":
            self.device_memory.labels(str(device), "allocated").set(
                torch.cuda.memory_allocated(device))
            self.device_memory.labels(str(device), "peak").set(
                torch.cuda.max_memory_allocated(device))
            return
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.device_memory.labels(str(device), "peak").set(
            peak if sys.platform == "darwin" else peak * 1024)
