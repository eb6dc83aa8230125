"""``dreamsuite bench guide``: guide-weight latency through TorchServe vs in-process.

One run builds the backbone archive, starts TorchServe (free loopback ports) and a guide service
on it with its cache off, then interleaves, for a 512x512 guide (PNG):

- ``inprocess``: decode the PNG and :func:`dreamsuite.engine.guide.guide_weights` in this process;
- ``torchserve``: ``ComputeGuideWeights`` on the guide service (gRPC client -> guide service ->
  TorchServe handler -> back), the path the dream service takes;
- ``torchserve_backend``: the TorchServe activation backend alone (no guide service hop).

Each figure is the median over ``--rounds``; ``ratio`` = torchserve / inprocess (target <= 1.5).
``ratio_best`` compares the fastest rounds, which other load on the machine disturbs least.

``--batching`` measures TorchServe's dynamic batching instead: one archive, TorchServe and guide
service (cache off) per ``BATCH:DELAY_MS`` setting, all started at once; then, in interleaved
rounds (the order of the settings rotating), bursts of ``--burst`` x concurrency
``ComputeGuideWeights`` calls from that many client threads, every call with a guide image of its
own (same size, distinct bytes: neither the cache nor the single flight can answer it). Per
setting and concurrency: calls/s (calls over the bursts' wall time), p50/p95 latency, and the
mean batch size and forward-pass sharing the guide service's ``guide_backend_batch_size`` and
``guide_backend_batch_shared_forward`` histograms recorded over the measured calls (per call,
so a batch of 4 counts four times); ratios are to the first setting at the same concurrency.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from dreamsuite.activations.backend import layer_stats
from dreamsuite.activations.torchserve_client import TorchServeBackend
from dreamsuite.backbones import get_backbone
from dreamsuite.clients.guide import GuideClient
from dreamsuite.engine.guide import GUIDE_MAX_SIDE, guide_weights
from dreamsuite.errors import InvalidArgument
from dreamsuite.images import encode_png, load_image, resize, sample_image
from dreamsuite.torchserve import TorchServe, require_java
from handlers.archive import build_archive
from services.common import RunningServer, ServerConfig
from services.common.loop_thread import LoopThread
from services.guide.server import GuideConfig, start_guide_server

__all__ = ["main", "measure_batching", "parse_setting", "BatchSetting", "TARGET_RATIO"]

TARGET_RATIO = 1.5


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _guide_png(size: int) -> bytes:
    return encode_png(resize(sample_image("astronaut"), (size, size)).clamp(0, 1))


def measure(args: argparse.Namespace, store: Path, loop: LoopThread) -> dict:
    layers = args.layer or ["block_6", "block_10"]
    png = _guide_png(args.size)
    backbone = get_backbone(args.backbone)
    with TorchServe(store, [args.backbone], workdir=store.parent / "torchserve") as ts:
        backend = TorchServeBackend(ts.grpc_target)
        guide = loop.run(start_guide_server(
            ServerConfig(host="127.0.0.1", port=0, metrics_port=None),
            GuideConfig(activations=f"torchserve://{ts.grpc_target}", cache_entries=0)))
        client = GuideClient(guide.address)
        runs = {
            "inprocess": lambda: guide_weights(backbone, [load_image(png)], layers),
            "torchserve": lambda: client.guide_weights(
                [png], args.backbone, [(layer, 1.0) for layer in layers]),
            "torchserve_backend": lambda: loop.run(layer_stats(
                backend, png, args.backbone, layers, max_side=GUIDE_MAX_SIDE)),
        }
        try:
            for run in runs.values():  # warm-up: first calls load, compile and connect
                run()
            times: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(args.rounds):
                for name, run in runs.items():
                    times[name].append(_timed(run))
        finally:
            client.close()
            loop.run(guide.stop(0))
            loop.run(backend.close())
    medians = {name: statistics.median(values) for name, values in times.items()}
    best = {name: min(values) for name, values in times.items()}
    return {
        "backbone": args.backbone, "layers": layers, "guide_size": args.size,
        "rounds": args.rounds, "device": str(backbone.device),
        "inprocess_seconds": round(medians["inprocess"], 4),
        "torchserve_seconds": round(medians["torchserve"], 4),
        "torchserve_backend_seconds": round(medians["torchserve_backend"], 4),
        "ratio": round(medians["torchserve"] / medians["inprocess"], 3),
        "backend_ratio": round(medians["torchserve_backend"] / medians["inprocess"], 3),
        # Fastest round of each: the least disturbed by other load on the machine.
        "inprocess_best_seconds": round(best["inprocess"], 4),
        "torchserve_best_seconds": round(best["torchserve"], 4),
        "ratio_best": round(best["torchserve"] / best["inprocess"], 3),
        "target_ratio": TARGET_RATIO,
    }


@dataclass(frozen=True)
class BatchSetting:
    """An archive's TorchServe batch settings: ``batchSize`` and ``maxBatchDelay`` (ms)."""

    batch_size: int
    max_batch_delay: int

    @property
    def name(self) -> str:
        return f"{self.batch_size}:{self.max_batch_delay}"


def parse_setting(text: str) -> BatchSetting:
    """``BATCH:DELAY_MS`` (``4:20``) as a :class:`BatchSetting`."""
    try:
        size, delay = (int(part) for part in text.split(":"))
    except ValueError:
        raise InvalidArgument(f"batch setting {text!r}: expected BATCH:DELAY_MS, e.g. 4:20")\
            from None
    if size < 1 or delay < 0:
        raise InvalidArgument(f"batch setting {text!r}: batch >= 1 and delay >= 0 ms")
    return BatchSetting(size, delay)


def distinct_guides(size: int, count: int, start: int = 0) -> list[bytes]:
    """``count`` PNG guides of ``size`` x ``size`` pixels, the same photo with a different
    corner pixel each: distinct bytes (so distinct cache keys), one forward-pass shape."""
    base = resize(sample_image("astronaut"), (size, size)).clamp(0, 1)
    out = []
    for i in range(start, start + count):
        image = base.clone()
        image[:, 0, 0] = image.new_tensor([i % 256, i // 256 % 256, i // 65536 % 256]) / 255
        out.append(encode_png(image))
    return out


@dataclass
class _Stack:
    """TorchServe with one batch setting and a guide service (cache off) in front of it."""

    setting: BatchSetting
    torchserve: TorchServe
    registry: CollectorRegistry
    guide: RunningServer | None = None
    client: GuideClient | None = None

    def batch_figures(self) -> tuple[float, float, float, float]:
        """(count, sum) of the batch-size and the shared-forward histograms so far."""
        def get(name: str) -> float:
            return self.registry.get_sample_value(name, {"backend": "torchserve"}) or 0.0

        return (get("guide_backend_batch_size_count"), get("guide_backend_batch_size_sum"),
                get("guide_backend_batch_shared_forward_count"),
                get("guide_backend_batch_shared_forward_sum"))


def _burst(client: GuideClient, guides: Sequence[bytes], concurrency: int, backbone: str,
           layers: Sequence[str]) -> tuple[float, list[float]]:
    """Every guide in one ``ComputeGuideWeights`` call, ``concurrency`` calls in flight;
    returns the wall time and each call's latency (seconds)."""
    weights = [(layer, 1.0) for layer in layers]
    order = itertools.count()
    latencies: list[float] = []
    lock = threading.Lock()

    def user() -> None:
        while (i := next(order)) < len(guides):  # itertools.count is atomic under the GIL
            took = _timed(lambda: client.guide_weights([guides[i]], backbone, weights))
            with lock:
                latencies.append(took)

    with ThreadPoolExecutor(concurrency) as pool:
        started = time.perf_counter()
        for future in [pool.submit(user) for _ in range(concurrency)]:
            future.result()
        wall = time.perf_counter() - started
    return wall, latencies


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure_batching(args: argparse.Namespace, root: Path, loop: LoopThread) -> dict:
    """The ``--batching`` figures (see the module docstring)."""
    layers = args.layer or ["block_6", "block_10"]
    settings = [parse_setting(text) for text in args.settings]
    if len({s.name for s in settings}) != len(settings):
        raise InvalidArgument("--settings: each setting once")
    concurrencies = sorted(set(args.concurrency))
    if min(concurrencies) < 1 or args.burst < 1:
        raise InvalidArgument("--concurrency and --burst: at least 1")
    rounds = args.rounds or 3
    stacks = []
    for setting in settings:
        store = root / f"store-{setting.batch_size}-{setting.max_batch_delay}"
        build_archive(args.backbone, store, batch_size=setting.batch_size,
                      max_batch_delay=setting.max_batch_delay)
        stacks.append(_Stack(setting, TorchServe(
            store, [args.backbone], workdir=root / f"ts-{setting.batch_size}-"
            f"{setting.max_batch_delay}"), CollectorRegistry()))
    # Guides for every call: encoded before any timing, none sent twice.
    per_round = sum(args.burst * c for c in concurrencies)
    warm = args.burst * max(concurrencies)
    guides = iter(distinct_guides(args.size, len(stacks) * (warm + rounds * per_round)))
    print(f"starting {len(stacks)} TorchServes ...", file=sys.stderr)
    try:
        with ThreadPoolExecutor(len(stacks)) as pool:  # they load their workers side by side
            for future in [pool.submit(stack.torchserve.start) for stack in stacks]:
                future.result()
        for stack in stacks:
            stack.guide = loop.run(start_guide_server(
                ServerConfig(host="127.0.0.1", port=0, metrics_port=None),
                GuideConfig(activations=f"torchserve://{stack.torchserve.grpc_target}",
                            cache_entries=0), registry=stack.registry))
            stack.client = GuideClient(stack.guide.address)
            # warm-up: a burst at the highest concurrency (batches of every size the worker
            # will see), not counted
            _burst(stack.client, list(itertools.islice(guides, warm)), max(concurrencies),
                   args.backbone, layers)
        keys = [(s.setting.name, c) for c in concurrencies for s in stacks]
        walls = dict.fromkeys(keys, 0.0)
        latencies: dict[tuple[str, int], list[float]] = {key: [] for key in keys}
        figures = {key: [0.0] * 4 for key in keys}
        for r in range(rounds):
            print(f"round {r + 1}/{rounds} ...", file=sys.stderr)
            for c in concurrencies:
                for k in range(len(stacks)):  # the order rotates from round to round
                    stack = stacks[(k + r) % len(stacks)]
                    assert stack.client is not None
                    key = (stack.setting.name, c)
                    before = stack.batch_figures()
                    wall, took = _burst(stack.client, list(itertools.islice(guides, args.burst * c)),
                                        c, args.backbone, layers)
                    walls[key] += wall
                    latencies[key] += took
                    figures[key] = [a + (x - y) for a, x, y in
                                    zip(figures[key], stack.batch_figures(), before, strict=True)]
    finally:
        for stack in stacks:
            if stack.client is not None:
                stack.client.close()
            if stack.guide is not None:
                loop.run(stack.guide.stop(0))
            stack.torchserve.stop()
    rows = []
    for setting_name, c in keys:
        key = (setting_name, c)
        count, total, shared_count, shared_total = figures[key]
        rows.append({
            "setting": setting_name, "batch_size": int(setting_name.split(":")[0]),
            "max_batch_delay_ms": int(setting_name.split(":")[1]), "concurrency": c,
            "calls": len(latencies[key]),
            "calls_per_s": round(len(latencies[key]) / walls[key], 3),
            "p50_ms": round(1e3 * statistics.median(latencies[key]), 1),
            "p95_ms": round(1e3 * _percentile(latencies[key], 0.95), 1),
            "mean_batch": round(total / count, 2) if count else None,
            "mean_shared_forward": round(shared_total / shared_count, 2) if shared_count else None,
        })
    base = {row["concurrency"]: row for row in rows if row["setting"] == settings[0].name}
    for row in rows:
        ref = base[row["concurrency"]]
        row["throughput_ratio"] = round(row["calls_per_s"] / ref["calls_per_s"], 3)
        row["p50_ratio"] = round(row["p50_ms"] / ref["p50_ms"], 3)
        row["p95_ratio"] = round(row["p95_ms"] / ref["p95_ms"], 3)
    return {"backbone": args.backbone, "layers": layers, "guide_size": args.size,
            "rounds": rounds, "burst": args.burst, "baseline": settings[0].name, "rows": rows}


def _print_batching(figure: dict) -> None:
    print(f"uncached guide weights of distinct {figure['guide_size']}x{figure['guide_size']} "
          f"guides, {figure['backbone']} {', '.join(figure['layers'])}; {figure['rounds']} "
          f"interleaved rounds of {figure['burst']} calls per client; ratios to "
          f"{figure['baseline']} (batch:delay ms)")
    print(f"{'clients':>7} {'batch:delay':>11} {'calls/s':>8} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'batch':>6} {'shared':>6} {'calls/s x':>9} {'p50 x':>6} {'p95 x':>6}")
    for row in figure["rows"]:
        def fmt(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f}"

        print(f"{row['concurrency']:>7} {row['setting']:>11} {row['calls_per_s']:>8.2f} "
              f"{row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} {fmt(row['mean_batch']):>6} "
              f"{fmt(row['mean_shared_forward']):>6} {row['throughput_ratio']:>9.3f} "
              f"{row['p50_ratio']:>6.3f} {row['p95_ratio']:>6.3f}")


def main(args: argparse.Namespace) -> int:
    require_java()
    loop = LoopThread()
    try:
        with tempfile.TemporaryDirectory(prefix="dreamsuite-bench-guide-") as tmp:
            if args.batching:
                figure = measure_batching(args, Path(tmp), loop)
            else:
                store = Path(tmp) / "model-store"
                print(f"archiving {args.backbone} and starting TorchServe ...", file=sys.stderr)
                build_archive(args.backbone, store)
                args.rounds = args.rounds or 10
                figure = measure(args, store, loop)
    finally:
        loop.close()
    if args.json:
        print(json.dumps(figure))
        return 0
    if args.batching:
        _print_batching(figure)
        return 0
    ok = "ok" if figure["ratio"] <= TARGET_RATIO else "MISSED"
    print(f"guide weights of a {args.size}x{args.size} guide, {args.backbone} "
          f"{', '.join(figure['layers'])}, median of {args.rounds} rounds on {figure['device']}")
    print(f"  in-process forward           {figure['inprocess_seconds'] * 1e3:8.1f} ms")
    print(f"  guide service on TorchServe  {figure['torchserve_seconds'] * 1e3:8.1f} ms"
          f"   ratio {figure['ratio']:.3f}  target <= {TARGET_RATIO} {ok}")
    print(f"  TorchServe backend alone     {figure['torchserve_backend_seconds'] * 1e3:8.1f} ms"
          f"   ratio {figure['backend_ratio']:.3f}")
    print(f"  fastest rounds: in-process {figure['inprocess_best_seconds'] * 1e3:.1f} ms, "
          f"guide service {figure['torchserve_best_seconds'] * 1e3:.1f} ms, "
          f"ratio {figure['ratio_best']:.3f}")
    return 0
