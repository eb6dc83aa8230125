"""The body of ``dreamsuite loadtest``: options -> a checked :class:`RunPlan` -> a run ->
the table, the JSON and the exit code (0 met the SLO, 1 missed it)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dreamsuite.errors import InvalidArgument
from dreamsuite.loadtest.controller import run_load, run_worker
from dreamsuite.loadtest.plan import RunPlan
from dreamsuite.loadtest.scenario import Scenario, Targets, load_scenario, parse_duration
from dreamsuite.loadtest.slo import parse_slo
from dreamsuite.loadtest.summary import format_table

__all__ = ["plan_from_args", "run_command"]

_FLAG_FIELDS = ("mix", "wait", "token", "backbone", "layers", "sizes", "images", "octaves",
                "steps", "octave_scale", "deadline", "invalid", "model",
                "dream_model", "condition")


def plan_from_args(args: argparse.Namespace) -> RunPlan:
    """The checked plan the options describe (:class:`InvalidArgument` on a bad one)."""
    targets = Targets(dream=args.target, guide=args.guide, gan=args.gan)
    if args.worker:  # the master's plan reaches the workers through Locust
        return RunPlan(targets=Targets(), scenario=Scenario(token=args.token), mode="worker",
                       master_host=args.master_host, master_port=args.master_port,
                       verbose=bool(getattr(args, "verbose", False)))
    flags = {name: getattr(args, name, None) for name in _FLAG_FIELDS}
    scenario = load_scenario(args.scenario, flags=flags, targets=targets)
    if args.users < 1:
        raise InvalidArgument("--users: at least 1")
    if not args.spawn_rate > 0:
        raise InvalidArgument("--spawn-rate: must be above 0")
    if args.dreams is not None and args.dreams < 1:
        raise InvalidArgument("--dreams: at least 1")
    if args.dreams is not None and not any(c.kind == "dream" for c in scenario.active()):
        raise InvalidArgument("--dreams needs dream users (TARGET and a mix with dream)")
    duration = parse_duration(args.duration, "--duration") if args.duration is not None else None
    if duration is not None and duration <= 0:  # 0 would read as "no time limit"
        raise InvalidArgument(f"--duration: must be above 0, got {args.duration!r}")
    if duration is None and args.dreams is None:
        duration = 60.0
    if args.expect_workers < 1:
        raise InvalidArgument("--expect-workers: at least 1")
    mode = "master" if args.master else "worker" if args.worker else "local"
    return RunPlan(
        targets=targets, scenario=scenario, users=args.users, spawn_rate=args.spawn_rate,
        duration=duration, dreams=args.dreams,
        stop_timeout=parse_duration(args.stop_timeout, "--stop-timeout"), mode=mode,
        master_host=args.master_host, master_bind_host=args.master_bind_host,
        master_port=args.master_port, expect_workers=args.expect_workers,
        expect_workers_timeout=parse_duration(args.expect_workers_timeout,
                                              "--expect-workers-timeout"),
        csv_prefix=args.csv, html=args.html, progress=args.progress,
        verbose=bool(getattr(args, "verbose", False)))


def _write_json(figures: dict[str, Any], where: str) -> None:
    text = json.dumps(figures, indent=2)
    if where == "-":
        print(text)
    else:
        Path(where).parent.mkdir(parents=True, exist_ok=True)
        Path(where).write_text(text + "\n", encoding="utf-8")


def run_command(args: argparse.Namespace) -> int:
    """Run ``dreamsuite loadtest`` with parsed ``args``; the exit code."""
    objectives = parse_slo(args.slo) if args.slo is not None else []  # bad SLO: before any load
    plan = plan_from_args(args)
    if plan.mode == "worker":
        return run_worker(plan)
    figures, _ = run_load(plan, metrics=args.metrics, objectives=objectives)
    table = format_table(figures)
    print(table, file=sys.stderr if args.json == "-" else sys.stdout)
    if args.json:
        _write_json(figures, args.json)
    if figures["slo"] is not None and not figures["slo"]["passed"]:
        return 1
    return 0
