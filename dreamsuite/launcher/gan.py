"""What the ``dreamsuite gan`` commands do: on this machine (engine and trainer in-process,
an artifact store here) or through the GAN service (``--remote``), and the GAN demo."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import torch
from google.protobuf.json_format import MessageToDict
from torchvision.utils import make_grid
from tqdm import tqdm

from dreamsuite.artifacts import ArtifactStore, open_store
from dreamsuite.clients.gan import GanClient
from dreamsuite.defaults import DEMO_GAN_MODEL, DEMO_GAN_STEPS
from dreamsuite.engine import DreamConfig, Maplist, dream, parse_layer_spec
from dreamsuite.errors import InvalidArgument
from dreamsuite.gan.data import load_split, read_manifest
from dreamsuite.gan.dataset import (
    BuildProgress,
    build_dataset,
    builtin_photos,
    folder_photos,
    plan_dataset,
    prefix_photos,
)
from dreamsuite.gan.evaluate import evaluate_sets
from dreamsuite.gan.records import list_models, read_model
from dreamsuite.gan.sample import load_generator, sample
from dreamsuite.gan.train import TrainConfig, run
from dreamsuite.images import encode_png, load_image, save_png
from dreamsuite.launcher.plots import line_chart
from dreamsuite.v1 import gan_pb2
from dreamsuite.wire.convert import request_from_config

__all__ = ["build_dataset_command", "train_command", "watch_command", "model_records",
           "sample_command", "evaluate_command", "export_command", "demo", "store_of"]

#: The dream every demo photo gets: the default layer and step, strong enough to leave a mark
#: that survives 64 px. A lighter one (8 steps of 0.02) left the dreamed training crops farther
#: from the held-out dreams than the undreamed photos are (KID on Lite2), so no generator could
#: have shown that it learned the dream; this one puts them nearer (the evaluation's floor).
DEMO_DREAM = DreamConfig(octaves=3, steps=20, step_size=0.04, seed=0)


def store_of(location: str) -> ArtifactStore:
    """An artifact store from a URL or a folder (created)."""
    if "://" not in location:
        Path(location).mkdir(parents=True, exist_ok=True)
        location = Path(location).resolve().as_uri()
    return open_store(location)


# --- data sets ---------------------------------------------------------------------------------


def _dream_config(args: argparse.Namespace) -> DreamConfig:
    changes = {name: getattr(args, name) for name in ("octaves", "steps", "step_size", "seed")
               if getattr(args, name, None) is not None}
    if args.backbone:
        changes["backbone"] = args.backbone
    if args.weights:
        changes["weights"] = args.weights
    if args.layer:
        changes["maplist"] = Maplist(tuple(parse_layer_spec(s) for s in args.layer))
    return dataclasses.replace(DreamConfig(), **changes).validate()


def _bar(total: int, quiet: bool, unit: str) -> tqdm:
    return tqdm(total=total, unit=unit, disable=quiet, dynamic_ncols=True)


def _show_build(bar: tqdm, progress: BuildProgress) -> None:
    bar.total = progress.total
    bar.n = progress.done
    failed = sum(progress.failures.values())
    bar.set_postfix(failed=failed) if failed else None
    bar.refresh()


def build_local(store: ArtifactStore, source: tuple[str, str], config: DreamConfig, *,
                size: int, holdout: float, crops: int, max_images: int = 0,
                progress: Callable[[BuildProgress], None] | None = None,
                device: str | None = None):
    """Dream a data set on this machine into ``store``; returns the manifest."""
    kind, value = source
    failures: dict[str, int] = {}
    if kind == "builtin":
        photos = builtin_photos(value)
    elif kind == "folder":
        photos, failures = folder_photos(value, [Path(value)])
    else:
        photos, failures = prefix_photos(store, value)
    plan = plan_dataset(photos, config, source={"kind": kind, "name": value}, size=size,
                        holdout_fraction=holdout,
                        crops_per_photo=crops or (24 if kind == "builtin" else 1),
                        max_images=max_images, failures=failures)

    def dream_png(png: bytes) -> bytes:
        with torch.inference_mode(False):
            return encode_png(dream(load_image(png), plan.config, device=device).image)

    # One dream at a time: the engine already uses every core.
    return build_dataset(plan, store, dream_png, concurrency=1, progress=progress)


def build_dataset_command(args: argparse.Namespace) -> int:
    source = (("folder", args.folder) if args.folder else ("prefix", args.prefix)
              if args.prefix else ("builtin", args.builtin or "skimage"))
    config = _dream_config(args)
    bar = _bar(0, args.quiet, "image")
    try:
        if args.remote:
            template = request_from_config(config, b"\x89PNG")
            template.ClearField("image")
            request = gan_pb2.BuildDatasetRequest(
                source=gan_pb2.DatasetSource(**{source[0]: source[1]}), dream=template,
                size=args.size, holdout_fraction=args.holdout, crops_per_photo=args.crops,
                max_images=args.max_images, concurrency=args.concurrency)
            with GanClient(args.remote, timeout=None) as client:
                last = None
                for last in client.build_dataset(request):
                    bar.total, bar.n = last.total, last.done
                    bar.refresh()
            if last is None or not last.HasField("dataset"):
                raise InvalidArgument("the GAN service ended the build without a data set")
            dataset_id, train, holdout = last.dataset.id, last.dataset.train, last.dataset.holdout
            existing, failed = last.existing, last.failed
        else:
            store = store_of(args.artifacts)
            manifest = build_local(store, source, config, size=args.size, holdout=args.holdout,
                                   crops=args.crops, max_images=args.max_images,
                                   progress=lambda p: _show_build(bar, p), device=args.device)
            counts = manifest.counts
            dataset_id, train, holdout = manifest.id, counts["train"], counts["holdout"]
            existing, failed = False, sum(manifest.failures.values())
    finally:
        bar.close()
    note = " (existed already)" if existing else ""
    print(f"data set {dataset_id}{note}: {train} train, {holdout} holdout images"
          + (f", {failed} failed" if failed else ""))
    return 0


# --- training ----------------------------------------------------------------------------------


def _train_fields(args: argparse.Namespace) -> dict:
    datasets = [args.dataset] if isinstance(args.dataset, str) else list(args.dataset)
    fields = {"dataset": datasets[0], "model": args.model, "steps": args.steps,
              "batch": args.batch, "seed": args.seed, "checkpoint_every": args.checkpoint_every,
              "eval_every": args.eval_every}
    if len(datasets) > 1:
        fields["datasets"] = datasets
    for name in ("width", "lr", "crop", "loss"):
        if getattr(args, name, None) is not None:
            fields[name] = getattr(args, name)
    return fields


def progress_postfix(event: dict) -> dict[str, str]:
    """The progress bar's figures for a trainer's progress event.

    A figure is null (or absent) in the first event of a resumed trainer, sent before its first
    step, and where it was NaN (JSON has no NaN): it shows as "-", never as a TypeError."""
    def figure(key: str, spec: str) -> str:
        value = event.get(key)
        return "-" if value is None else format(value, spec)

    if "pixel_loss" in event:  # dream2dream: no discriminator
        return {"loss": figure("g_loss", ".3f"), "pixel": figure("pixel_loss", ".4f"),
                "perceptual": figure("perceptual_loss", ".3f")}
    return {"d": figure("d_loss", ".3f"), "g": figure("g_loss", ".3f"),
            "real": figure("d_real_sign", "+.2f")}


def train_local(store: ArtifactStore, config: TrainConfig, *, quiet: bool = False,
                on_event: Callable[[dict], None] | None = None) -> str:
    """Train in this process with a progress bar; Ctrl-C or SIGTERM checkpoint, then stop."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    bar = _bar(config.steps, quiet, "step")

    def emit(event: dict) -> None:
        if event.get("event") == "progress":
            bar.n = int(event.get("step", 0))
            bar.set_postfix(progress_postfix(event))
            bar.refresh()
        elif event.get("event") == "evaluation" and not quiet:
            metrics = ", ".join(f"{k}={v:.4g}" for k, v in event.get("metrics", {}).items())
            tqdm.write(f"step {event.get('step')}: {metrics}")
        if on_event is not None:
            on_event(event)

    try:
        return run(config, store, emit=emit, should_stop=stop.is_set)
    finally:
        bar.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _watch(client: GanClient, job_id: str, quiet: bool) -> gan_pb2.TrainProgress:
    bar = _bar(0, quiet, "step")
    last = None
    try:
        for last in client.watch(job_id):
            bar.total, bar.n = last.total, last.step
            bar.set_description(gan_pb2.JobState.Name(last.state).removeprefix("JOB_STATE_"))
            bar.set_postfix(d=f"{last.d_loss:.3f}", g=f"{last.g_loss:.3f}")
            bar.refresh()
    finally:
        bar.close()
    if last is None:
        raise InvalidArgument(f"job {job_id}: the GAN service sent no progress")
    return last


def _report(progress: gan_pb2.TrainProgress) -> int:
    state = gan_pb2.JobState.Name(progress.state).removeprefix("JOB_STATE_")
    print(f"job {progress.job_id}: {state} at step {progress.step}/{progress.total}"
          + (f" ({progress.message})" if progress.message else "")
          + (f"; checkpoint {progress.checkpoint.uri}" if progress.HasField("checkpoint") else ""))
    return 0 if state in ("SUCCEEDED", "CANCELLED") else 1


def train_command(args: argparse.Namespace) -> int:
    fields = _train_fields(args)
    if args.remote:
        optional = ("width", "lr", "crop")
        request = gan_pb2.StartTrainingRequest(**{k: v for k, v in fields.items()
                                                  if k not in optional})
        for name in optional:
            if name in fields:
                setattr(request, name, fields[name])
        with GanClient(args.remote, timeout=60) as client:
            job_id = client.start_training(request)
            print(f"job {job_id} started (model name {job_id})", flush=True)
            if args.detach:
                return 0
            return _report(_watch(client, job_id, args.quiet))
    store = store_of(args.artifacts)
    job_id = args.job_id or uuid.uuid4().hex
    fields = {k: tuple(v) if k == "datasets" else v for k, v in fields.items()}
    config = TrainConfig(job_id=job_id, artifacts=store.url, **fields).validate()
    print(f"training job {job_id} (model name {job_id}; resume with --job-id {job_id})",
          flush=True)
    outcome = train_local(store, config, quiet=args.quiet)
    print(f"job {job_id}: {outcome}")
    return 0


def watch_command(args: argparse.Namespace) -> int:
    with GanClient(args.remote, timeout=None) as client:
        return _report(_watch(client, args.job, args.quiet))


# --- models, sampling, evaluation -----------------------------------------------------------


def model_records(args: argparse.Namespace) -> list[dict]:
    if args.remote:
        with GanClient(args.remote) as client:
            return [MessageToDict(m, preserving_proto_field_name=True) for m in client.models()]
    return list_models(store_of(args.artifacts))


def sample_images(store: ArtifactStore, model: str, seeds: list[int], *,
                  truncation: float | None = None, device: str | None = None) -> torch.Tensor:
    """``[N, 3, H, W]`` images of ``model`` (a model record in ``store``) for ``seeds``."""
    record = read_model(store, model)
    generator, _ = load_generator(store, record["checkpoint"], torch.device(device or "cpu"))
    return sample(generator, seeds, truncation=float("inf") if truncation is None else truncation,
                  device=torch.device(device or "cpu"))


def sample_command(args: argparse.Namespace, seeds: list[int]) -> int:
    if args.remote:
        request = gan_pb2.SampleRequest(model=args.model, seeds=seeds, inline_images=True)
        if args.truncation is not None:
            request.truncation = args.truncation
        with GanClient(args.remote) as client:
            response = client.sample(request)
        images = torch.stack([load_image(i.image) for i in response.images])
    else:
        images = sample_images(store_of(args.artifacts), args.model, seeds,
                               truncation=args.truncation)
    if args.each:
        for seed, image in zip(seeds, images, strict=True):
            save_png(image, Path(args.each) / f"seed_{seed:06d}.png")
    grid = make_grid(images, nrow=max(1, round(len(seeds) ** 0.5)), padding=2, pad_value=1.0)
    path = save_png(grid, args.output)
    print(f"wrote {path} ({len(seeds)} samples of {args.model})")
    return 0


def export_command(args: argparse.Namespace) -> int:
    """``dreamsuite gan export MODEL``: the TorchServe archive of a dream2dream model."""
    from handlers.archive import build_dream2dream_archive

    store = store_of(args.artifacts)
    path = build_dream2dream_archive(
        store, args.model, Path(args.output), name=args.name, batch_size=args.batch_size,
        max_batch_delay=args.max_batch_delay, workers=args.workers, max_pixels=args.max_pixels)
    record = read_model(store, args.model)
    names = [c.get("name", "?") for c in record.get("conditions") or []]
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): TorchServe model "
          f"{path.stem!r}, step {record.get('step')}, {len(names)} condition(s): "
          + ", ".join(f"{i}={n}" for i, n in enumerate(names)))
    return 0


def evaluation_sets(store: ArtifactStore, model: str, *, samples: int = 0,
                    device: str | None = None) -> dict[str, torch.Tensor]:
    """S (the training split's source photos), Dtr, Dho (dreamed train and holdout) and G
    (samples) of a model."""
    record = read_model(store, model)
    manifest = read_manifest(store, record["dataset"])
    dtr = load_split(store, manifest, "train")
    dho = load_split(store, manifest, "holdout")
    # S: the photos the GAN's dreams were made from (the training split's sources). The
    # holdout photos are left out of S: Dho shares their content, so KID(S, Dho) would measure
    # content overlap, not how dream-like a set is.
    photos = load_split(store, manifest, "train", kind="source")
    count = samples or len(dtr) + len(dho)
    generated = sample_images(store, model, list(range(10_000, 10_000 + count)), device=device)
    return {"S": photos, "Dtr": dtr, "Dho": dho, "G": generated}


def evaluate_command(args: argparse.Namespace) -> int:
    store = store_of(args.artifacts)
    sets = evaluation_sets(store, args.model, samples=args.samples, device=args.device)
    report = evaluate_sets(sets, device=args.device or "cpu", bootstrap=args.bootstrap)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())
    return 0


# --- the demo ------------------------------------------------------------------------------------


def demo(out: Path, *, steps: int = DEMO_GAN_STEPS, crops: int = 24, device: str | None = None,
         bootstrap: int = 200, model: str = DEMO_GAN_MODEL) -> list[Path]:
    """Built-in photos -> dreamed data set -> ``model`` -> samples and evaluation, in
    ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    store = store_of(str(out / "artifacts"))
    started = time.perf_counter()
    print(f"dreaming the built-in photos ({crops} crops each, 64 px) ...", flush=True)
    bar = _bar(0, False, "image")
    manifest = build_local(store, ("builtin", "skimage"), DEMO_DREAM, size=64, holdout=0.25,
                           crops=crops, progress=lambda p: _show_build(bar, p), device=device)
    bar.close()
    print(f"data set {manifest.id}: {manifest.counts} ({time.perf_counter() - started:.0f} s)")
    events: list[dict] = []
    config = TrainConfig(job_id=f"demo-{model}-{manifest.id[:12]}", artifacts=store.url,
                         dataset=manifest.id, model=model, steps=steps,
                         checkpoint_every=max(1, steps // 5), eval_every=max(1, steps // 3),
                         device=device).validate()
    print(f"training {model} for {steps} steps ...", flush=True)
    train_local(store, config, on_event=events.append)
    print("sampling and evaluating ...", flush=True)
    sets = evaluation_sets(store, config.job_id, device=device)
    report = evaluate_sets(sets, device=device or "cpu", bootstrap=bootstrap)
    written = [
        save_png(make_grid(sets["G"][:64], nrow=8, padding=2, pad_value=1.0),
                 out / "samples.png"),
        save_png(make_grid(sets["Dtr"][:64], nrow=8, padding=2, pad_value=1.0),
                 out / "dreamed-train.png"),
        save_png(make_grid(sets["S"][:64], nrow=8, padding=2, pad_value=1.0),
                 out / "source-photos.png"),
    ]
    (out / "evaluation.txt").write_text(report.table() + "\n")
    (out / "evaluation.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    written += [out / "evaluation.txt", out / "evaluation.json"]
    progress = [e for e in events if e.get("event") == "progress"]
    evaluations = [e for e in events if e.get("event") == "evaluation"]
    series = {"D loss": [(e["step"], e["d_loss"]) for e in progress],
              "G loss": [(e["step"], e["g_loss"]) for e in progress],
              "D sign on real": [(e["step"], e["d_real_sign"]) for e in progress]}
    for name in ("kid_lite2", "kid_lite0"):
        points = [(e["step"], e["metrics"][name]) for e in evaluations if name in e["metrics"]]
        if points:
            series[name] = points
    written.append(line_chart(series, out / "curves.png", title=f"{model} on dreamed photos"))
    print(report.table())
    return written
