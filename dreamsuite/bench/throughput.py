"""``dreamsuite bench throughput``: dreams/min of the dream service with cross-request batching
off and on, at several concurrencies and sizes, in one run.

For each size and batching mode a fresh service runs in this process on a loopback port (queue
large enough for the highest concurrency, so nothing is refused). Before timing, one warm-up
round at the highest concurrency loads the backbone and lets ``auto`` batching calibrate that
size. Then, for each concurrency ``c``, ``c`` closed-loop clients each keep one dream in flight
until ``dreams`` dreams (at least four per client) are done: dreams/min is that count over the
wall time; time to first octave is from a call's start to its first update. The embedded
backbone, one dream config for all (the GAN data-set case: many dreams of one size and config).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from dreamsuite.bench.service import BackgroundServer
from dreamsuite.clients.dream import DreamClient, request_from_config
from dreamsuite.defaults import DEFAULT_BACKBONE
from dreamsuite.engine import DreamConfig
from dreamsuite.engine.objectives import Maplist, parse_layer_spec
from dreamsuite.images import encode_png, sample_image

__all__ = ["main", "TARGETS", "measure"]

#: Dreams/min with batching over without, at concurrency 8 (the issue's targets on 2 CPU
#: cores); 256 px and up: batching may cost at most 5%.
TARGETS = {64: 1.5, 128: 1.2, 256: 0.95, 512: 0.95}


@dataclass
class ThroughputFigure:
    size: int
    batching: str
    concurrency: int
    dreams: int
    dreams_per_minute: float
    first_octave_p50_seconds: float
    first_octave_p95_seconds: float
    mean_batch: float
    queue_size: int
    max_batch: int
    batch_window_ms: float


def _config(steps: int, octaves: int, layer: str) -> DreamConfig:
    return DreamConfig(backbone=DEFAULT_BACKBONE, octaves=octaves, steps=steps,
                       maplist=Maplist((parse_layer_spec(layer),)), seed=0)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _round(server: BackgroundServer, request, concurrency: int, dreams: int) -> tuple[float,
                                                                                      list[float]]:
    """Wall seconds for ``dreams`` dreams by ``concurrency`` closed-loop clients, and each
    dream's time to its first update."""
    left = [dreams]
    lock = threading.Lock()
    firsts: list[float] = []
    errors: list[BaseException] = []

    def client_loop() -> None:
        with DreamClient(server.server.address) as client:
            while True:
                with lock:
                    if left[0] == 0:
                        return
                    left[0] -= 1
                started = time.perf_counter()
                first = None
                try:
                    for _ in client.dream(request, timeout=3600):
                        first = first or time.perf_counter() - started
                except BaseException as exc:  # reported after the round
                    errors.append(exc)
                    return
                with lock:
                    firsts.append(first or 0.0)

    threads = [threading.Thread(target=client_loop) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"a dream failed during the bench: {errors[0]}")
    return time.perf_counter() - started, firsts


def _batches(server: BackgroundServer) -> tuple[float, float]:
    registry = server.server.registry
    return (registry.get_sample_value("dream_batch_size_count") or 0.0,
            registry.get_sample_value("dream_batch_size_sum") or 0.0)


def measure(sizes: list[int], concurrencies: list[int], *, dreams: int, steps: int,
            octaves: int, layer: str, max_batch: int, window_ms: float, device: str | None,
            progress=print) -> list[ThroughputFigure]:
    figures = []
    queue_size = max(concurrencies)
    config = _config(steps, octaves, layer)
    for size in sizes:
        png = encode_png(sample_image("coffee", size=size))
        request = request_from_config(config, image=png)
        for batching in ("off", "auto"):
            with tempfile.TemporaryDirectory() as tmp:
                server = BackgroundServer(Path(tmp), device, queue_size=queue_size,
                                          batching=batching, max_batch=max_batch,
                                          batch_window_ms=window_ms,
                                          preload=(DEFAULT_BACKBONE,))
                try:
                    _round(server, request, queue_size, queue_size)  # warm-up, calibration
                    for concurrency in concurrencies:
                        count = max(dreams, 4 * concurrency)
                        before = _batches(server)
                        wall, firsts = _round(server, request, concurrency, count)
                        after = _batches(server)
                        batches = after[0] - before[0]
                        figure = ThroughputFigure(
                            size, batching, concurrency, count, 60 * count / wall,
                            statistics.median(firsts), _percentile(firsts, 0.95),
                            (after[1] - before[1]) / batches if batches else 0.0,
                            queue_size, max_batch, window_ms)
                        figures.append(figure)
                        progress(f"  {size:>4} px  batching {batching:<4}  c={concurrency}: "
                                 f"{figure.dreams_per_minute:7.1f} dreams/min, "
                                 f"mean batch {figure.mean_batch:.1f}")
                finally:
                    server.close()
    return figures


def speedups(figures: list[ThroughputFigure]) -> dict[tuple[int, int], float]:
    """``{(size, concurrency): dreams/min with batching auto / off}``."""
    by = {(f.size, f.batching, f.concurrency): f.dreams_per_minute for f in figures}
    return {(size, c): by[(size, "auto", c)] / by[(size, "off", c)]
            for size, batching, c in by if batching == "off" and (size, "auto", c) in by}


def main(args: argparse.Namespace) -> int:
    print(f"dream throughput: {DEFAULT_BACKBONE} up to {args.layer}, {args.octaves} octaves x "
          f"{args.steps} steps, sizes {args.sizes}, concurrency {args.concurrency}; "
          f"queue {max(args.concurrency)}, max batch {args.max_batch}, window "
          f"{args.window_ms:g} ms", flush=True)
    figures = measure(args.sizes, args.concurrency, dreams=args.dreams, steps=args.steps,
                      octaves=args.octaves, layer=args.layer, max_batch=args.max_batch,
                      window_ms=args.window_ms, device=args.device,
                      progress=lambda line: print(line, flush=True))
    ratios = speedups(figures)
    if args.json:
        print(json.dumps({"figures": [asdict(f) for f in figures],
                          "speedups": [{"size": s, "concurrency": c, "ratio": r}
                                       for (s, c), r in ratios.items()]}))
        return 0
    print(f"\n{'size':>5}{'c':>4}{'off/min':>10}{'auto/min':>10}{'ratio':>8}{'batch':>7}"
          f"{'ttfo p50 off':>14}{'auto':>7}{'p95 off':>9}{'auto':>7}{'target':>8}")
    by = {(f.size, f.batching, f.concurrency): f for f in figures}
    for (size, c), ratio in ratios.items():
        off, on = by[(size, "off", c)], by[(size, "auto", c)]
        target = TARGETS.get(size) if c == 8 else None
        mark = "" if target is None else (f"{target:.2f} " + ("ok" if ratio >= target
                                                              else "MISSED"))
        print(f"{size:>5}{c:>4}{off.dreams_per_minute:>10.1f}{on.dreams_per_minute:>10.1f}"
              f"{ratio:>8.2f}{on.mean_batch:>7.1f}{off.first_octave_p50_seconds:>14.2f}"
              f"{on.first_octave_p50_seconds:>7.2f}{off.first_octave_p95_seconds:>9.2f}"
              f"{on.first_octave_p95_seconds:>7.2f}  {mark}")
    return 0
