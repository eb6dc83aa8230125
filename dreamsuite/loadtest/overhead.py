"""``dreamsuite bench loadtest``: what the load tester adds to the latencies it reports.

One run starts a guide service in-process (in-process backend, cache on), warms its cache with
one small guide, then starts two client processes (:mod:`dreamsuite.loadtest.probe`) and makes
``--calls`` cached ``ComputeGuideWeights`` calls (milliseconds each) on each side, interleaved
in chunks of ``--chunk`` calls so that load from other processes hits both sides alike:

- ``plain``: a plain blocking gRPC client timing each call, back to back;
- ``pool``: the same plain client making each call in a worker thread, so that its calls are
  paced as the load tester's are (a hand-over to a native thread and back between calls);
- ``loadtest``: the load tester's own path, in a process with a Locust runner:
  :func:`dreamsuite.loadtest.calls.unary` called from a greenlet as every Locust user calls it
  (the call in a native thread of gevent's pool), reporting to Locust's request event
  (``reported``: the times Locust's statistics got; ``wall``: the whole instrumented call as the
  greenlet sees it, hand-over and reporting included);
- ``gevent`` (reference): the textbook alternative, gRPC patched for gevent
  (``grpc.experimental.gevent.init_gevent``) and called from the greenlet itself.

``ratio`` = median reported / median pool: what the load tester adds to the latency of the
same calls made at the same pace (target < 1.05: under 5%). ``ratio_back_to_back`` = median
reported / median plain also counts what the pacing itself costs: a call that follows an idle
gap is slower than one sent the moment the last ended (the server's and client's threads have
gone to sleep; on a VM whose idle CPUs halt, each wake-up costs tens of microseconds), and any
client that does something between calls pays it, a thread hand-over included. ``ratio_wall``
and ``ratio_gevent`` compare the other two sides with ``plain``; ``ratio_p10`` and
``ratio_p90`` compare the fastest and slowest tenths with ``pool``. The sides take turns going
first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from dreamsuite.defaults import DEFAULT_BACKBONE
from dreamsuite.loadtest.connect import stub_method, user_channel
from dreamsuite.loadtest.payloads import build_payloads
from dreamsuite.loadtest.scenario import Calls
from services.common import ServerConfig
from services.common.loop_thread import LoopThread
from services.guide.server import GuideConfig, start_guide_server

__all__ = ["main", "measure", "TARGET_RATIO"]

TARGET_RATIO = 1.05


class _Probe:
    """A probe process: ``run(n)`` makes n calls there and returns its timings."""

    def __init__(self, mode: str, target: str, request_file: Path):
        self.mode = mode
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dreamsuite.loadtest.probe", mode, target, str(request_file)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {mode} probe did not start (exit {self.process.wait()})")

    def run(self, count: int) -> dict[str, list[float]]:
        self.process.stdin.write(f"{count}\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def _figures(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median_ms": round(statistics.median(ordered), 4),
            "p10_ms": round(ordered[int(0.1 * (len(ordered) - 1))], 4),
            "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 4),
            "mean_ms": round(statistics.fmean(ordered), 4), "calls": len(ordered)}


def measure(args: argparse.Namespace, loop: LoopThread, workdir: Path) -> dict:
    backbone = args.backbone or DEFAULT_BACKBONE
    calls = Calls(kind="guide_weights", backbone=backbone, layers=(args.layer,),
                  sizes=(args.size,))
    request = build_payloads(calls).valid[0]
    request_file = workdir / "request.bin"
    request_file.write_bytes(request.SerializeToString())
    guide = loop.run(start_guide_server(ServerConfig(host="127.0.0.1", port=0, metrics_port=None),
                                        GuideConfig(activations="inprocess")))
    probes = []
    try:
        with user_channel(guide.address) as channel:  # the first call loads and caches
            stub_method("guide_weights", channel)(request, timeout=300)
        probes = [_Probe(mode, guide.address, request_file)
                  for mode in ("plain", "pool", "locust", "gevent")]
        times: dict[str, list[float]] = {"plain": [], "pool": [], "reported": [], "wall": [],
                                         "gevent": []}
        for index in range(max(1, args.calls // args.chunk)):
            shift = index % len(probes)
            for probe in probes[shift:] + probes[:shift]:
                result = probe.run(args.chunk)
                if probe.mode == "locust":
                    times["reported"] += result["reported_ms"]
                    times["wall"] += result["wall_ms"]
                else:
                    times[probe.mode] += result["reported_ms"]
    finally:
        for probe in probes:
            probe.close()
        loop.run(guide.stop(0))
    figures = {name: _figures(values) for name, values in times.items()}

    def ratio(side: str, baseline: str, figure: str = "median_ms") -> float:
        return round(figures[side][figure] / figures[baseline][figure], 4)

    return {
        "backbone": backbone, "layer": args.layer, "guide_size": args.size,
        "calls": args.calls, "chunk": args.chunk, **figures,
        "ratio": ratio("reported", "pool"),
        "ratio_back_to_back": ratio("reported", "plain"),
        "ratio_pacing": ratio("pool", "plain"),
        "ratio_wall": ratio("wall", "plain"),
        "ratio_gevent": ratio("gevent", "plain"),
        "ratio_p10": ratio("reported", "pool", "p10_ms"),
        "ratio_p90": ratio("reported", "pool", "p90_ms"),
        "target_ratio": TARGET_RATIO,
    }


def main(args: argparse.Namespace) -> int:
    loop = LoopThread()
    try:
        with tempfile.TemporaryDirectory(prefix="dreamsuite-bench-loadtest-") as tmp:
            figure = measure(args, loop, Path(tmp))
    finally:
        loop.close()
    if args.json:
        print(json.dumps(figure))
        return 0
    ok = "ok" if figure["ratio"] < TARGET_RATIO else "MISSED"
    print(f"cached ComputeGuideWeights ({figure['backbone']} {figure['layer']}, "
          f"{args.size} px guide), {args.calls} calls a side in chunks of {args.chunk}")
    for name, label in (("plain", "plain client, back to back"),
                        ("pool", "plain client, worker thread"),
                        ("reported", "load tester, reported"),
                        ("wall", "load tester, whole call"),
                        ("gevent", "init_gevent (reference)")):
        f = figure[name]
        print(f"  {label:<28} median {f['median_ms']:7.3f} ms   p10 {f['p10_ms']:7.3f} ms   "
              f"p90 {f['p90_ms']:7.3f} ms")
    print(f"  load tester / plain client at the same pace {figure['ratio']:.3f} "
          f"(p10 {figure['ratio_p10']:.3f}, p90 {figure['ratio_p90']:.3f})   "
          f"target < {TARGET_RATIO} {ok}")
    print(f"  against back-to-back calls {figure['ratio_back_to_back']:.3f}, of which the pacing "
          f"alone {figure['ratio_pacing']:.3f}; whole call {figure['ratio_wall']:.3f}, "
          f"init_gevent {figure['ratio_gevent']:.3f}")
    return 0
