"""``dreamsuite loadtest``: options -> a run plan -> Locust -> summary, JSON and SLO verdict.

``register(sub)`` adds the command to the ``dreamsuite`` parser; ``main(argv)`` runs it on its
own (``python -m dreamsuite.loadtest.cli``). ``register_bench(which)`` adds ``dreamsuite bench
loadtest`` (:mod:`dreamsuite.loadtest.overhead`). Building the parser imports nothing heavy.

Exit codes: 0 the run met its SLO (or had none), 1 it missed it, 2 bad options, scenario or SLO,
130 interrupted before the load began (a master waiting for its workers).
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["register", "register_bench", "add_arguments", "main"]

_DESCRIPTION = """Load-test the suite with Locust: simulated users call the dream service
(Dream, streamed), the guide service (ComputeGuideWeights, SelectNeurons) and the GAN service
(Sample). Headless; prints a live progress line, then a summary (dreams/min, calls/s, latency
percentiles, status codes, bytes, the servers' own figures with --metrics)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``dreamsuite loadtest``."""
    p.add_argument("target", nargs="?", metavar="TARGET",
                   help="the dream service, HOST:PORT or a gRPC target (dns:///NAME:PORT)")
    p.add_argument("--guide", metavar="HOST:PORT", help="the guide service (guide users)")
    p.add_argument("--gan", metavar="HOST:PORT", help="the GAN service (Sample users)")
    p.add_argument("--scenario", metavar="FILE", help="scenario file (YAML or JSON): mix, "
                   "sizes, schedule, deadlines, token; flags override it")
    _load_arguments(p.add_argument_group("load"))
    _request_arguments(p.add_argument_group("requests (override the scenario for every kind)"))
    _output_arguments(p.add_argument_group("output"))
    _distributed_arguments(p.add_argument_group("distributed (Locust's master and workers)"))


def _load_arguments(load: argparse._ArgumentGroup) -> None:
    load.add_argument("-u", "--users", type=int, default=8, help="simulated users (default 8)")
    load.add_argument("-r", "--spawn-rate", type=float, default=2.0,
                      help="users started per second (default 2)")
    load.add_argument("-t", "--duration", metavar="TIME",
                      help="run time, e.g. 60s, 5m (default 60s; none with --dreams)")
    load.add_argument("--dreams", type=int, metavar="N",
                      help="stop once N dreams have completed (calls in flight finish); "
                           "without --duration also once N dreams have failed")
    load.add_argument("--stop-timeout", default="30s", metavar="TIME",
                      help="how long calls in flight may finish at the end (default 30s)")
    load.add_argument("--mix", metavar="KIND=W,...", help="users by weight: dream, "
                      "guide_weights, select_neurons, sample (default: every service given)")
    load.add_argument("--wait", metavar="S|MIN-MAX",
                      help="seconds a user waits between its calls (default 0)")


def _request_arguments(calls: argparse._ArgumentGroup) -> None:
    calls.add_argument("--backbone", help="backbone name (default: the server's)")
    calls.add_argument("--layer", action="append", dest="layers", metavar="LAYER",
                       help="layer to dream on / guide with (repeatable)")
    calls.add_argument("--size", action="append", dest="sizes", type=int, metavar="PX",
                       help="shorter side of the built-in photos (repeatable; default 224)")
    calls.add_argument("--image", action="append", dest="images", metavar="FILE",
                       help="send this image instead of the built-in photos (repeatable)")
    calls.add_argument("--octaves", type=int, help="octaves per dream (default: the server's)")
    calls.add_argument("--steps", type=int, help="steps per octave (default: the server's)")
    calls.add_argument("--octave-scale", type=float, help="octave scale")
    calls.add_argument("--deadline", metavar="TIME",
                       help="deadline of every call (default 10m for dreams, 60s otherwise)")
    calls.add_argument("--invalid", type=float, metavar="FRACTION",
                       help="share of deliberately malformed requests (default 0)")
    calls.add_argument("--gan-model", dest="model", metavar="NAME", help="model for Sample")
    calls.add_argument("--dream-model", metavar="NAME", help="one-pass dreams: the trained "
                       "dream2dream model the dream service asks TorchServe for")
    calls.add_argument("--condition", metavar="NAME", help="with --dream-model: the model's "
                       "dream config (a condition name or index)")
    calls.add_argument("--token", help="bearer token (default: $DREAMSUITE_TOKEN)")


def _output_arguments(out: argparse._ArgumentGroup) -> None:
    out.add_argument("--json", metavar="FILE", help="write the summary as JSON ('-': stdout, "
                     "the table then goes to stderr)")
    out.add_argument("--html", metavar="FILE", help="write Locust's HTML report")
    out.add_argument("--csv", metavar="PREFIX", help="write Locust's CSV files (PREFIX_stats.csv, "
                     "...)")
    out.add_argument("--metrics", action="append", default=[], metavar="URL",
                     help="a service's Prometheus /metrics to report server-side figures from "
                          "(repeatable)")
    out.add_argument("--slo", metavar="SPEC", help="exit 1 unless the run meets it, e.g. "
                     "'p95_total<30s,error_rate<0.01'")
    out.add_argument("--no-progress", dest="progress", action="store_false",
                     help="no live progress line")


def _distributed_arguments(dist: argparse._ArgumentGroup) -> None:
    mode = dist.add_mutually_exclusive_group()
    mode.add_argument("--master", action="store_true", help="run as master: workers make calls")
    mode.add_argument("--worker", action="store_true", help="run as a worker of --master-host")
    dist.add_argument("--master-host", default="127.0.0.1", help="where the master listens")
    dist.add_argument("--master-port", type=int, default=5557, help="master port (5557)")
    dist.add_argument("--master-bind-host", default="*", help="master's bind address (all)")
    dist.add_argument("--expect-workers", type=int, default=1, metavar="N",
                      help="the master starts once N workers are connected (default 1)")
    dist.add_argument("--expect-workers-timeout", default="5m", metavar="TIME",
                      help="give up waiting for workers after this (default 5m)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``loadtest`` to the ``dreamsuite`` subcommands."""
    p = sub.add_parser("loadtest", help="load-test the suite with Locust (SLO gate, reports)",
                       description=_DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=_loadtest)


def register_bench(which: argparse._SubParsersAction) -> None:
    """Add ``loadtest`` to the ``dreamsuite bench`` benchmarks."""
    b = which.add_parser("loadtest", help="the load tester's own overhead on cached "
                                          "ComputeGuideWeights calls vs a plain client")
    b.add_argument("--json", action="store_true", help="print the figures as JSON")
    b.add_argument("--calls", type=int, default=1000, help="calls on each side (default 1000)")
    b.add_argument("--chunk", type=int, default=10,
                   help="calls a side makes before the other takes over (default 10)")
    b.add_argument("--size", type=int, default=64, help="guide side in pixels (default 64)")
    b.add_argument("--layer", default="block_6", help="guide layer (default block_6)")
    b.add_argument("--backbone", default=None, help="backbone (default: the embedded one)")
    b.set_defaults(func=_bench)


# heavy: grpc, prometheus_client, yaml and the Locust process only when the command runs, so
# building the dreamsuite parser stays fast.
def _loadtest(args: argparse.Namespace) -> int:
    from dreamsuite.loadtest.command import run_command

    return run_command(args)


def _bench(args: argparse.Namespace) -> int:
    from dreamsuite.loadtest import overhead

    return overhead.main(args)


def main(argv: list[str] | None = None) -> int:
    """``dreamsuite loadtest`` on its own; the exit code."""
    parser = argparse.ArgumentParser(prog="dreamsuite loadtest", description=_DESCRIPTION)
    add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="Locust's own log lines")
    args = parser.parse_args(argv)
    from dreamsuite.errors import DreamsuiteError  # here: the module imports stdlib only

    try:
        return _loadtest(args)
    except DreamsuiteError as exc:
        print(f"dreamsuite loadtest: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dreamsuite loadtest: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
