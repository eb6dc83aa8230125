"""Runs that cannot succeed still end: ``--dreams N`` against a target where every dream fails,
users that all die in their start, a master interrupted while it waits for its workers. Real
runs (the command line and its Locust process) against a closed loopback port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

QUICK = ["--mix", "dream=1", "--size", "64", "--no-progress", "--stop-timeout", "5s"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loadtest(*args: str, timeout: float = 90, env: dict | None = None
              ) -> subprocess.CompletedProcess:
    """``dreamsuite loadtest ARGS``; a run that does not end in ``timeout`` is interrupted (so
    its Locust process stops too) and fails the test."""
    process = subprocess.Popen([sys.executable, "-m", "dreamsuite.loadtest.cli", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **(env or {})})
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)  # forwarded once: the run stops and reports
        out, err = process.communicate(timeout=90)
        pytest.fail(f"the run did not end by itself in {timeout} s:\n{err[-2000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_dreams_without_duration_end_once_as_many_dreams_failed():
    run = _loadtest(f"127.0.0.1:{_closed_port()}", "--dreams", "3", "--users", "2",
                    "--spawn-rate", "10", *QUICK, "--json", "-", "--slo", "p95_total<30s")
    assert run.returncode == 1, run.stderr  # the SLO misses: no dream succeeded
    figures = json.loads(run.stdout)
    assert figures["stopped_by"] == "failures"
    dream = figures["methods"]["Dream"]
    assert dream["ok"] == 0 and dream["failures"] >= 3
    assert set(dream["codes"]) == {"UNAVAILABLE"}
    assert dream["latency_ms"] is None  # the failures' milliseconds are not latencies
    (check,) = figures["slo"]["checks"]
    assert check["value"] is None and not check["passed"]


def test_a_run_whose_users_all_died_ends(tmp_path):
    # Every user's channel needs the CA file at its start: a missing one kills every user.
    run = _loadtest(f"127.0.0.1:{_closed_port()}", "--dreams", "3", "--users", "2",
                    "--spawn-rate", "10", *QUICK, "--json", "-",
                    env={"DREAMSUITE_TLS_CA": str(tmp_path / "missing-ca.pem")})
    assert run.returncode == 0, run.stderr
    figures = json.loads(run.stdout)
    assert figures["stopped_by"] == "users" and figures["requests"] == 0
    assert any("missing-ca.pem" in e["msg"] for e in figures["load_tester_exceptions"])


def test_a_master_waiting_for_workers_stops_on_ctrl_c():
    port = _closed_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "dreamsuite.loadtest.cli", f"127.0.0.1:{_closed_port()}",
         "--master", "--master-bind-host", "127.0.0.1", "--master-port", str(port),
         "--expect-workers", "1", "--expect-workers-timeout", "60s", *QUICK],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:  # the master listens: it is waiting for its worker
            assert process.poll() is None and time.monotonic() < deadline, process.poll()
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        time.sleep(1.0)
        interrupted = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert time.monotonic() - interrupted < 15, err  # not after --expect-workers-timeout
    assert process.returncode == 130, err
    assert "interrupted while waiting for workers (0 of 1 connected)" in err
    assert "without statistics" not in err and "Traceback" not in err
