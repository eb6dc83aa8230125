"""``dreamsuite bench one-pass``: a one-pass dream (a trained ``dream2dream`` network served by
TorchServe) vs the optimised dream, both through the dream service, in one run.

Set-up, all in a temporary folder: a tiny paired data set (random photos and made-up dreams:
the weights do not matter for timing, the architecture does), a ``dream2dream`` model trained on
it for :data:`TRAIN_STEPS` steps at the default width, exported to a model store as ``dreamsuite
gan export`` does (its batch settings), a local TorchServe serving it (loopback, token
authorization off) and an in-process dream service (loopback, free port) whose fast path
(``torchserve``) points at that TorchServe. The optimised dreams run on that same service.

- **End to end**: one ``--size`` px square photo (scikit-image's astronaut) sent by a
  :class:`~dreamsuite.clients.dream.DreamClient` as a ``DreamRequest`` and followed to the
  result's PNG, inline in the stream (PNG encoding, artifact writes, the TorchServe round trip
  included): the default optimised dream (``DreamConfig()``: EfficientNet-Lite0, its default
  layer, 4 octaves x 10 steps) vs the one-pass request (``model``) for the same photo, in
  ``--rounds`` interleaved rounds after a warm-up (a one-step optimised dream, which also
  calibrates the service's batching for the size, and :data:`WARM_ONE_PASS` one-pass dreams);
  the medians' ratio optimised / one-pass (target >= 10x).
  Then, unless ``--no-vgg16``, one round of a VGG16 ``relu4_3`` dream with random weights (slow
  on a CPU), against the one-pass median (reported, no target).
- **Under load**: dreams/min of ``--users`` concurrent users for ``--duration`` each,
  optimised then one-pass, measured by the suite's load tester (``dreamsuite loadtest``, run as
  its command line, ``python -m dreamsuite.loadtest.cli``: the import contract keeps the
  benches and the load tester independent; ``--image`` the same photo, ``--dream-model`` for
  the one-pass users, calls in flight at the end finish and count, so dreams/min is the dreams
  done over the whole run). The dream service's queue holds every user's dream (none is
  refused); ratio one-pass / optimised (target >= 5x).
- **Through TorchServe**: TorchServe's ``ts_inference_requests_total`` for the model and the
  dream service's ``dream_one_pass_seconds_count`` (ok) over the run, beside the one-pass dreams
  the bench got answered: the fast path is timed only if TorchServe did the work.
- The generator's cost at ``--size`` px in GMAC (:func:`dreamsuite.gan.dream2dream.gmac`).

Progress lines go to stderr; ``--json`` prints the figures as one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

from dreamsuite.artifacts import open_store
from dreamsuite.bench.service import BackgroundServer
from dreamsuite.clients.dream import DreamClient, request_from_config
from dreamsuite.defaults import DEFAULT_BACKBONE
from dreamsuite.engine import DreamConfig
from dreamsuite.engine.objectives import Maplist, parse_layer_spec
from dreamsuite.errors import InvalidArgument
from dreamsuite.gan.data import write_dataset
from dreamsuite.gan.dream2dream import DEFAULT_WIDTH, MIN_SIDE, gmac
from dreamsuite.gan.paired import load_dream2dream
from dreamsuite.gan.records import read_model
from dreamsuite.gan.train import TrainConfig, run
from dreamsuite.images import encode_png, sample_image
from dreamsuite.torchserve import TorchServe, require_java
from dreamsuite.v1 import common_pb2, dream_pb2
from handlers import DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCH_DELAY_MS
from handlers.archive import build_dream2dream_archive

__all__ = ["main", "measure", "TARGET_END_TO_END", "TARGET_LOAD", "MODEL", "WARM_ONE_PASS"]

#: One-pass over optimised: at least this much faster end to end, and this many dreams/min.
TARGET_END_TO_END = 10.0
TARGET_LOAD = 5.0
#: The benchmark's model (TorchServe name), its data set and training.
MODEL = "bench-one-pass"
DATASET = "bench-one-pass-pairs"
DATA_SIDE = 32
TRAIN_STEPS = 2
VGG16_LAYER = "relu4_3"
#: One-pass dreams before timing: TorchServe's worker takes a few calls to reach its pace.
WARM_ONE_PASS = 3
_INLINE = dream_pb2.OutputOptions(inline_images=True)


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def train_model(folder: Path, model_store: Path, device: str | None) -> torch.nn.Module:
    """Train :data:`MODEL` (default width) for :data:`TRAIN_STEPS` steps on random pairs in a
    store under ``folder`` and export it to ``model_store``; the trained network."""
    store = open_store((folder / "store").as_uri())
    g = torch.Generator().manual_seed(0)
    photos = [torch.rand(3, DATA_SIDE, DATA_SIDE, generator=g) for _ in range(4)]
    pairs = [(f"p{i}", x, (0.7 * x + 0.3 * x.flip(-1)).clamp(0, 1)) for i, x in enumerate(photos)]
    write_dataset(store, DATASET, {"train": pairs[:3], "holdout": pairs[3:]}, DATA_SIDE)
    with contextlib.redirect_stdout(sys.stderr):  # --json: stdout holds the figures alone
        run(TrainConfig(job_id=MODEL, artifacts=store.url, dataset=DATASET, model="dream2dream",
                        steps=TRAIN_STEPS, batch=2, width=DEFAULT_WIDTH,
                        checkpoint_every=TRAIN_STEPS, eval_every=-1, preview_seeds=0,
                        device=device), store)
    build_dream2dream_archive(store, MODEL, model_store)
    network, _ = load_dream2dream(store, read_model(store, MODEL)["checkpoint"], "cpu")
    return network


def torchserve_requests(ts: TorchServe, model: str = MODEL) -> float:
    """TorchServe's ``ts_inference_requests_total`` for ``model`` (its Prometheus metrics)."""
    with urllib.request.urlopen(ts.metrics_url, timeout=10) as reply:
        text = reply.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("ts_inference_requests_total") and f'"{model}"' in line)


def _one_pass_ok(server: BackgroundServer) -> float:
    return server.server.registry.get_sample_value(
        "dream_one_pass_seconds_count", {"model": MODEL, "outcome": "ok"}) or 0.0


def _optimised_request(config: DreamConfig, png: bytes) -> dream_pb2.DreamRequest:
    return request_from_config(config, png, output=_INLINE)


def _one_pass_request(png: bytes) -> dream_pb2.DreamRequest:
    return dream_pb2.DreamRequest(image=common_pb2.ImageRef(data=png), model=MODEL,
                                  output=_INLINE)


def _timed(client: DreamClient, request: dream_pb2.DreamRequest) -> float:
    """Seconds from the call to the result's PNG (inline) in hand."""
    started = time.perf_counter()
    result = None
    for update in client.dream(request, timeout=3600):
        if update.HasField("result"):
            result = update.result
    took = time.perf_counter() - started
    if result is None or not result.image.startswith(b"\x89PNG"):
        raise RuntimeError("the dream service answered without a PNG result")
    return took


def _config(octaves: int, steps: int, **fields) -> DreamConfig:
    return DreamConfig(octaves=octaves, steps=steps, **fields)


def _load(address: str, photo: Path, *, users: int, duration: float, octaves: int, steps: int,
          one_pass: bool, out: Path) -> dict:
    """The load tester's figures for ``users`` dream users for ``duration`` seconds."""
    command = [sys.executable, "-m", "dreamsuite.loadtest.cli", address, "--mix", "dream=1",
               "--users", str(users), "--spawn-rate", str(users), "--duration", f"{duration:g}",
               "--stop-timeout", "1h", "--image", str(photo), "--json", str(out)]
    command += ["--dream-model", MODEL] if one_pass else ["--octaves", str(octaves),
                                                         "--steps", str(steps)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    assert process.stdout is not None
    tail: list[str] = []
    for line in process.stdout:  # its progress lines and table, as they come
        _progress("    " + line.rstrip())
        tail = [*tail[-20:], line]
    if process.wait() != 0 or not out.exists():
        raise RuntimeError(f"dreamsuite loadtest exited with {process.returncode}:\n"
                           + "".join(tail))
    figures = json.loads(out.read_text())
    if figures["failures"] or figures["rejected"] or not figures["dreams"]:
        raise RuntimeError(f"the load test had {figures['failures']} failed and "
                           f"{figures['rejected']} rejected dreams, {figures['dreams']} done: "
                           f"{figures['codes']}")
    total = figures["latency_ms"]["total"]
    return {"dreams": figures["dreams"], "dreams_per_min": figures["dreams_per_min"],
            "duration_s": figures["duration_s"],
            "p50_seconds": total["p50"] / 1000, "p95_seconds": total["p95"] / 1000}


def _check(args: argparse.Namespace) -> None:
    if args.rounds < 1 or args.users < 1 or args.size < MIN_SIDE:
        raise InvalidArgument(f"--rounds and --users must be at least 1, --size {MIN_SIDE}")


def measure(args: argparse.Namespace) -> dict:
    _check(args)
    require_java()  # before any training: TorchServe needs it
    vgg16 = getattr(args, "vgg16", True)
    png = encode_png(sample_image("astronaut", size=args.size)[:, :args.size, :args.size])
    optimised = _config(args.octaves, args.steps)
    with tempfile.TemporaryDirectory(prefix="dreamsuite-bench-one-pass-") as tmp:
        folder = Path(tmp)
        photo = folder / "photo.png"
        photo.write_bytes(png)
        _progress(f"training {MODEL} (dream2dream, width {DEFAULT_WIDTH}) for {TRAIN_STEPS} "
                  f"steps on {DATA_SIDE} px random pairs, exporting it ...")
        network = train_model(folder, folder / "model-store", args.device)
        cost = gmac(network, args.size)
        _progress(f"starting TorchServe with {MODEL} and a dream service ...")
        with TorchServe(folder / "model-store", [MODEL], workdir=folder / "torchserve") as ts:
            server = BackgroundServer(folder / "artifacts", args.device,
                                      queue_size=max(1, args.users), torchserve=ts.grpc_target,
                                      preload=(DEFAULT_BACKBONE,))
            try:
                requests_before, service_before = torchserve_requests(ts), _one_pass_ok(server)
                answered = 0
                with DreamClient(server.server.address) as client:
                    _progress(f"warming up (one small optimised dream, {WARM_ONE_PASS} "
                              "one-pass dreams) ...")
                    _timed(client, _optimised_request(_config(1, 1), png))
                    for _ in range(WARM_ONE_PASS):
                        _timed(client, _one_pass_request(png))
                        answered += 1
                    slow, fast = [], []
                    for i in range(args.rounds):
                        slow.append(_timed(client, _optimised_request(optimised, png)))
                        fast.append(_timed(client, _one_pass_request(png)))
                        answered += 1
                        _progress(f"  round {i + 1}/{args.rounds}: optimised {slow[-1]:.3f} s, "
                                  f"one-pass {fast[-1]:.3f} s")
                    vgg = None
                    if vgg16:
                        config = _config(args.octaves, args.steps, backbone="vgg16",
                                         weights="random",
                                         maplist=Maplist((parse_layer_spec(VGG16_LAYER),)))
                        _progress(f"  vgg16 {VGG16_LAYER} (random weights): warming up, then "
                                  "one round ...")
                        _timed(client, _optimised_request(_config(1, 1, backbone="vgg16",
                                                                  weights="random"), png))
                        vgg = _timed(client, _optimised_request(config, png))
                        _progress(f"  vgg16: optimised {vgg:.3f} s")
                load = {}
                for mode in ("optimised", "one_pass"):
                    _progress(f"under load: {mode.replace('_', '-')} dreams, {args.users} users "
                              f"for {args.duration:g} s (dreamsuite loadtest) ...")
                    load[mode] = _load(server.server.address, photo, users=args.users,
                                       duration=args.duration, octaves=args.octaves,
                                       steps=args.steps, one_pass=mode == "one_pass",
                                       out=folder / f"load-{mode}.json")
                answered += load["one_pass"]["dreams"]
                through = {"one_pass_dreams": answered,
                           "torchserve_requests": torchserve_requests(ts) - requests_before,
                           "service_one_pass_ok": _one_pass_ok(server) - service_before}
            finally:
                server.close()
    opt_m, fast_m = statistics.median(slow), statistics.median(fast)
    return {
        "size": args.size, "octaves": args.octaves, "steps": args.steps, "rounds": args.rounds,
        "users": args.users, "duration_s": args.duration, "backbone": DEFAULT_BACKBONE,
        "model": {"name": MODEL, "width": DEFAULT_WIDTH, "gmac": round(cost, 4),
                  "torchserve_batch_size": DEFAULT_BATCH_SIZE,
                  "torchserve_max_batch_delay_ms": DEFAULT_MAX_BATCH_DELAY_MS},
        "end_to_end": {"optimised_seconds": round(opt_m, 4), "one_pass_seconds": round(fast_m, 4),
                       "ratio": round(opt_m / fast_m, 3), "target": TARGET_END_TO_END,
                       "optimised_runs": [round(t, 4) for t in slow],
                       "one_pass_runs": [round(t, 4) for t in fast]},
        "vgg16": None if vgg is None else {
            "layer": VGG16_LAYER, "weights": "random", "optimised_seconds": round(vgg, 4),
            "one_pass_seconds": round(fast_m, 4), "ratio": round(vgg / fast_m, 3)},
        "load": {"optimised": load["optimised"], "one_pass": load["one_pass"],
                 "ratio": round(load["one_pass"]["dreams_per_min"]
                                / load["optimised"]["dreams_per_min"], 3),
                 "target": TARGET_LOAD},
        "through_torchserve": through,
    }


def _mark(ratio: float, target: float) -> str:
    return f"target >= {target:g}x {'ok' if ratio >= target else 'MISSED'}"


def main(args: argparse.Namespace) -> int:
    _check(args)
    _progress(f"one-pass vs optimised dreams: {args.size}x{args.size} px, {args.octaves} octaves "
              f"x {args.steps} steps, {args.rounds} interleaved rounds; {args.users} users for "
              f"{args.duration:g} s each under load")
    figures = measure(args)
    if args.json:
        print(json.dumps(figures))
        return 0
    e2e, vgg, load = figures["end_to_end"], figures["vgg16"], figures["load"]
    model, through = figures["model"], figures["through_torchserve"]
    print(f"workload: {figures['size']}x{figures['size']} px photo through the dream service "
          f"(result PNG inline); optimised: {DEFAULT_BACKBONE}, default layer, "
          f"{figures['octaves']} octaves x {figures['steps']} steps; one-pass: {model['name']} "
          f"(dream2dream width {model['width']}, {model['gmac']:.2f} GMAC at "
          f"{figures['size']} px) on TorchServe (batch {model['torchserve_batch_size']}, "
          f"{model['torchserve_max_batch_delay_ms']} ms)")
    print(f"{'':<30}{'optimised':>12}{'one-pass':>12}{'ratio':>9}")
    label = f"end to end, median of {figures['rounds']}"
    print(f"{label:<30}{e2e['optimised_seconds']:>11.3f}s{e2e['one_pass_seconds']:>11.3f}s"
          f"{e2e['ratio']:>8.1f}x  {_mark(e2e['ratio'], e2e['target'])}")
    if vgg is not None:
        print(f"{'vgg16 relu4_3 (random), 1 run':<30}{vgg['optimised_seconds']:>11.3f}s"
              f"{vgg['one_pass_seconds']:>11.3f}s{vgg['ratio']:>8.1f}x  (reported)")
    label = f"dreams/min, {figures['users']} users"
    print(f"{label:<30}{load['optimised']['dreams_per_min']:>12.1f}"
          f"{load['one_pass']['dreams_per_min']:>12.1f}{load['ratio']:>8.1f}x  "
          f"{_mark(load['ratio'], load['target'])}")
    print(f"through TorchServe: {through['one_pass_dreams']} one-pass dreams answered, "
          f"{through['torchserve_requests']:g} TorchServe inference requests, "
          f"{through['service_one_pass_ok']:g} counted by dream_one_pass_seconds")
    return 0
