"""The SLO gate of ``dreamsuite loadtest --slo``: objectives a run must meet.

Syntax: objectives separated by commas, each ``METRIC OP VALUE`` with ``OP`` one of ``<``,
``<=``, ``>``, ``>=``::

    p95_total<30s, p99_first_update<5s, p95_ComputeGuideWeights<=50ms,
    error_rate<0.01, rejection_rate<5%, dreams_per_min>10, rps>=2

- ``p50|p90|p95|p99`` followed by ``_total`` (a dream, start to result), ``_first_update``
  (a dream's first update) or ``_METHOD`` (``Dream``, ``ComputeGuideWeights``,
  ``SelectNeurons``, ``Sample``); the value is a duration (``500ms``, ``30s``, ``2m``; a bare
  number is seconds);
- ``error_rate``, ``rejection_rate``: a fraction (``0.01``) or a percentage (``1%``);
- ``dreams_per_min``, ``rps``: a number.

A metric the run has no value for misses its objective: a latency when no call of its kind
succeeded (failed calls are never latencies), a rate when there were no calls at all.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dreamsuite.errors import InvalidArgument, shorten
from dreamsuite.loadtest.scenario import KINDS, METHODS, parse_duration

__all__ = ["Objective", "parse_slo", "evaluate", "SLO_HELP"]

SLO_HELP = ("objectives METRIC<VALUE separated by commas: p50|p90|p95|p99 with _total, "
            "_first_update or _METHOD (durations, e.g. 30s, 500ms), error_rate and "
            "rejection_rate (0.01 or 1%%), dreams_per_min, rps; operators < <= > >=")

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_CLAUSE = re.compile(r"^\s*([A-Za-z0-9_:\-]+)\s*(<=|>=|<|>)\s*(\S+)\s*$")
_LATENCY = re.compile(r"^p(50|90|95|99)(?:[_-](.+))?$", re.IGNORECASE)
_RATES = ("error_rate", "rejection_rate")
_COUNTS = ("dreams_per_min", "rps")
_VALID = ("p50|p90|p95|p99 with _total, _first_update or _METHOD; error_rate, rejection_rate, "
          "dreams_per_min, rps")


@dataclass(frozen=True)
class Objective:
    """One objective: ``metric`` (canonical, e.g. ``p95_total``), ``op``, ``threshold`` in the
    metric's unit (ms for latencies) and the ``text`` it was written as."""

    metric: str
    op: str
    threshold: float
    text: str

    @property
    def unit(self) -> str:
        if self.metric.startswith("p"):
            return "ms"
        return {"dreams_per_min": "/min", "rps": "/s"}.get(self.metric, "")

    def value(self, summary: Mapping[str, Any]) -> float | None:
        """The run's value of the metric (None when the run has none)."""
        if self.metric in _RATES or self.metric in _COUNTS:
            return summary.get(self.metric)
        quantile, _, what = self.metric.partition("_")
        if what in ("total", "first_update"):
            figures = summary["latency_ms"].get(what)
        else:
            figures = (summary["methods"].get(what) or {}).get("latency_ms")
        return None if not figures else figures.get(quantile)

    def check(self, summary: Mapping[str, Any]) -> dict[str, Any]:
        value = self.value(summary)
        passed = value is not None and _OPS[self.op](value, self.threshold)
        return {"objective": self.text, "metric": self.metric, "op": self.op,
                "threshold": self.threshold, "unit": self.unit, "value": value,
                "passed": passed}


def _metric(name: str, clause: str) -> str:
    lowered = name.lower()
    if lowered in _RATES or lowered in _COUNTS:
        return lowered
    match = _LATENCY.match(name)
    if match is None:
        raise InvalidArgument(f"--slo {clause!r}: unknown metric {name!r}; valid: {_VALID}")
    what = (match.group(2) or "total").replace("-", "_")
    methods = {m.lower(): m for m in METHODS.values()} | {k: METHODS[k] for k in KINDS}
    if what.lower() in ("total", "first_update"):
        what = what.lower()
    elif what.lower() in methods:
        what = "total" if methods[what.lower()] == "Dream" else methods[what.lower()]
    else:
        raise InvalidArgument(f"--slo {clause!r}: unknown latency {what!r}; use _total, "
                              f"_first_update or a method: {', '.join(METHODS.values())}")
    return f"p{match.group(1)}_{what}"


def _threshold(metric: str, text: str, clause: str) -> float:
    if metric.startswith("p"):
        return parse_duration(text, f"--slo {clause!r}") * 1000.0
    try:
        if metric in _RATES:
            value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
            if not 0 <= value <= 1:
                raise ValueError
            return value
        value = float(text)
        if not 0 <= value < float("inf"):
            raise ValueError
        return value
    except ValueError:
        kind = "a fraction (0.01) or percentage (1%)" if metric in _RATES else "a number"
        raise InvalidArgument(f"--slo {clause!r}: {text!r} is not {kind}") from None


def parse_slo(text: str) -> list[Objective]:
    """The objectives of an SLO spec; :class:`InvalidArgument` that names the bad part."""
    clauses = [c for c in str(text).split(",")]
    if not any(c.strip() for c in clauses):
        raise InvalidArgument(f"--slo: no objectives given; {SLO_HELP.replace('%%', '%')}")
    objectives = []
    for clause in clauses:
        if not clause.strip():
            raise InvalidArgument(f"--slo {shorten(str(text).strip())!r}: an empty objective "
                                  "(a comma too many?)")
        match = _CLAUSE.match(clause)
        if match is None:
            raise InvalidArgument(f"--slo {shorten(clause.strip())!r}: expected METRIC<VALUE "
                                  f"(operators < <= > >=), e.g. p95_total<30s or error_rate<0.01")
        name, op, value = match.groups()
        metric = _metric(name, clause.strip())
        threshold = _threshold(metric, value, clause.strip())
        if op == "<" and threshold <= 0:  # every metric is 0 or more
            raise InvalidArgument(f"--slo {clause.strip()!r}: can never be met ({metric} is "
                                  "never below 0)")
        objectives.append(Objective(metric, op, threshold, clause.strip()))
    return objectives


def evaluate(objectives: list[Objective], summary: Mapping[str, Any]) -> dict[str, Any]:
    """``{"passed", "checks": [...]}`` of the objectives against a summary."""
    checks = [o.check(summary) for o in objectives]
    return {"spec": ", ".join(o.text for o in objectives),
            "passed": all(c["passed"] for c in checks), "checks": checks}
