"""The summary's arithmetic (counts, rates, percentiles, codes) and the server-side figures."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from dreamsuite.loadtest.server_metrics import (
    bucket_bounds,
    bucket_quantile,
    grpc_code,
    handled,
    handling_buckets,
)
from dreamsuite.loadtest.slo import evaluate, parse_slo
from dreamsuite.loadtest.summary import (
    bucket_ms,
    format_table,
    latency,
    percentile,
    summarise,
)


def _entry(name, requests, failures, times, received=0):
    return {"name": name, "method": "grpc", "num_requests": requests, "num_failures": failures,
            "total_response_time": sum(float(t) * n for t, n in times.items()),
            "max_response_time": max(float(t) for t in times),
            "response_times": {str(t): n for t, n in times.items()},
            "total_content_length": received}


SNAPSHOT = {
    "duration_s": 60.0, "stopped_by": "duration", "users": 4, "mode": "local", "workers": 0,
    "targets": {"dream": "127.0.0.1:1", "guide": "127.0.0.1:2", "gan": None},
    "entries": [
        _entry("Dream", 8, 0, {100: 5, 200: 3}, received=4900),
        _entry("Dream:failed", 2, 2, {5: 2}, received=100),
        _entry("Dream:first-update", 8, 0, {50: 8}, received=800),
        _entry("Dream:rejected", 3, 3, {1: 3}),
        _entry("ComputeGuideWeights", 19, 0, {3: 19}, received=2000),
        _entry("ComputeGuideWeights:failed", 1, 1, {60: 1}),
    ],
    "errors": [
        {"name": "Dream:failed", "method": "grpc",
         "error": "INVALID_ARGUMENT: image: not an image", "occurrences": 2},
        {"name": "Dream:rejected", "method": "grpc",
         "error": "RESOURCE_EXHAUSTED: the dream service is at capacity", "occurrences": 3},
        {"name": "ComputeGuideWeights:failed", "method": "grpc", "error": "DEADLINE_EXCEEDED",
         "occurrences": 1},
    ],
    "bytes_sent": {"Dream": 800, "Dream:failed": 200, "Dream:rejected": 300,
                   "ComputeGuideWeights": 2000},
    "exceptions": [],
}


def test_percentiles_follow_locusts_rule():
    histogram = {10: 5, 20: 3, 30: 2}
    assert [percentile(histogram, q) for q in (0.0, 0.5, 0.7, 0.8, 0.9, 0.99, 1.0)] == [
        10, 20, 20, 30, 30, 30, 30]
    assert percentile({}, 0.5) is None
    assert percentile({7: 1}, 0.95) == 7


def test_percentiles_equal_locusts_own_function():
    rng = random.Random(7)
    cases = [{rng.choice([1, 2, 5, 10, 150, 1200, 33000]): rng.randint(1, 50)
              for _ in range(rng.randint(1, 7))} for _ in range(30)]
    quantiles = (0.5, 0.9, 0.95, 0.99)
    script = (  # Locust patches the process it is imported in: ask it in a process of its own
        "import json, os, sys; os.environ['LOCUST_SKIP_MONKEY_PATCH'] = '1';"
        "from locust.stats import calculate_response_time_percentile as p;"
        "cases, qs = json.load(sys.stdin);"
        "print(json.dumps([[p({int(k): v for k, v in c.items()}, sum(c.values()), q) "
        "for q in qs] for c in cases]))")
    proc = subprocess.run([sys.executable, "-c", script], input=json.dumps([cases, quantiles]),
                          capture_output=True, text=True, timeout=60, check=True)
    theirs = json.loads(proc.stdout)
    ours = [[percentile(case, q) for q in quantiles] for case in cases]
    assert ours == theirs


def test_response_times_keep_three_significant_digits():
    assert [bucket_ms(t) for t in (0.4, 7.6, 147.4, 999.4, 1234.5, 29_550.0, 58_760.0,
                                   123_456.0)] == [0, 8, 147, 999, 1230, 29_600, 58_800, 123_000]
    for t in [*range(1, 5000, 7), *range(5000, 2_000_000, 997)]:
        assert abs(bucket_ms(t + 0.3) - (t + 0.3)) <= max(0.5, 0.005 * t), t


def test_the_locust_process_histograms_near_a_threshold_stay_below_it():
    # Dreams of 29.55 s: Locust's own rounding (1 s steps above 10 s) makes p95 30 s, which
    # misses p95_total<30s. The Locust process replaces it with bucket_ms.
    script = (  # Locust patches the process it is imported in: a process of its own
        "import json, dreamsuite.loadtest.run;"
        "from locust.stats import StatsEntry, RequestStats;"
        "e = StatsEntry(RequestStats(), 'Dream', 'grpc');"
        "[e.log(29_550.0 + i, 0) for i in range(100)];"
        "print(json.dumps([e.response_times, e.get_response_time_percentile(0.95)]))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    histogram, theirs = json.loads(proc.stdout)
    ours = percentile({float(k): v for k, v in histogram.items()}, 0.95)
    assert ours == theirs == 29_600
    summary = {"latency_ms": {"total": {"p95": ours}}}
    assert evaluate(parse_slo("p95_total<30s"), summary)["passed"]


def test_latency_block():
    figures = latency(SNAPSHOT["entries"][0])
    assert figures["count"] == 8 and figures["max"] == 200.0
    assert figures["mean"] == pytest.approx((500 + 600) / 8)
    assert (figures["p50"], figures["p90"], figures["p99"]) == (100.0, 200.0, 200.0)
    assert latency(None) is None


def test_latencies_are_of_successful_calls_only():
    # One dream took 29 s; 99 failed in 3 ms (a refused connection fails fast): mixed in, the
    # failures would make p95 3 ms and pass p95_total<1s.
    snapshot = {"duration_s": 60.0, "entries": [
        _entry("Dream", 1, 0, {29_000: 1}), _entry("Dream:failed", 99, 99, {3: 99})],
        "errors": [{"name": "Dream:failed", "method": "grpc",
                    "error": "UNAVAILABLE: failed to connect", "occurrences": 99}]}
    s = summarise(snapshot)
    dream = s["methods"]["Dream"]
    assert (dream["requests"], dream["ok"], dream["failures"]) == (100, 1, 99)
    assert dream["codes"] == {"OK": 1, "UNAVAILABLE": 99}
    assert dream["latency_ms"]["count"] == 1 and dream["latency_ms"]["p95"] == 29_000.0
    assert not evaluate(parse_slo("p95_total<1s"), s)["passed"]
    # No dream succeeded: no latency at all, so a latency objective misses.
    s = summarise({**snapshot, "entries": snapshot["entries"][1:]})
    assert s["latency_ms"]["total"] is None and s["methods"]["Dream"]["failures"] == 99
    verdict = evaluate(parse_slo("p95_total<30s"), s)
    assert not verdict["passed"] and verdict["checks"][0]["value"] is None


def test_summary_counts_rates_and_codes():
    s = summarise(SNAPSHOT)
    dream = s["methods"]["Dream"]
    assert (dream["requests"], dream["ok"], dream["failures"], dream["rejected"]) == (13, 8, 2, 3)
    assert dream["codes"] == {"INVALID_ARGUMENT": 2, "OK": 8, "RESOURCE_EXHAUSTED": 3}
    assert (dream["bytes_sent"], dream["bytes_received"]) == (1300, 5000)
    assert dream["latency_ms"]["count"] == 8  # the failed dreams' 5 ms are not latencies
    assert dream["first_update_ms"]["p50"] == 50.0
    assert dream["rps"] == pytest.approx(13 / 60, abs=1e-4)
    guide = s["methods"]["ComputeGuideWeights"]
    assert guide["codes"] == {"DEADLINE_EXCEEDED": 1, "OK": 19} and guide["rejected"] == 0
    assert list(s["methods"]) == ["Dream", "ComputeGuideWeights"]
    assert (s["requests"], s["ok"], s["failures"], s["rejected"]) == (33, 27, 3, 3)
    assert s["error_rate"] == pytest.approx(3 / 33, abs=1e-6)  # rejections are not failures
    assert s["rejection_rate"] == pytest.approx(3 / 33, abs=1e-6)
    assert s["dreams"] == 8 and s["dreams_per_min"] == pytest.approx(8.0)
    assert s["rps"] == pytest.approx(33 / 60, abs=1e-4)
    assert (s["bytes_sent"], s["bytes_received"]) == (3300, 7000)
    assert s["codes"] == {"DEADLINE_EXCEEDED": 1, "INVALID_ARGUMENT": 2, "OK": 27,
                          "RESOURCE_EXHAUSTED": 3}
    assert s["latency_ms"]["total"] == dream["latency_ms"]
    assert s["latency_ms"]["first_update"] == dream["first_update_ms"]


def test_an_empty_run_divides_by_nothing_and_meets_no_rate_objective():
    s = summarise({**SNAPSHOT, "entries": [], "errors": [], "bytes_sent": {}})
    assert (s["requests"], s["dreams_per_min"]) == (0, 0.0)
    # No requests, no rates: an objective on them has no value and misses.
    assert s["error_rate"] is None and s["rejection_rate"] is None
    assert s["latency_ms"] == {"total": None, "first_update": None}
    verdict = evaluate(parse_slo("error_rate<0.01,rejection_rate<=5%"), s)
    assert [(c["value"], c["passed"]) for c in verdict["checks"]] == [(None, False),
                                                                      (None, False)]
    table = format_table({**s, "slo": verdict})
    assert "dreams 0" in table and "error rate n/a, rejected n/a" in table
    assert "SLO error_rate<0.01: n/a MISSED" in table


def test_table_lists_methods_codes_and_the_slo():
    verdict = {"passed": False, "checks": [{"objective": "p95_total<1s", "value": 200.0,
                                            "unit": "ms", "passed": True}]}
    text = format_table(summarise(SNAPSHOT, slo=verdict))
    for part in ("Dream ", "first update", "ComputeGuideWeights", "RESOURCE_EXHAUSTED 3",
                 "error rate 9.09%", "SLO p95_total<1s: 200 ms ok"):
        assert part in text, text


# --- server side ------------------------------------------------------------------------------


def test_go_code_names_become_grpc_names():
    assert [grpc_code(c) for c in ("OK", "Canceled", "InvalidArgument", "ResourceExhausted",
                                   "DeadlineExceeded", "Unknown", "FailedPrecondition")] == [
        "OK", "CANCELLED", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED",
        "UNKNOWN", "FAILED_PRECONDITION"]


def _labels(**kw):
    return tuple(sorted({"grpc_service": "dreamsuite.v1.DreamService", "grpc_type": "unary",
                         **kw}.items()))


def test_handled_and_handling_are_differences_between_scrapes():
    name = "grpc_server_handled_total"
    before = {(name, _labels(grpc_method="Dream", grpc_code="OK")): 5.0}
    after = {(name, _labels(grpc_method="Dream", grpc_code="OK")): 12.0,
             (name, _labels(grpc_method="Dream", grpc_code="InvalidArgument")): 2.0,
             (name, _labels(grpc_method="ListBackbones", grpc_code="OK")): 0.0}
    assert handled(before, after) == {"Dream": {"INVALID_ARGUMENT": 2.0, "OK": 7.0}}
    bucket = "grpc_server_handling_seconds_bucket"
    cumulative = {"0.1": 1, "0.25": 4, "0.5": 9, "1.0": 10, "+Inf": 10}
    before = {(bucket, _labels(grpc_method="Dream", le="0.1")): 1.0}
    after = {(bucket, _labels(grpc_method="Dream", le=le)): float(n) + (le == "0.1")
             for le, n in cumulative.items()}
    buckets = handling_buckets(before, after, "Dream")
    assert buckets == [(0.1, 1.0), (0.25, 4.0), (0.5, 9.0), (1.0, 10.0), (float("inf"), 10.0)]
    assert bucket_bounds(buckets, 0.5) == (0.25, 0.5)
    assert bucket_quantile(buckets, 0.5) == pytest.approx(0.25 + 0.25 * (5 - 4) / 5)
    assert bucket_quantile(buckets, 0.05) == pytest.approx(0.05)
    assert bucket_bounds([], 0.5) is None and bucket_quantile([], 0.5) is None
