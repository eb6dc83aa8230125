"""``dreamsuite bench loadtest`` runs end to end and prints its figures (no timed assertions:
the figure itself is the benchmark's output)."""

from __future__ import annotations

import argparse
import json

import pytest

from dreamsuite.loadtest import cli

pytestmark = pytest.mark.slow


def test_overhead_bench_prints_its_ratios(capsys):
    parser = argparse.ArgumentParser()
    cli.register_bench(parser.add_subparsers(dest="bench"))
    args = parser.parse_args(["loadtest", "--calls", "20", "--chunk", "10", "--json"])
    assert args.func(args) == 0
    figure = json.loads(capsys.readouterr().out)
    for side in ("plain", "pool", "reported", "wall", "gevent"):
        assert figure[side]["calls"] == 20 and figure[side]["median_ms"] > 0
    for ratio in ("ratio", "ratio_back_to_back", "ratio_pacing", "ratio_wall", "ratio_gevent",
                  "ratio_p10", "ratio_p90"):
        assert figure[ratio] > 0
    # The target's ratio compares the load tester with the plain client at the same pace.
    median = {side: figure[side]["median_ms"] for side in ("plain", "pool", "reported")}
    assert figure["ratio"] == pytest.approx(median["reported"] / median["pool"], rel=1e-3)
    assert figure["ratio_back_to_back"] == pytest.approx(median["reported"] / median["plain"],
                                                         rel=1e-3)
    # The whole instrumented call includes the reported one.
    assert figure["wall"]["median_ms"] >= figure["reported"]["median_ms"]
    assert figure["target_ratio"] == 1.05
