"""Runs one load test from the (unpatched) command-line process.

:func:`run_load` writes the plan, starts the Locust process (``python -m
dreamsuite.loadtest.run``) in a session of its own, follows the services' ``/metrics`` while it
runs, forwards Ctrl-C and SIGTERM to it once (it then stops its users, lets calls in flight
finish and still reports), and returns the summary with the SLO's verdict. Interrupted before
the load began (a master still waiting for its workers), the Locust process writes no
statistics and :func:`run_load` raises :class:`KeyboardInterrupt`, which the command line
reports as interrupted (exit code 130).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc

from dreamsuite.errors import InvalidArgument, Unavailable
from dreamsuite.loadtest import summary as summaries
from dreamsuite.loadtest.connect import auth_metadata, user_channel
from dreamsuite.loadtest.plan import RunPlan
from dreamsuite.loadtest.scenario import Scenario
from dreamsuite.loadtest.server_metrics import ServerWatch
from dreamsuite.loadtest.slo import Objective, evaluate
from dreamsuite.v1 import dream_pb2, dream_pb2_grpc

__all__ = ["resolve_layers", "run_load", "run_worker"]

_POLL_SECONDS = 1.0


def resolve_layers(plan: RunPlan) -> RunPlan:
    """Guide users need layers: where the scenario names none, ask the dream service
    (``ListBackbones``) for the backbone's default layer."""
    missing = [c for c in plan.scenario.active()
               if c.kind in ("guide_weights", "select_neurons") and not c.layers]
    if not missing:
        return plan
    if not plan.targets.dream:
        raise InvalidArgument("guide users need layers: give --layer or layers in the scenario")
    with user_channel(plan.targets.dream) as channel:
        try:
            listing = dream_pb2_grpc.DreamServiceStub(channel).ListBackbones(
                dream_pb2.ListBackbonesRequest(), timeout=30,
                metadata=tuple(auth_metadata(plan.scenario.token)))
        except grpc.RpcError as exc:
            raise Unavailable(f"dream service at {plan.targets.dream}: {exc.code().name}: "
                              f"{exc.details()} (needed for the default layer; or give --layer)"
                              ) from None
    defaults = {b.name: b.default_layer for b in listing.backbones}
    first = listing.backbones[0].name if listing.backbones else ""
    calls = dict(plan.scenario.calls)
    for c in missing:
        layer = defaults.get(c.backbone or first)
        if not layer:
            raise InvalidArgument(f"{c.kind}: the dream service knows no backbone "
                                  f"{c.backbone!r}; give --layer")
        calls[c.kind] = replace(c, layers=(layer,))
    return replace(plan, scenario=Scenario(calls=calls, wait=plan.scenario.wait,
                                           token=plan.scenario.token))


def _spawn(plan_path: Path, snapshot_path: Path | None) -> subprocess.Popen:
    command = [sys.executable, "-m", "dreamsuite.loadtest.run", str(plan_path)]
    if snapshot_path is not None:
        command.append(str(snapshot_path))
    # A session of its own: Ctrl-C in a terminal reaches this process only, which forwards it
    # once, so the Locust process stops gracefully instead of dying mid-report.
    return subprocess.Popen(command, start_new_session=True)


class _Forward:
    """Forwards SIGINT/SIGTERM to the Locust process while it runs (once is enough)."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.previous: dict[int, Any] = {}
        self.signalled = False

    def __enter__(self) -> _Forward:
        for number in (signal.SIGINT, signal.SIGTERM):
            self.previous[number] = signal.signal(number, self._forward)
        return self

    def _forward(self, number: int, _frame: object) -> None:
        self.signalled = True
        if self.process.poll() is None:
            self.process.send_signal(number)

    def __exit__(self, *exc: object) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)


def _wait(process: subprocess.Popen, watch: ServerWatch | None) -> int:
    while True:
        try:
            return process.wait(timeout=_POLL_SECONDS)
        except subprocess.TimeoutExpired:
            if watch is not None:
                watch.poll()


def run_load(plan: RunPlan, *, metrics: Sequence[str] = (),
             objectives: Sequence[Objective] = ()) -> tuple[dict[str, Any], int]:
    """Run ``plan`` (local or master) to its end: the summary and the Locust process's exit
    code. ``metrics``: ``/metrics`` URLs of the services under load."""
    plan = resolve_layers(plan)
    watch = ServerWatch(metrics) if metrics else None
    with tempfile.TemporaryDirectory(prefix="dreamsuite-loadtest-") as tmp:
        plan_path = plan.write(Path(tmp) / "plan.json")
        snapshot_path = Path(tmp) / "snapshot.json"
        if watch is not None:
            watch.start()
        process = _spawn(plan_path, snapshot_path)
        with _Forward(process) as forward:
            code = _wait(process, watch)
        if not snapshot_path.exists():
            if forward.signalled:  # before any load: a master waiting for its workers
                raise KeyboardInterrupt("interrupted before the run started")
            raise Unavailable(f"the Locust process ended (exit code {code}) without statistics; "
                              "see its messages above")
        snapshot = json.loads(snapshot_path.read_text(encoding="utf-8"))
    if watch is not None:
        time.sleep(0.5)  # let the servers count the last calls' endings
    server = watch.finish() if watch is not None else None
    figures = summaries.summarise(snapshot, server=server)
    if objectives:
        figures["slo"] = evaluate(list(objectives), figures)
    return figures, code


def run_worker(plan: RunPlan) -> int:
    """Run a Locust worker until its master quits; its exit code."""
    with tempfile.TemporaryDirectory(prefix="dreamsuite-loadtest-") as tmp:
        process = _spawn(plan.write(Path(tmp) / "plan.json"), None)
        with _Forward(process):
            return _wait(process, None)
