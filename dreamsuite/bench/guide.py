"""``dreamsuite bench guide``: guide-weight latency through TorchServe vs in-process.

One run builds the backbone archive, starts TorchServe (free loopback ports) and a guide service
on it with its cache off, then interleaves, for a 512x512 guide (PNG):

- ``inprocess``: decode the PNG and :func:`dreamsuite.engine.guide.guide_weights` in this process;
- ``torchserve``: ``ComputeGuideWeights`` on the guide service (gRPC client -> guide service ->
  TorchServe handler -> back), the path the dream service takes;
- ``torchserve_backend``: the TorchServe activation backend alone (no guide service hop).

Each figure is the median over ``--rounds``; ``ratio`` = torchserve / inprocess (target <= 1.5).
``ratio_best`` compares the fastest rounds, which other load on the machine disturbs least.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from dreamsuite.activations.backend import layer_stats
from dreamsuite.activations.torchserve_client import TorchServeBackend
from dreamsuite.backbones import get_backbone
from dreamsuite.clients.guide import GuideClient
from dreamsuite.engine.guide import GUIDE_MAX_SIDE, guide_weights
from dreamsuite.images import encode_png, load_image, resize, sample_image
from dreamsuite.torchserve import TorchServe, require_java
from handlers.archive import build_archive
from services.common import ServerConfig
from services.common.loop_thread import LoopThread
from services.guide.server import GuideConfig, start_guide_server

__all__ = ["main", "TARGET_RATIO"]

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


def main(args: argparse.Namespace) -> int:
    require_java()
    loop = LoopThread()
    try:
        with tempfile.TemporaryDirectory(prefix="dreamsuite-bench-guide-") as tmp:
            store = Path(tmp) / "model-store"
            print(f"archiving {args.backbone} and starting TorchServe ...", file=sys.stderr)
            build_archive(args.backbone, store)
            figure = measure(args, store, loop)
    finally:
        loop.close()
    if args.json:
        print(json.dumps(figure))
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
