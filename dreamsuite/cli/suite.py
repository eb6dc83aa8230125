"""``dreamsuite up | down | status | health``: the whole suite on this machine, and a gRPC
health probe for containers and scripts."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from dreamsuite.defaults import DEFAULT_BACKBONE
from dreamsuite.launcher import (
    Suite,
    check_health,
    check_torchserve,
    default_run_dir,
    read_state,
    recorded_processes,
    stop_recorded,
)

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start TorchServe, the guide and the dream service locally")
    _add_run_dir(p)
    p.add_argument("--artifacts", metavar="URL",
                   help="artifact store (default file://RUN_DIR/artifacts; s3://... for S3)")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE,
                   help="backbone TorchServe serves (archive built when missing)")
    p.add_argument("--model-store", type=Path, default=None,
                   help="where backbone archives are kept (default ~/.cache/dreamsuite/...)")
    p.add_argument("--with-prometheus", action="store_true",
                   help="also run Prometheus (Debian package `prometheus`) scraping every service")
    p.add_argument("--detach", action="store_true",
                   help="return once everything serves; stop later with `dreamsuite down`")
    p.add_argument("--timeout", type=float, default=240.0,
                   help="seconds each service may take to report SERVING (default 240)")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="stop the suite that `dreamsuite up` started")
    _add_run_dir(p)
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("status", help="what the local suite runs and whether each part serves")
    _add_run_dir(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("health", help="gRPC health check of a server (exit 0 when SERVING)")
    p.add_argument("target", metavar="HOST:PORT", nargs="?",
                   default=os.environ.get("DREAMSUITE_HEALTH_TARGET", "127.0.0.1:50051"),
                   help="server to ask (default $DREAMSUITE_HEALTH_TARGET or 127.0.0.1:50051)")
    p.add_argument("--service", default="", help="service name (default: the whole server)")
    p.add_argument("--torchserve", action="store_true",
                   help="TARGET is TorchServe's gRPC inference API: ask its Ping")
    p.add_argument("--torchserve-token", default=os.environ.get("DREAMSUITE_TORCHSERVE_TOKEN"),
                   help="with --torchserve: its inference key, where its token authorization "
                        "is on [env DREAMSUITE_TORCHSERVE_TOKEN]")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    p.set_defaults(func=cmd_health)


def _add_run_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", type=Path, default=None,
                   help="state and logs (default $DREAMSUITE_RUN_DIR or "
                        "~/.local/state/dreamsuite/suite)")


def _run_dir(args: argparse.Namespace) -> Path:
    return (args.run_dir or default_run_dir()).resolve()


def cmd_up(args: argparse.Namespace) -> int:
    suite = Suite(_run_dir(args), artifacts=args.artifacts, backbone=args.backbone,
                  with_prometheus=args.with_prometheus, startup_timeout=args.timeout,
                  model_store=args.model_store)
    stop = threading.Event()
    # SIGTERM (`dreamsuite down`) and SIGHUP end the wait like Ctrl-C does. Ctrl-C (SIGINT)
    # raises KeyboardInterrupt even where it was inherited ignored (a shell starts background
    # jobs so, and Python then leaves it ignored), so it also interrupts a slow start.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    print(f"starting the suite in {suite.run_dir} ...", flush=True)
    try:
        suite.start()
        print("dreamsuite is up:")
        for line in suite.describe():
            print(line)
        if args.detach:
            suite.detach()
            print("stop it with: dreamsuite down" + _run_dir_flag(args), flush=True)
            return 0
        print("Ctrl-C (or `dreamsuite down`) stops it.", flush=True)
        while not stop.wait(1.0):
            exited = [p.name for p in suite.processes if not p.alive()]
            if exited:
                print(f"dreamsuite: {', '.join(exited)} exited; stopping the suite "
                      f"(logs in {suite.run_dir / 'logs'})", file=sys.stderr)
                return 1
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if not args.detach:
            print("stopping the suite ...", flush=True)
            suite.stop()
            print("stopped.", flush=True)


def _run_dir_flag(args: argparse.Namespace) -> str:
    return f" --run-dir {args.run_dir}" if args.run_dir else ""


def cmd_down(args: argparse.Namespace) -> int:
    stopped = stop_recorded(_run_dir(args))
    if not stopped:
        print(f"no suite runs from {_run_dir(args)}")
        return 0
    print(f"stopped: {', '.join(stopped)}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state = read_state(_run_dir(args))
    if state is None:
        print(json.dumps({"running": False}) if args.json else
              f"no suite runs from {_run_dir(args)} (start one with `dreamsuite up`)")
        return 3
    rows = [{"name": p.name, "pid": p.pid, "endpoint": p.endpoint, "ports": p.ports,
             "status": p.status()} for p in recorded_processes(state)]
    if args.json:
        print(json.dumps({"running": True, "artifacts": state.get("artifacts"),
                          "services": rows}, indent=2))
    else:
        print(f"suite in {state['run_dir']} (artifacts {state.get('artifacts')}):")
        for row in rows:
            print(f"  {row['name']:<11} {row['status']:<12} {row['endpoint']:<16} "
                  f"pid {row['pid']}")
    return 0 if all(r["status"] == "SERVING" for r in rows) else 1


def cmd_health(args: argparse.Namespace) -> int:
    if args.torchserve:
        status = check_torchserve(args.target, args.timeout, args.torchserve_token)
    else:
        status = check_health(args.target, args.service, args.timeout)
    print(f"{args.target} {args.service or ('TorchServe' if args.torchserve else '(server)')}: "
          f"{status}")
    return 0 if status == "SERVING" else 1
