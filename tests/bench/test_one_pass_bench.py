"""``dreamsuite bench one-pass`` trains, exports and serves a model with a real TorchServe and
measures both kinds of dream through the dream service (figures are measured, not asserted)."""

from __future__ import annotations

import argparse
import json

import pytest

from dreamsuite.bench import one_pass
from dreamsuite.cli import build_parser


@pytest.mark.slow
def test_the_bench_runs_end_to_end_through_torchserve(capsys):
    args = argparse.Namespace(json=True, size=64, rounds=1, users=2, duration=3.0, octaves=1,
                              steps=2, vgg16=False, device="cpu")
    assert one_pass.main(args) == 0
    captured = capsys.readouterr()
    figures = json.loads(captured.out)  # stdout holds the figures alone
    e2e, load = figures["end_to_end"], figures["load"]
    assert e2e["optimised_seconds"] > 0 and e2e["one_pass_seconds"] > 0
    assert e2e["ratio"] == pytest.approx(e2e["optimised_seconds"] / e2e["one_pass_seconds"],
                                         rel=1e-2)
    assert len(e2e["optimised_runs"]) == len(e2e["one_pass_runs"]) == 1
    for side in ("optimised", "one_pass"):
        assert load[side]["dreams"] > 0 and load[side]["dreams_per_min"] > 0
        assert 0 < load[side]["p50_seconds"] <= load[side]["p95_seconds"]
    assert load["ratio"] == pytest.approx(load["one_pass"]["dreams_per_min"]
                                          / load["optimised"]["dreams_per_min"], rel=1e-2)
    assert (e2e["target"], load["target"]) == (one_pass.TARGET_END_TO_END, one_pass.TARGET_LOAD)
    assert figures["vgg16"] is None  # --no-vgg16
    assert figures["model"]["width"] == 16 and figures["model"]["gmac"] > 0
    # The one-pass figures are TorchServe's work: it counted every one-pass dream (warm-up, the
    # round, the load test's), and the dream service answered each through its fast path.
    through = figures["through_torchserve"]
    assert through["one_pass_dreams"] == one_pass.WARM_ONE_PASS + 1 + load["one_pass"]["dreams"]
    assert through["torchserve_requests"] >= through["one_pass_dreams"]
    assert through["service_one_pass_ok"] == through["one_pass_dreams"]
    assert "status codes: OK" in captured.err  # the load tester's table, on stderr


def test_the_table_marks_the_targets(monkeypatch, capsys):
    def fake_measure(args):
        return {
            "size": 64, "octaves": 4, "steps": 10, "rounds": 3, "users": 4, "duration_s": 30.0,
            "model": {"name": one_pass.MODEL, "width": 16, "gmac": 0.13,
                      "torchserve_batch_size": 8, "torchserve_max_batch_delay_ms": 5},
            "end_to_end": {"optimised_seconds": 2.0, "one_pass_seconds": 0.1, "ratio": 20.0,
                           "target": 10.0},
            "vgg16": {"optimised_seconds": 9.0, "one_pass_seconds": 0.1, "ratio": 90.0},
            "load": {"optimised": {"dreams_per_min": 30.0}, "one_pass": {"dreams_per_min": 90.0},
                     "ratio": 3.0, "target": 5.0},
            "through_torchserve": {"one_pass_dreams": 5, "torchserve_requests": 5.0,
                                   "service_one_pass_ok": 5.0},
        }

    monkeypatch.setattr(one_pass, "measure", fake_measure)
    args = argparse.Namespace(json=False, size=64, rounds=3, users=4, duration=30.0, octaves=4,
                              steps=10, vgg16=True, device=None)
    assert one_pass.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    row = {line.split()[0]: line for line in lines[1:]}
    assert "20.0x" in row["end"] and row["end"].endswith("ok")
    assert "90.0x" in row["vgg16"] and "target" not in row["vgg16"]
    assert "3.0x" in row["dreams/min,"] and row["dreams/min,"].endswith("MISSED")


def test_the_command_line_checks_its_options_before_any_work(capsys):
    args = build_parser().parse_args(["bench", "one-pass", "--duration", "2m", "--no-vgg16"])
    assert (args.size, args.rounds, args.users, args.duration) == (512, 3, 4, 120.0)
    assert (args.octaves, args.steps, args.vgg16, args.json) == (4, 10, False, False)
    assert build_parser().parse_args(["bench", "one-pass"]).duration == 30.0
    for bad in ("soon", "0s"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["bench", "one-pass", "--duration", bad])
        assert "--duration" in capsys.readouterr().err
