"""The ``guide_*`` metric families of the guide service (on a registry the server owns)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["GuideMetrics"]

_BACKEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GuideMetrics:
    """Cache hits and misses, activation-backend call latency and errors."""

    def __init__(self, registry: CollectorRegistry, backend: str):
        self.backend = backend
        self.cache_hits = Counter("guide_cache_hits_total",
                                  "Layer statistics answered from the cache.", ["backbone"],
                                  registry=registry)
        self.cache_misses = Counter("guide_cache_misses_total",
                                    "Layer statistics that needed the activation backend.",
                                    ["backbone"], registry=registry)
        self.backend_seconds = Histogram(
            "guide_backend_call_seconds",
            "Activation-backend (TorchServe or in-process) call latency, per attempt.",
            ["backend", "outcome"], buckets=_BACKEND_BUCKETS, registry=registry)
        self.backend_errors = Counter(
            "guide_backend_errors_total",
            "Activation-backend call attempts that failed (unavailable or error).",
            ["backend", "outcome"], registry=registry)

    def observe_call(self, outcome: str, seconds: float) -> None:
        """The backends' ``observe`` hook: one call attempt and how it ended."""
        kind = "torchserve" if self.backend.startswith("torchserve") else self.backend
        self.backend_seconds.labels(kind, outcome).observe(seconds)
        if outcome != "ok":
            self.backend_errors.labels(kind, outcome).inc()
