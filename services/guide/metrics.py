"""The ``guide_*`` metric families of the guide service (on a registry the server owns)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from dreamsuite.v1 import activations_pb2 as pb

__all__ = ["GuideMetrics"]

_BACKEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


class GuideMetrics:
    """Cache hits and misses, activation-backend call latency and errors, and how many
    requests shared the backend's batches and forward passes."""

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
        # "batch" in both names: the load tester reports every *batch* histogram it scrapes.
        self.batch_size = Histogram(
            "guide_backend_batch_size",
            "Requests in the backend batch that answered a call, the call included "
            "(TorchServe's dynamic batch; 1 in-process).",
            ["backend"], buckets=_BATCH_BUCKETS, registry=registry)
        self.batch_shared_forward = Histogram(
            "guide_backend_batch_shared_forward",
            "Requests that shared the forward pass that answered a call, the call included "
            "(same image size and layers within a batch).",
            ["backend"], buckets=_BATCH_BUCKETS, registry=registry)

    @property
    def _kind(self) -> str:
        return "torchserve" if self.backend.startswith("torchserve") else self.backend

    def observe_response(self, response: pb.ActivationsResponse) -> None:
        """The batch figures of one backend response (those it reports: a handler older than
        the fields reports 0, a failed request no forward pass)."""
        if response.batch_size:
            self.batch_size.labels(self._kind).observe(response.batch_size)
        if response.shared_forward:
            self.batch_shared_forward.labels(self._kind).observe(response.shared_forward)

    def observe_call(self, outcome: str, seconds: float) -> None:
        """The backends' ``observe`` hook: one call attempt and how it ended."""
        kind = self._kind
        self.backend_seconds.labels(kind, outcome).observe(seconds)
        if outcome != "ok":
            self.backend_errors.labels(kind, outcome).inc()
