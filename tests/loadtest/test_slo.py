"""The SLO gate's syntax, units and verdicts."""

from __future__ import annotations

import pytest

from dreamsuite.errors import InvalidArgument
from dreamsuite.loadtest.slo import evaluate, parse_slo


def _summary(**figures):
    base = {
        "error_rate": 0.02, "rejection_rate": 0.1, "dreams_per_min": 12.0, "rps": 3.5,
        "latency_ms": {"total": {"p50": 900.0, "p90": 2000.0, "p95": 2500.0, "p99": 4000.0},
                       "first_update": {"p50": 300.0, "p90": 500.0, "p95": 600.0,
                                        "p99": 700.0}},
        "methods": {"ComputeGuideWeights": {"latency_ms": {"p95": 40.0, "p99": 55.0}}},
    }
    base.update(figures)
    return base


def test_the_brief_example_parses_into_canonical_units():
    slo = parse_slo("p95_total<30s,error_rate<0.01")
    assert [(o.metric, o.op, o.threshold) for o in slo] == [
        ("p95_total", "<", 30_000.0), ("error_rate", "<", 0.01)]


@pytest.mark.parametrize(("spec", "metric", "threshold"), [
    ("p50_total <= 2m", "p50_total", 120_000.0),
    ("p99_first_update<500ms", "p99_first_update", 500.0),
    ("p90_first-update<1.5", "p90_first_update", 1500.0),
    ("p95<10s", "p95_total", 10_000.0),
    ("p95_Dream<10s", "p95_total", 10_000.0),
    ("p95_computeguideweights<50ms", "p95_ComputeGuideWeights", 50.0),
    ("p99_select_neurons<1s", "p99_SelectNeurons", 1000.0),
    ("rejection_rate<5%", "rejection_rate", 0.05),
    ("dreams_per_min>10", "dreams_per_min", 10.0),
    ("rps>=2.5", "rps", 2.5),
])
def test_every_metric(spec, metric, threshold):
    (objective,) = parse_slo(spec)
    assert (objective.metric, objective.threshold) == (metric, pytest.approx(threshold))


@pytest.mark.parametrize(("spec", "message"), [
    ("", "no objectives"),
    ("p95_total", "expected METRIC<VALUE"),
    ("p95_total=3s", "expected METRIC<VALUE"),
    ("p97_total<3s", "unknown metric 'p97_total'"),
    ("latency<3s", "unknown metric"),
    ("p95_Gan<3s", "unknown latency 'Gan'"),
    ("p95_total<fast", "not a duration"),
    ("error_rate<1.5", "not a fraction"),
    ("error_rate<lots", "not a fraction"),
    ("rps>-1", "not a number"),
    ("p95_total<3s,,rps>1", "an empty objective"),
    ("p95_total<30s,", "an empty objective"),
    ("p95_total<0", "can never be met"),
    ("p99_first_update<0ms", "can never be met"),
    ("error_rate<0%", "can never be met"),
])
def test_malformed_specs_are_invalid_arguments(spec, message):
    with pytest.raises(InvalidArgument, match=message):
        parse_slo(spec)


def test_verdicts():
    summary = _summary()
    met = evaluate(parse_slo("p95_total<30s,error_rate<0.05,dreams_per_min>10,rps>=3.5,"
                             "p95_ComputeGuideWeights<50ms,p99_first_update<=700ms"), summary)
    assert met["passed"] and all(c["passed"] for c in met["checks"])
    missed = evaluate(parse_slo("p95_total<2s,error_rate<0.01"), summary)
    assert not missed["passed"]
    assert [(c["value"], c["passed"]) for c in missed["checks"]] == [(2500.0, False),
                                                                      (0.02, False)]


def test_a_metric_without_a_value_misses():
    summary = _summary(latency_ms={"total": None, "first_update": None})
    verdict = evaluate(parse_slo("p95_total<30s,p95_SelectNeurons<1s"), summary)
    assert not verdict["passed"]
    assert [c["value"] for c in verdict["checks"]] == [None, None]
