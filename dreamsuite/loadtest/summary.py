"""The figures of a load test, computed from the snapshot of Locust's statistics that the Locust
process writes (plain data: nothing here imports Locust or grpc).

A snapshot has ``duration_s`` and ``entries`` (per call name: ``num_requests``,
``num_failures``, ``total_response_time``, ``max_response_time`` in ms, ``response_times``
(Locust's histogram: ms rounded by :func:`bucket_ms` -> count) and ``total_content_length``),
``errors`` (per call name and error text ``CODE: details``: ``occurrences``) and
``bytes_sent`` per call name.
Call names follow :mod:`dreamsuite.loadtest.calls`: ``Dream`` (OK calls), ``Dream:failed``,
``Dream:rejected``, ``Dream:first-update``, ``ComputeGuideWeights``, ...

Definitions: ``requests`` are all calls that ended (``ok + failures + rejected``); ``rejected``
are ``RESOURCE_EXHAUSTED`` answers, counted apart from ``failures`` (every other non-OK code);
``error_rate = failures / requests`` and ``rejection_rate = rejected / requests`` (None when
there were no requests: no value, so an SLO on them misses); latencies are of successful calls
only (None when there were none), by Locust's rule for percentiles, so they match its CSV and
HTML report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from dreamsuite.loadtest.calls import FAILED, FIRST_UPDATE, REJECTED, code_of
from dreamsuite.loadtest.scenario import KINDS, METHODS

__all__ = ["PERCENTILES", "bucket_ms", "percentile", "latency", "summarise", "format_table"]

PERCENTILES = (0.50, 0.90, 0.95, 0.99)
_ORDER = [METHODS[k] for k in KINDS]


def bucket_ms(response_time: float) -> int:
    """A response time (ms) as the Locust process keeps it in its histograms (it replaces
    ``locust.stats.bucket_response_time``): to the millisecond below 1 s, to 3 significant
    digits above (1,234 -> 1,230; 29,550 -> 29,600), so a percentile is within 0.5 % of the
    times measured. Locust's own rounding keeps 2 significant digits (100 ms steps from 1 s,
    1 s steps from 10 s: dreams of 29.55 s made p95 30 s and missed ``p95_total<30s``)."""
    if response_time < 1000:
        return round(response_time)
    return int(round(response_time, 3 - len(str(int(response_time)))))


def percentile(histogram: Mapping[float, int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a ``{time: count}`` histogram by Locust's rule
    (``locust.stats.calculate_response_time_percentile``, so the figures match its CSV and
    HTML report): walking down from the slowest time, the first time at which no more than
    ``int(n * q)`` calls are left. None when the histogram is empty."""
    total = sum(histogram.values())
    if total == 0:
        return None
    keep = int(total * q)
    seen = 0
    for value in sorted(histogram, reverse=True):
        seen += histogram[value]
        if total - seen <= keep:
            return float(value)
    return float(min(histogram))


def latency(entry: Mapping[str, Any] | None) -> dict[str, float] | None:
    """``count``, ``mean``, ``max`` and ``p50``/``p90``/``p95``/``p99`` (ms) of an entry."""
    if not entry or not entry["num_requests"]:
        return None
    histogram = {float(k): int(v) for k, v in entry["response_times"].items()}
    figures: dict[str, float] = {
        "count": entry["num_requests"],
        "mean": round(entry["total_response_time"] / entry["num_requests"], 3),
        "max": round(float(entry["max_response_time"] or 0), 3),
    }
    for q in PERCENTILES:
        figures[f"p{round(q * 100)}"] = percentile(histogram, q)
    return figures


def _codes(errors: list[Mapping[str, Any]], names: tuple[str, ...]) -> Counter[str]:
    codes: Counter[str] = Counter()
    for error in errors:
        if error["name"] in names:
            codes[code_of(error["error"])] += int(error["occurrences"])
    return codes


def _method(name: str, entries: Mapping[str, Mapping], errors: list, sent: Mapping[str, int],
            duration: float) -> dict[str, Any]:
    succeeded, failed, rejected = (entries.get(name), entries.get(name + FAILED),
                                   entries.get(name + REJECTED))
    ok = succeeded["num_requests"] if succeeded else 0
    failures = failed["num_requests"] if failed else 0
    n_rejected = rejected["num_requests"] if rejected else 0
    codes = _codes(errors, (name, name + FAILED, name + REJECTED))
    if ok:
        codes["OK"] = ok
    requests = ok + failures + n_rejected
    figures = {
        "requests": requests, "ok": ok, "failures": failures,
        "rejected": n_rejected, "rps": round(requests / duration, 4) if duration else 0.0,
        "bytes_sent": sum(int(sent.get(name + suffix, 0)) for suffix in ("", FAILED, REJECTED)),
        "bytes_received": sum(int(e["total_content_length"])
                              for e in (succeeded, failed, rejected) if e),
        "codes": dict(sorted(codes.items())),
        "latency_ms": latency(succeeded),
    }
    if name == "Dream":
        figures["first_update_ms"] = latency(entries.get(name + FIRST_UPDATE))
    return figures


def _base_name(name: str) -> str:
    for suffix in (FIRST_UPDATE, FAILED, REJECTED):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def summarise(snapshot: Mapping[str, Any], *, server: Mapping[str, Any] | None = None,
              slo: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every figure of the run (see the module's docstring); ``server`` and ``slo`` are
    included as given (:mod:`~dreamsuite.loadtest.server_metrics`, :mod:`~.slo`)."""
    duration = float(snapshot["duration_s"])
    entries = {e["name"]: e for e in snapshot["entries"]}
    names = {_base_name(n) for n in entries}
    names = sorted(names, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))
    methods = {n: _method(n, entries, snapshot["errors"], snapshot.get("bytes_sent", {}),
                          duration) for n in names}
    total = Counter()
    codes: Counter[str] = Counter()
    for figures in methods.values():
        total.update({k: figures[k] for k in ("requests", "ok", "failures", "rejected",
                                              "bytes_sent", "bytes_received")})
        codes.update(figures["codes"])
    requests = total["requests"]
    dream = methods.get("Dream")
    dreams = dream["ok"] if dream else 0
    return {
        "targets": dict(snapshot.get("targets", {})),
        "mode": snapshot.get("mode", "local"), "workers": snapshot.get("workers", 0),
        "users": snapshot.get("users"), "duration_s": round(duration, 3),
        "stopped_by": snapshot.get("stopped_by"),
        "dreams": dreams,
        "dreams_per_min": round(60.0 * dreams / duration, 4) if duration else 0.0,
        "requests": requests, "ok": total["ok"], "failures": total["failures"],
        "rejected": total["rejected"],
        "error_rate": round(total["failures"] / requests, 6) if requests else None,
        "rejection_rate": round(total["rejected"] / requests, 6) if requests else None,
        "rps": round(requests / duration, 4) if duration else 0.0,
        "bytes_sent": total["bytes_sent"], "bytes_received": total["bytes_received"],
        "codes": dict(sorted(codes.items())),
        "latency_ms": {"total": dream["latency_ms"] if dream else None,
                       "first_update": dream["first_update_ms"] if dream else None},
        "methods": methods,
        "load_tester_exceptions": list(snapshot.get("exceptions", [])),
        "server": dict(server) if server is not None else None,
        "slo": dict(slo) if slo is not None else None,
    }


# --- the table ----------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f}s" if value >= 10_000 else f"{value:.0f}"


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _bytes(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return str(count)


def _row(name: str, m: Mapping[str, Any] | None, lat: Mapping[str, Any] | None) -> str:
    counts = (f"{m['requests']:>7} {m['ok']:>7} {m['failures']:>6} {m['rejected']:>6} "
              f"{m['rps']:>7.2f}" if m else f"{'':>7} {'':>7} {'':>6} {'':>6} {'':>7}")
    lat = lat or {}
    times = " ".join(f"{_ms(lat.get(p)):>7}" for p in ("p50", "p90", "p95", "p99"))
    return f"{name:<24} {counts} {times}"


def format_table(summary: Mapping[str, Any]) -> str:
    """The summary as a few lines of text (latencies in ms unless marked s)."""
    targets = ", ".join(f"{k} {v}" for k, v in summary["targets"].items() if v)
    on = f" on {summary['workers']} workers" if summary.get("workers") else ""
    lines = [f"{summary['users']} users{on}, {summary['duration_s']:.1f} s "
             f"(stopped by {summary['stopped_by']}); {targets}",
             f"{'':<24} {'calls':>7} {'ok':>7} {'failed':>6} {'rejctd':>6} {'rps':>7} "
             f"{'p50':>7} {'p90':>7} {'p95':>7} {'p99':>7}"]
    for name, m in summary["methods"].items():
        lines.append(_row(name, m, m["latency_ms"]))
        if name == "Dream":
            lines.append(_row("  first update", None, m.get("first_update_ms")))
    lines.append(f"dreams {summary['dreams']} ({summary['dreams_per_min']:.2f}/min), "
                 f"{summary['requests']} calls ({summary['rps']:.2f}/s), error rate "
                 f"{_rate(summary['error_rate'])}, rejected {_rate(summary['rejection_rate'])}, "
                 f"sent {_bytes(summary['bytes_sent'])}, received "
                 f"{_bytes(summary['bytes_received'])}")
    lines.append("status codes: " + ", ".join(f"{c} {n}" for c, n in summary["codes"].items()))
    for exc in summary["load_tester_exceptions"]:
        lines.append(f"load tester exception ({exc['count']}x): {exc['msg']}")
    server = summary.get("server")
    if server:
        lines.extend(_server_lines(server))
    slo = summary.get("slo")
    if slo:
        for check in slo["checks"]:
            value = ("n/a" if check["value"] is None
                     else f"{check['value']:g} {check['unit']}".rstrip())
            lines.append(f"SLO {check['objective']}: {value} "
                         f"{'ok' if check['passed'] else 'MISSED'}")
    return "\n".join(lines)


def _server_lines(server: Mapping[str, Any]) -> list[str]:
    lines = []
    for method, codes in server.get("handled", {}).items():
        lines.append(f"server handled {method}: "
                     + ", ".join(f"{c} {n:g}" for c, n in codes.items()))
    for gauge in ("queue_depth", "in_flight"):
        g = server.get(gauge)
        if g:
            lines.append(f"server {gauge.replace('_', ' ')}: max {g['max']:g}, mean {g['mean']:.2f}")
    for name, b in (server.get("batch_sizes") or {}).items():
        lines.append(f"server {name}: {b['count']:g} batches, mean {b['mean']:.2f}")
    for error in server.get("errors", []):
        lines.append(f"server metrics: {error}")
    return lines
