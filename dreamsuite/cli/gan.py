"""``dreamsuite gan ...``: dreamed data sets, GAN training, sampling and evaluation; one-pass
dream models (``train --model dream2dream``) and their TorchServe archives (``export``).

Every command works on an artifact store on this machine (``--artifacts``, default
``./artifacts``: the engine and the trainer run here) or, with ``--remote HOST:PORT``, through
the GAN service (which dreams through the dream service and trains in its own processes).
Long steps show a progress bar; Ctrl-C stops a local training after a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dreamsuite.cli.options import add_backbone_options
from dreamsuite.defaults import DEMO_GAN_MODEL, DEMO_GAN_MODELS, DEMO_GAN_STEPS
from dreamsuite.errors import InvalidArgument
from handlers import DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCH_DELAY_MS

__all__ = ["register", "parse_seeds"]

_MODELS = ("dcgan64", "fastgan128", "projected64", "dream2dream")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gan", help="dreamed data sets, GAN training, sampling, evaluation")
    which = p.add_subparsers(dest="gan", metavar="GAN_COMMAND", required=True)

    b = which.add_parser("build-dataset", help="dream a set of photos into a data set")
    source = b.add_mutually_exclusive_group()
    source.add_argument("--builtin", default=None, metavar="NAME",
                        help="built-in photos (default skimage: scikit-image's colour photos)")
    source.add_argument("--folder", help="a folder of photos (remote: below the server's roots)")
    source.add_argument("--prefix", help="an artifact prefix of the store with photos")
    b.add_argument("--size", type=int, default=64, help="square side in pixels (default 64)")
    b.add_argument("--holdout", type=float, default=0.25,
                   help="share of photos held out (split by photo; default 0.25)")
    b.add_argument("--crops", type=int, default=0,
                   help="crops per photo (default 24 for built-in photos, else 1)")
    b.add_argument("--max-images", type=int, default=0, help="at most this many (0: all)")
    b.add_argument("--concurrency", type=int, default=4, help="dreams in flight (default 4)")
    add_backbone_options(b)
    for flag, kind, what in (("--octaves", int, "octaves"), ("--steps", int, "steps per octave"),
                             ("--step-size", float, "step size"), ("--seed", int, "seed")):
        b.add_argument(flag, type=kind, help=f"dream {what}")
    _add_target(b)
    b.set_defaults(func=cmd_build_dataset)

    t = which.add_parser("train", help="train a GAN on a data set (or dream2dream on several)")
    t.add_argument("dataset", nargs="+",
                   help="data set id (from build-dataset); dream2dream: one or more, one "
                        "condition each, in order")
    t.add_argument("--model", choices=_MODELS, default="dcgan64",
                   help="dream2dream: one-pass dreams, trained on (photo, dream) pairs")
    t.add_argument("--crop", type=int, default=None,
                   help="dream2dream: training crop side in px (default half the data sets')")
    t.add_argument("--loss", choices=("paired", "pix2pix", "objective"),  # paired.LOSSES
                   default=None,
                   help="dream2dream: paired (default: L1 + perceptual to the dream), pix2pix "
                        "(plus a patch discriminator) or objective (no pairs: the dream "
                        "objective itself, Johnson et al.)")
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-every", type=int, default=200)
    t.add_argument("--eval-every", type=int, default=0, help="0: evaluate at the end only")
    t.add_argument("--width", type=int, default=None, help="network width (model default)")
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--detach", action="store_true", help="remote: print the job id and return")
    t.add_argument("--job-id", help="local: resume this job (default: a new one)")
    _add_target(t)
    t.set_defaults(func=cmd_train)

    w = which.add_parser("watch", help="follow a training job of the GAN service")
    w.add_argument("job")
    _add_target(w, remote_only=True)
    w.set_defaults(func=cmd_watch)

    c = which.add_parser("cancel", help="checkpoint and stop a training job")
    c.add_argument("job")
    _add_target(c, remote_only=True)
    c.set_defaults(func=cmd_cancel)

    j = which.add_parser("jobs", help="training jobs of the GAN service")
    j.add_argument("--json", action="store_true")
    _add_target(j, remote_only=True)
    j.set_defaults(func=cmd_jobs)

    m = which.add_parser("models", help="trained (checkpointed) generators")
    m.add_argument("--json", action="store_true")
    _add_target(m)
    m.set_defaults(func=cmd_models)

    s = which.add_parser("sample", help="sample images from a model, written as a grid")
    s.add_argument("model")
    s.add_argument("--seeds", default="0-63", help="seeds: 1-64, or 1,5,9 (default 0-63)")
    s.add_argument("--truncation", type=float, default=None, help="redraw |z| beyond this")
    s.add_argument("-o", "--output", required=True, help="grid PNG to write")
    s.add_argument("--each", metavar="DIR", help="also write each image here")
    _add_target(s)
    s.set_defaults(func=cmd_sample)

    e = which.add_parser("evaluate", help="KID, FID, precision/recall, memorisation, SWD")
    e.add_argument("model")
    e.add_argument("--samples", type=int, default=0, help="images of G (default: as many as "
                                                          "the data set)")
    e.add_argument("--bootstrap", type=int, default=200)
    e.add_argument("--json", action="store_true")
    e.add_argument("--device", default=None)
    e.add_argument("--artifacts", default="artifacts", help="store (default ./artifacts)")
    e.set_defaults(func=cmd_evaluate)

    x = which.add_parser("export", help="a dream2dream model as a TorchServe model archive")
    x.add_argument("model", help="the model (the id of the job that trained it)")
    x.add_argument("-o", "--output", default="model-store", metavar="DIR",
                   help="model store folder (created; default ./model-store): DIR/NAME.mar")
    x.add_argument("--name", help="TorchServe model name (default: the model)")
    x.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help=f"TorchServe batch size (default {DEFAULT_BATCH_SIZE})")
    x.add_argument("--max-batch-delay", type=int, default=DEFAULT_MAX_BATCH_DELAY_MS,
                   help="milliseconds TorchServe waits to fill a batch "
                        f"(default {DEFAULT_MAX_BATCH_DELAY_MS})")
    x.add_argument("--workers", type=int, default=1, help="workers (default 1)")
    x.add_argument("--max-pixels", type=int, default=None,
                   help="largest photo the handler accepts (default 2048 x 2048)")
    x.add_argument("--artifacts", default="artifacts",
                   help="the store holding the model (default ./artifacts; the GAN service's "
                        "store, e.g. s3://BUCKET?endpoint=HOST:PORT, for a remote model)")
    x.set_defaults(func=cmd_export)

    u = which.add_parser("publish", help="a dream2dream model served by the suite's TorchServe "
                                         "(the dream service's --model) without a restart")
    u.add_argument("model", help="the model (the id of the job that trained it)")
    u.add_argument("--name", default="", help="TorchServe model name (default: the model); a "
                                              "name already served is replaced")
    u.add_argument("--batch-size", type=int, default=0,
                   help=f"TorchServe batch size (default {DEFAULT_BATCH_SIZE})")
    u.add_argument("--max-batch-delay", type=int, default=0,
                   help="milliseconds TorchServe waits to fill a batch "
                        f"(default {DEFAULT_MAX_BATCH_DELAY_MS})")
    u.add_argument("--json", action="store_true")
    _add_target(u, remote_only=True)
    u.set_defaults(func=cmd_publish)

    d = which.add_parser("demo", help="built-in photos -> data set -> GAN -> samples, evaluation")
    d.add_argument("--out", default="out/gan", help="output folder (default out/gan)")
    d.add_argument("--steps", type=int, default=DEMO_GAN_STEPS,
                   help=f"training steps (default {DEMO_GAN_STEPS})")
    d.add_argument("--crops", type=int, default=24, help="crops per photo (default 24)")
    d.add_argument("--model", choices=DEMO_GAN_MODELS, default=DEMO_GAN_MODEL,
                   help=f"the GAN (default {DEMO_GAN_MODEL}; projected64: DCGAN's generator "
                        "against a discriminator on Lite0's frozen features; dcgan64: the "
                        "classic small-data baseline)")
    d.add_argument("--device", default=None)
    d.set_defaults(func=cmd_demo)


def _add_target(p: argparse.ArgumentParser, *, remote_only: bool = False) -> None:
    p.add_argument("--remote", metavar="HOST:PORT", required=remote_only,
                   help="the GAN service" + ("" if remote_only else " (default: this machine)"))
    if not remote_only:
        p.add_argument("--artifacts", default="artifacts",
                       help="local artifact store (default ./artifacts)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def parse_seeds(text: str) -> list[int]:
    """``1-64`` or ``1,5,9`` (or a mix: ``0-3,10``) as a list of seeds."""
    seeds: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            low, dash, high = part.partition("-")
            seeds += list(range(int(low), int(high) + 1)) if dash else [int(low)]
    except ValueError:
        raise InvalidArgument(f"--seeds {text!r}: use 1-64 or 1,5,9") from None
    if not seeds:
        raise InvalidArgument("--seeds: give at least one seed")
    return seeds


# heavy (torch, the GAN library): every command below loads it when it runs (see
# options.config_from_args); the command functions live in dreamsuite.launcher.gan.
def cmd_build_dataset(args: argparse.Namespace) -> int:
    from dreamsuite.launcher import gan

    return gan.build_dataset_command(args)


def cmd_train(args: argparse.Namespace) -> int:
    from dreamsuite.launcher import gan

    return gan.train_command(args)


def cmd_watch(args: argparse.Namespace) -> int:
    from dreamsuite.launcher import gan

    return gan.watch_command(args)


def cmd_cancel(args: argparse.Namespace) -> int:
    from dreamsuite.clients.gan import GanClient

    with GanClient(args.remote) as client:
        progress = client.cancel(args.job)
    print(f"job {args.job}: {progress.state and _state(progress.state)} at step {progress.step}")
    return 0


def _state(number: int) -> str:
    from dreamsuite.v1 import gan_pb2

    return gan_pb2.JobState.Name(number).removeprefix("JOB_STATE_")


def cmd_jobs(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToDict

    from dreamsuite.clients.gan import GanClient

    with GanClient(args.remote) as client:
        jobs = client.jobs()
    if args.json:
        print(json.dumps([MessageToDict(j) for j in jobs], indent=2))
        return 0
    for job in jobs:
        print(f"{job.job_id}  {_state(job.state):<10} {job.model:<10} step {job.step}/"
              f"{job.total}  data set {job.dataset}  restarts {job.restarts}")
    if not jobs:
        print("no jobs")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from dreamsuite.launcher import gan

    records = gan.model_records(args)
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    for r in records:
        evaluation = r.get("evaluation") or {}
        kid, ratio = evaluation.get("kid_lite2"), evaluation.get("perceptual_ratio")
        style = evaluation.get("style_ratio")
        datasets = r.get("datasets") or [r.get("dataset", "?")]
        print(f"{r['model']}  {r.get('kind', '?'):<11} step {r.get('step', 0):<6} "
              f"data set{'s' if len(datasets) > 1 else ''} {', '.join(datasets)}  "
              f"{'finished' if r.get('finished') else 'checkpoint'}"
              + (f"  KID(Lite2) {kid:.4f}" if isinstance(kid, float) else "")
              + (f"  perceptual(out,dream)/(photo,dream) {ratio:.3f}"
                 if isinstance(ratio, float) else "")
              + (f"  style {style:.3f}" if isinstance(style, float) else ""))
    if not records:
        print("no models", file=sys.stderr)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from dreamsuite.launcher import gan

    return gan.sample_command(args, parse_seeds(args.seeds))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from dreamsuite.launcher import gan

    return gan.evaluate_command(args)


def cmd_export(args: argparse.Namespace) -> int:
    from dreamsuite.launcher import gan

    return gan.export_command(args)


def cmd_publish(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToDict

    from dreamsuite.clients.gan import GanClient
    from dreamsuite.v1 import gan_pb2

    request = gan_pb2.PublishModelRequest(model=args.model, name=args.name,
                                          batch_size=args.batch_size,
                                          max_batch_delay_ms=args.max_batch_delay)
    with GanClient(args.remote, timeout=900) as client:  # builds, then waits for workers
        published = client.publish(request)
    if args.json:
        print(json.dumps(MessageToDict(published), indent=2))
        return 0
    print(f"published {args.model} as TorchServe model {published.name!r} version "
          f"{published.version} (dream --model {published.name}); conditions: "
          + ", ".join(f"{i}={n}" for i, n in enumerate(published.conditions)))
    print(f"  archive  {published.archive.uri} ({published.archive.size_bytes / 1e6:.1f} MB)")
    for endpoint in published.registered:
        print(f"  served   {endpoint}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from dreamsuite.launcher import gan

    written = gan.demo(Path(args.out), steps=args.steps, crops=args.crops, device=args.device,
                       model=args.model)
    print(f"wrote {len(written)} files to {Path(args.out).resolve()}:")
    for path in written:
        print(f"  {path}")
    return 0
