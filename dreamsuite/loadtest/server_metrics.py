"""Server-side figures of a load test, read from the services' Prometheus ``/metrics``.

:class:`ServerWatch` scrapes every URL before the run, samples the gauges while it runs
(``dream_queue_depth``, ``dream_in_flight``, summed over the URLs that answer, e.g. one per pod)
and scrapes again after it; the figures are the differences, over the URLs that answered both
before and after (a URL that failed one of them is left out and named in ``errors``): RPCs
started and handled by method and code (Go's code names turned back into gRPC's,
``InvalidArgument`` -> ``INVALID_ARGUMENT``, so they compare with the client's), handling-time
quantiles from ``grpc_server_handling_seconds``, and the count and mean of any ``*batch*``
histogram a service exports.
"""

from __future__ import annotations

import re
import urllib.request
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "Samples",
    "scrape",
    "grpc_code",
    "handled",
    "handling_buckets",
    "bucket_quantile",
    "bucket_bounds",
    "ServerWatch",
]

#: ``{(sample name, sorted label pairs): value}`` of one scrape.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

_GAUGES = {"queue_depth": "dream_queue_depth", "in_flight": "dream_in_flight"}
_GO_NAMES = {"OK": "OK", "Canceled": "CANCELLED"}


def scrape(url: str, timeout: float = 5.0) -> Samples:
    """Every sample at ``url`` (Prometheus text format)."""
    with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 (an http URL)
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def grpc_code(go_name: str) -> str:
    """gRPC's name of a status code from Go's (``DeadlineExceeded`` -> ``DEADLINE_EXCEEDED``)."""
    return _GO_NAMES.get(go_name) or re.sub(r"(?<!^)(?=[A-Z])", "_", go_name).upper()


def _delta(before: Samples, after: Samples, name: str) -> dict[tuple, float]:
    return {labels: value - before.get((n, labels), 0.0)
            for (n, labels), value in after.items() if n == name}


def handled(before: Samples, after: Samples) -> dict[str, dict[str, float]]:
    """RPCs handled between two scrapes: ``{method: {CODE: count}}`` (non-zero only)."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for labels, value in _delta(before, after, "grpc_server_handled_total").items():
        label = dict(labels)
        if value:
            code = grpc_code(label["grpc_code"])
            out[label["grpc_method"]][code] = out[label["grpc_method"]].get(code, 0) + value
    return {m: dict(sorted(c.items())) for m, c in sorted(out.items())}


def handling_buckets(before: Samples, after: Samples, method: str) -> list[tuple[float, float]]:
    """Cumulative ``(upper bound s, count)`` of ``grpc_server_handling_seconds`` for
    ``method`` between two scrapes, ascending (the last bound is ``inf``)."""
    counts: dict[float, float] = defaultdict(float)
    for labels, value in _delta(before, after, "grpc_server_handling_seconds_bucket").items():
        label = dict(labels)
        if label.get("grpc_method") == method:
            counts[float(label["le"])] += value
    return sorted(counts.items())


def bucket_bounds(buckets: Sequence[tuple[float, float]], q: float) -> tuple[float, float] | None:
    """The bounds ``(lower, upper)`` in seconds of the bucket holding the ``q`` quantile."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower = 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank and cumulative > 0:
            return lower, bound
        lower = bound
    return lower, buckets[-1][0]


def bucket_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """The ``q`` quantile in seconds, interpolated inside its bucket as Prometheus'
    ``histogram_quantile`` does (the highest finite bound when it falls in ``+Inf``)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank and cumulative > 0:
            if bound == float("inf"):
                return lower
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return lower


def _histograms(before: Samples, after: Samples, pattern: str) -> dict[str, dict[str, float]]:
    out = {}
    names = {n[: -len("_count")] for n, _ in after if n.endswith("_count") and re.search(pattern, n)}
    for name in sorted(names):
        count = sum(_delta(before, after, f"{name}_count").values())
        total = sum(_delta(before, after, f"{name}_sum").values())
        if count:
            out[name] = {"count": count, "mean": total / count}
    return out


class ServerWatch:
    """Follows the ``/metrics`` URLs of the services under load through one run."""

    def __init__(self, urls: Sequence[str], timeout: float = 5.0):
        self.urls = list(urls)
        self.timeout = timeout
        self.errors: list[str] = []
        self.baseline: dict[str, Samples] = {}
        self.before: Samples = {}
        self.gauges: dict[str, list[float]] = {key: [] for key in _GAUGES}

    def _scrape_each(self) -> dict[str, Samples]:
        """The samples of every URL that answered (the others go to ``errors``)."""
        out = {}
        for url in self.urls:
            try:
                out[url] = scrape(url, self.timeout)
            except (OSError, ValueError) as exc:
                self.errors.append(f"{url}: {exc}")
        return out

    def start(self) -> None:
        """The baseline: each URL's counters before the run."""
        self.baseline = self._scrape_each()

    def poll(self) -> None:
        """Sample the gauges once (call every second or so while the run goes on), summed
        over the URLs that answered."""
        for key, name in _GAUGES.items():
            values = [v for samples in self._scrape_each().values()
                      for (n, _), v in samples.items() if n == name]
            if values:
                self.gauges[key].append(sum(values))

    def finish(self) -> dict[str, Any]:
        """The server's figures for the run: the counters' differences over the URLs that
        answered both before and after the run (a URL without a baseline would count its
        whole lifetime; it is left out and ``errors`` says so)."""
        last = self._scrape_each()
        for url in self.urls:
            if url in last and url not in self.baseline:
                self.errors.append(f"{url}: no scrape before the run, so its counts are left "
                                   "out")
        both = [url for url in self.urls if url in self.baseline and url in last]
        self.before, after = _merged(self.baseline, both), _merged(last, both)
        methods = sorted({dict(labels)["grpc_method"] for (n, labels) in after
                          if n == "grpc_server_handling_seconds_bucket"})
        handling = {}
        for method in methods:
            buckets = handling_buckets(self.before, after, method)
            if buckets and buckets[-1][1] > 0:
                handling[method] = {"count": buckets[-1][1], **{
                    f"p{round(q * 100)}": round(1000 * bucket_quantile(buckets, q), 3)
                    for q in (0.5, 0.9, 0.95, 0.99)}}
        started = defaultdict(float)
        for labels, value in _delta(self.before, after, "grpc_server_started_total").items():
            if value:
                started[dict(labels)["grpc_method"]] += value
        return {
            "urls": self.urls,
            "started": dict(sorted(started.items())),
            "handled": handled(self.before, after),
            "handling_ms": handling,
            **{key: _gauge(values) for key, values in self.gauges.items()},
            "batch_sizes": _histograms(self.before, after, r"batch"),
            "errors": list(dict.fromkeys(self.errors)),
        }


def _merged(samples: Mapping[str, Samples], urls: Sequence[str]) -> Samples:
    """The samples of ``urls`` added up (one pod each, say)."""
    merged: Samples = defaultdict(float)
    for url in urls:
        for key, value in samples[url].items():
            merged[key] += value
    return dict(merged)


def _gauge(values: Sequence[float]) -> Mapping[str, float] | None:
    if not values:
        return None
    return {"max": max(values), "mean": round(sum(values) / len(values), 4),
            "samples": len(values)}
