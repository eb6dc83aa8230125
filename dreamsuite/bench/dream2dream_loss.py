"""``dreamsuite bench dream2dream-loss``: dream2dream's training losses compared on one workload.

Each loss of ``--losses`` (default: ``paired`` and ``pix2pix``, :data:`dreamsuite.gan.paired.LOSSES`)
trains a local job on the same data sets, with the same seed, steps, batch, crop and width; the
jobs are evaluated on the same held-out pairs every ``--eval-every`` steps (EfficientNet-Lite2,
which no loss trains on: ``perceptual_ratio`` = distance(one-pass, optimised dream) / distance
(photo, optimised dream), the issue's target <= 0.5; and the same ratio in L1 and in the Gram
(texture statistics) distance, ``style_ratio``). The table puts
the losses side by side per step, with seconds per training step; ``--png`` writes held-out
rows of photo | optimised dream | each loss's one-pass dream. The better loss is the one with
the lower final ``perceptual_ratio``: that is how the default was chosen.

``--seed-floor N`` (default 8) also scores the optimisation itself the same way: N held-out
photos dreamed again with their data set's dream config and the next seed
(:func:`dreamsuite.gan.paired.seed_floor`). A dream depends on its seed as much as on its photo,
so this is about as close as anything that sees only the photo can come to the stored dream:
the reference the losses' ratios are read against.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid

import torch

from dreamsuite.artifacts import open_store
from dreamsuite.errors import InvalidArgument
from dreamsuite.gan.data import read_manifest
from dreamsuite.gan.dream2dream import one_pass_batch
from dreamsuite.gan.paired import LOSSES, conditions_of, load_dream2dream, load_pairs, seed_floor
from dreamsuite.gan.records import read_model
from dreamsuite.gan.train import TrainConfig, run
from dreamsuite.images import image_grid, save_png

__all__ = ["measure", "main"]

#: Held-out rows in the PNG.
PNG_ROWS = 6


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _train(args: argparse.Namespace, loss: str) -> dict:
    """One job with ``loss``: its evaluations by step, seconds per step, the job id."""
    job_id = f"bench-{loss}-{uuid.uuid4().hex[:12]}"
    config = TrainConfig(job_id=job_id, artifacts=args.artifacts, dataset=args.datasets[0],
                         datasets=tuple(args.datasets) if len(args.datasets) > 1 else (),
                         model="dream2dream", loss=loss, steps=args.steps, batch=args.batch,
                         seed=args.seed, crop=args.crop, width=args.width,
                         eval_every=args.eval_every, checkpoint_every=args.steps,
                         preview_seeds=0, device=args.device).validate()
    evaluations: dict[int, dict[str, float]] = {}
    last = [0.0]

    def emit(event: dict) -> None:
        if event.get("event") == "evaluation":
            evaluations[int(event["step"])] = dict(event["metrics"])
        elif event.get("event") == "progress" and time.monotonic() - last[0] > 5:
            last[0] = time.monotonic()
            _progress(f"  {loss}: step {event.get('step')}/{args.steps}, "
                      f"loss {event.get('g_loss', 0):.3f}")

    started = time.perf_counter()
    outcome = run(config, open_store(args.artifacts), emit=emit)
    seconds = time.perf_counter() - started
    if outcome != "done":
        raise InvalidArgument(f"the {loss} job {job_id} ended {outcome!r}")
    return {"job": job_id, "seconds": round(seconds, 2),
            "seconds_per_step": round(seconds / args.steps, 4), "evaluations": evaluations}


def _png(args: argparse.Namespace, jobs: dict[str, dict]) -> None:
    store = open_store(args.artifacts)
    pairs = load_pairs(store, [read_manifest(store, d) for d in args.datasets], "holdout")
    if not len(pairs):
        return
    step = max(1, len(pairs) // PNG_ROWS)
    pairs = pairs.take(range(0, len(pairs), step)[:PNG_ROWS])
    photos, dreams = pairs.photos.float() / 255, pairs.dreams.float() / 255
    columns = [photos, dreams]
    for job in jobs.values():
        model, _ = load_dream2dream(store, read_model(store, job["job"])["checkpoint"], "cpu")
        columns.append(one_pass_batch(model, photos, pairs.conditions))
    grid = image_grid(torch.stack(columns, dim=1).flatten(0, 1), columns=len(columns))
    save_png(grid, args.png, text={"columns": "photo | optimised dream | " + " | ".join(jobs)})
    _progress(f"wrote {args.png}: held-out photo | optimised dream | {' | '.join(jobs)}")


def measure(args: argparse.Namespace) -> dict:
    """Train every loss; the figures of :func:`main`'s table."""
    jobs = {}
    for loss in args.losses:
        _progress(f"training dream2dream with loss={loss}: {args.steps} steps of {args.batch}")
        jobs[loss] = _train(args, loss)
    final = {loss: job["evaluations"].get(args.steps, {}) for loss, job in jobs.items()}
    ratios = {loss: m.get("perceptual_ratio", float("nan")) for loss, m in final.items()}
    best = min(ratios, key=lambda loss: ratios[loss])
    return {"datasets": list(args.datasets), "steps": args.steps, "batch": args.batch,
            "seed": args.seed, "crop": args.crop, "width": args.width, "jobs": jobs,
            "final_perceptual_ratio": ratios, "best": best, "target": 0.5,
            "seed_floor": _seed_floor(args)}


def _seed_floor(args: argparse.Namespace) -> dict | None:
    """The optimisation's own ratio on held-out pairs with the next seed; None when not
    asked for, ``{"error": ...}`` when the data sets cannot be dreamed again."""
    if args.seed_floor <= 0:
        return None
    store = open_store(args.artifacts)
    manifests = [read_manifest(store, d) for d in args.datasets]
    pairs = load_pairs(store, manifests, "holdout")
    if not len(pairs):
        return {"error": "no held-out pairs"}
    _progress(f"dreaming {min(args.seed_floor, len(pairs))} held-out photos again with the "
              "next seed (the optimisation's own ratio) ...")
    try:
        return seed_floor(pairs, [c["dream_config"] for c in conditions_of(manifests)],
                          count=args.seed_floor, device=args.device,
                          progress=lambda done, total: _progress(f"  {done}/{total}"))
    except InvalidArgument as exc:
        return {"error": str(exc)}


def _check(args: argparse.Namespace) -> None:
    unknown = [loss for loss in args.losses if loss not in LOSSES]
    if unknown or len(set(args.losses)) != len(args.losses) or not args.losses:
        raise InvalidArgument(f"--losses: give distinct losses among {', '.join(LOSSES)}")
    if args.steps < 1 or args.batch < 1:
        raise InvalidArgument("--steps and --batch must be at least 1")


def main(args: argparse.Namespace) -> int:
    _check(args)
    figures = measure(args)
    if args.png:
        _png(args, figures["jobs"])
    if args.json:
        print(json.dumps(figures))
        return 0
    losses = list(figures["jobs"])
    print(f"workload: data sets {', '.join(figures['datasets'])}; {figures['steps']} steps of "
          f"{figures['batch']}, seed {figures['seed']}; held-out evaluation on "
          "EfficientNet-Lite2 (perceptual ratio: one-pass vs photo, distance to the optimised "
          "dream; target <= 0.5)")
    print(f"{'step':>6}" + "".join(f"{loss + ' perc.':>16}{loss + ' L1':>13}{loss + ' style':>16}"
                                   for loss in losses))
    steps = sorted({s for job in figures["jobs"].values() for s in job["evaluations"]})
    for step in steps:
        row = f"{step:>6}"
        for loss in losses:
            m = figures["jobs"][loss]["evaluations"].get(step, {})
            row += f"{m.get('perceptual_ratio', float('nan')):>16.3f}"
            row += f"{m.get('l1_ratio', float('nan')):>13.3f}"
            row += f"{m.get('style_ratio', float('nan')):>16.3f}"
        print(row)
    print(f"{'s/step':>6}" + "".join(f"{figures['jobs'][loss]['seconds_per_step']:>16.3f}"
                                     f"{'':>29}" for loss in losses))
    best = figures["best"]
    ratio = figures["final_perceptual_ratio"][best]
    print(f"best: {best} (final perceptual ratio {ratio:.3f}; target <= 0.5 "
          f"{'ok' if ratio <= 0.5 else 'MISSED'})")
    floor = figures["seed_floor"]
    if floor and "error" in floor:
        print(f"seed floor: not measured ({floor['error']})")
    elif floor:
        print(f"seed floor: the optimised dream with the next seed scores perceptual "
              f"{floor['perceptual_ratio']:.3f}, L1 {floor['l1_ratio']:.3f}, style "
              f"{floor['style_ratio']:.3f} on {floor['pairs']:.0f} held-out pairs (what the "
              "photo alone determines)")
    return 0
