"""The Locust process of ``dreamsuite loadtest``: ``python -m dreamsuite.loadtest.run PLAN
SNAPSHOT``.

A process of its own: it runs a gevent hub, Locust's global state and signal handlers, none of
which belong in the command line's process. It runs Locust as a library (local, master or
worker runner), prints a live progress line on stderr, writes Locust's CSV and HTML reports
when the plan asks, and leaves a JSON snapshot of Locust's statistics (and the bytes sent, which
Locust does not count) at SNAPSHOT for the command line to summarise. Workers write no
snapshot: their calls reach the master's statistics.
"""

import os

# Before Locust is imported: no monkey-patching (see dreamsuite.loadtest.users).
os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import locust.stats  # noqa: E402
from gevent.event import Event  # noqa: E402
from locust.env import Environment  # noqa: E402
from locust.html import get_html_report  # noqa: E402
from locust.runners import STATE_RUNNING, STATE_STOPPED, Runner  # noqa: E402
from locust.stats import (  # noqa: E402
    CSV_STATS_INTERVAL_SEC,
    PERCENTILES_TO_REPORT,
    RequestStats,
    StatsCSVFileWriter,
    StatsError,
    stats_history,
)

from dreamsuite.loadtest.calls import FAILED, FIRST_UPDATE, REJECTED, REQUEST_TYPE  # noqa: E402
from dreamsuite.loadtest.plan import RunPlan  # noqa: E402
from dreamsuite.loadtest.summary import bucket_ms  # noqa: E402
from dreamsuite.loadtest.users import options, plan_weights, user_classes  # noqa: E402

__all__ = ["main"]

log = logging.getLogger("dreamsuite.loadtest")

# Finer histograms than Locust's 2 significant digits (1 s steps above 10 s), in every Locust
# process (local, master and workers run this module): Locust looks this function up at each
# call it logs and documents replacing it.
locust.stats.bucket_response_time = bucket_ms

#: Custom Locust messages: the master asks its workers to stop; each answers once it has.
STOP, STOPPED = "dreamsuite_stop", "dreamsuite_stopped"


class Traffic:
    """Bytes sent by call name (Locust counts the bytes received only); a worker ships what it
    counted with each statistics report and the master adds it up."""

    KEY = "dreamsuite_bytes_sent"

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()

    def on_request(self, name: str, context: dict | None = None, **_: object) -> None:
        self.sent[name] += int((context or {}).get("bytes_sent", 0))

    def on_report_to_master(self, client_id: str, data: dict) -> None:
        data[self.KEY] = dict(self.sent)
        self.sent.clear()

    def on_worker_report(self, client_id: str, data: dict) -> None:
        self.sent.update(data.get(self.KEY, {}))


def _counts(stats: RequestStats) -> dict[str, int]:
    """Dreams completed, dreams failed, calls, failures and rejections so far (for progress and
    --dreams). Names as in :mod:`dreamsuite.loadtest.calls`: ``Dream`` holds the OK dreams,
    ``Dream:failed`` the failed ones."""
    out = Counter()
    for entry in stats.entries.values():
        if entry.name.endswith(FIRST_UPDATE):
            continue
        out["calls"] += entry.num_requests
        if entry.name.endswith(REJECTED):
            out["rejected"] += entry.num_requests
        elif entry.name.endswith(FAILED):
            out["failures"] += entry.num_requests
        if entry.name == "Dream":
            out["dreams"] += entry.num_requests
        elif entry.name == "Dream" + FAILED:
            out["dream_failures"] += entry.num_requests
    return out


def _progress(runner: Runner, started: float) -> None:
    tty = sys.stderr.isatty()
    while True:
        gevent.sleep(1.0 if tty else 5.0)
        elapsed = time.monotonic() - started
        c = _counts(runner.stats)
        line = (f"{elapsed:6.0f}s  users {runner.user_count:3d}  dreams {c['dreams']} "
                f"({60 * c['dreams'] / max(elapsed, 1e-9):.1f}/min)  calls {c['calls']} "
                f"({c['calls'] / max(elapsed, 1e-9):.1f}/s)  failures {c['failures']}  "
                f"rejected {c['rejected']}")
        print(f"\r{line}\x1b[K" if tty else line, end="" if tty else "\n", file=sys.stderr,
              flush=True)


def _worker_stops_on_request(runner) -> None:
    """A worker stops its users gracefully when the master asks (:data:`STOP`), sends its last
    statistics, says so (:data:`STOPPED`) and quits: Locust's own ``stop`` keeps a worker
    waiting and its ``quit`` leaves the master no time for the last report."""

    def stop(environment: Environment, msg: object, **_: object) -> None:
        runner.stop()  # calls in flight finish within the master's stop_timeout
        runner._send_stats()  # noqa: SLF001 (Locust's own final report, as on its quit)
        runner.send_message(STOPPED)
        runner.quit()

    runner.register_message(STOP, stop, concurrent=True)


def _stop_workers(runner, plan: RunPlan) -> None:
    """Ask every worker to stop and wait for their last reports (at most stop_timeout + 30 s)."""
    waiting = {client.id for client in runner.clients.all}
    runner.register_message(STOPPED, lambda environment, msg, **_: waiting.discard(msg.node_id))
    runner.send_message(STOP)
    deadline = time.monotonic() + plan.stop_timeout + 30.0
    while waiting and time.monotonic() < deadline:
        gevent.sleep(0.2)
    if waiting:
        log.error("%d worker(s) did not report their end; their last calls are missing",
                  len(waiting))
    gevent.sleep(0.5)  # the stats message each worker sent just before STOPPED


def _wait_for_workers(runner, plan: RunPlan, stop: Event) -> bool:
    """Whether ``expect_workers`` workers connected before the timeout and any Ctrl-C/SIGTERM
    (``stop``)."""
    waited = time.monotonic()
    while len(runner.clients.ready) < plan.expect_workers:
        if time.monotonic() - waited > plan.expect_workers_timeout:
            log.error("gave up waiting for workers: %d of %d connected",
                      len(runner.clients.ready), plan.expect_workers)
            return False
        if stop.wait(1.0):
            log.error("interrupted while waiting for workers (%d of %d connected): no load "
                      "was run", len(runner.clients.ready), plan.expect_workers)
            return False
    return True


def _until_done(runner: Runner, plan: RunPlan, started: float, stop: Event) -> str:
    """Why the run ends: ``signal``, ``duration``, ``dreams``, ``failures`` (``--dreams N``
    without ``--duration``: N dreams failed, so a run that cannot succeed, a dead target say,
    still ends), ``users`` (every user has died, in its start say: nothing more can happen)
    or ``stopped``."""
    while True:
        if stop.wait(0.2):
            return "signal"
        if plan.duration is not None and time.monotonic() - started >= plan.duration:
            return "duration"
        if plan.dreams is not None:
            counts = _counts(runner.stats)
            if counts["dreams"] >= plan.dreams:
                return "dreams"
            if plan.duration is None and counts["dream_failures"] >= plan.dreams:
                return "failures"
        if runner.state == STATE_RUNNING and runner.user_count == 0:
            return "users"
        if runner.state == STATE_STOPPED:
            return "stopped"


def snapshot(runner: Runner, traffic: Traffic, plan: RunPlan, *, started_at: float,
             duration: float, reason: str, workers: int = 0) -> dict:
    """Locust's statistics as plain data (see :mod:`dreamsuite.loadtest.summary`)."""
    stats = runner.stats
    entries = [{
        "name": e.name, "method": e.method, "num_requests": e.num_requests,
        "num_failures": e.num_failures, "total_response_time": e.total_response_time,
        "max_response_time": e.max_response_time,
        "response_times": {str(k): v for k, v in e.response_times.items()},
        "total_content_length": e.total_content_length,
    } for e in stats.entries.values() if e.method == REQUEST_TYPE]
    errors = [{"name": e.name, "method": e.method, "error": StatsError.parse_error(e.error),
               "occurrences": e.occurrences} for e in stats.errors.values()]
    exceptions = [{"count": x["count"], "msg": x["msg"]} for x in runner.exceptions.values()]
    return {
        "started_at": started_at, "duration_s": duration, "stopped_by": reason,
        "users": plan.users, "mode": plan.mode,
        "workers": workers,
        "targets": {"dream": plan.targets.dream, "guide": plan.targets.guide,
                    "gan": plan.targets.gan},
        "entries": entries, "errors": errors, "bytes_sent": dict(traffic.sent),
        "exceptions": exceptions,
    }


def _write_html(env: Environment, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(get_html_report(env, show_download_link=False), encoding="utf-8")


def _environment(plan: RunPlan) -> Environment:
    if plan.mode == "worker":  # every kind: the master's plan arrives with each spawn
        return Environment(user_classes=user_classes(),
                           parsed_options=options(None, token=plan.scenario.token))
    shipped = plan
    if plan.mode == "master":  # the options go to the workers: not the token
        shipped = replace(plan, scenario=replace(plan.scenario, token=None))
    return Environment(user_classes=user_classes(plan_weights(plan.scenario)),
                       stop_timeout=plan.stop_timeout, parsed_options=options(shipped),
                       host=plan.targets.dream or plan.targets.guide or plan.targets.gan)


def _run_worker(env: Environment, plan: RunPlan, traffic: Traffic, stop: Event) -> int:
    runner = env.create_worker_runner(plan.master_host, plan.master_port)
    env.events.report_to_master.add_listener(traffic.on_report_to_master)
    _worker_stops_on_request(runner)
    gevent.spawn(lambda: (stop.wait(), runner.quit()))
    runner.greenlet.join()
    return 0


class _CsvReport:
    """Locust's CSV files, rewritten every second while the run goes on and once at its end."""

    def __init__(self, env: Environment, prefix: str):
        Path(prefix).parent.mkdir(parents=True, exist_ok=True)
        self.writer = StatsCSVFileWriter(env, PERCENTILES_TO_REPORT, prefix, False)
        self.greenlet = gevent.spawn(self.writer.stats_writer)

    def close(self) -> None:
        gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.1)  # one more pass with the final numbers
        self.greenlet.kill()
        self.writer.close_files()


def _stop(runner: Runner, plan: RunPlan, reason: str) -> None:
    log.info("stopping (%s); calls in flight get up to %gs", reason, plan.stop_timeout)
    if plan.mode == "master":
        _stop_workers(runner, plan)
    else:
        runner.stop()  # graceful: calls in flight finish within stop_timeout


def run(plan: RunPlan, snapshot_path: str | None) -> int:
    """Run ``plan`` to its end; write the snapshot (local and master). The exit code."""
    env = _environment(plan)
    traffic = Traffic()
    env.events.request.add_listener(traffic.on_request)
    stop = Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(number, stop.set)
    if plan.mode == "worker":
        return _run_worker(env, plan, traffic, stop)
    if plan.mode == "master":
        runner = env.create_master_runner(plan.master_bind_host, plan.master_port)
        env.events.worker_report.add_listener(traffic.on_worker_report)
        if not _wait_for_workers(runner, plan, stop):
            runner.quit()
            return 1
    else:
        runner = env.create_local_runner()
    workers = len(runner.clients.ready) if plan.mode == "master" else 0
    gevent.spawn(stats_history, runner)
    csv = _CsvReport(env, plan.csv_prefix) if plan.csv_prefix else None
    started_at, started = time.time(), time.monotonic()
    gevent.spawn(runner.start, plan.users, plan.spawn_rate)
    progress = gevent.spawn(_progress, runner, started) if plan.progress else None
    reason = _until_done(runner, plan, started, stop)
    _stop(runner, plan, reason)
    duration = time.monotonic() - started
    if progress is not None:
        progress.kill()
        if sys.stderr.isatty():
            print(file=sys.stderr, flush=True)
    if plan.html:
        _write_html(env, plan.html)
    if snapshot_path:
        data = snapshot(runner, traffic, plan, started_at=started_at, duration=duration,
                        reason=reason, workers=workers)
        Path(snapshot_path).write_text(json.dumps(data), encoding="utf-8")
    runner.quit()
    if csv is not None:
        csv.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dreamsuite.loadtest.run",
                                     description="The Locust process of dreamsuite loadtest.")
    parser.add_argument("plan", help="the run plan (JSON) written by dreamsuite loadtest")
    parser.add_argument("snapshot", nargs="?", help="where to write the statistics (JSON)")
    args = parser.parse_args(argv)
    plan = RunPlan.read(args.plan)
    logging.basicConfig(level=logging.INFO if plan.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(plan, args.snapshot)


if __name__ == "__main__":
    sys.exit(main())
