"""A GAN training job: ``python -m dreamsuite.gan.train --config FILE.json``.

The job trains a model kind (:mod:`dreamsuite.gan.models`) on a dreamed data set
(:mod:`dreamsuite.gan.data`), or ``dream2dream`` on the (photo, dream) pairs of one or more data
sets, one per condition (``datasets``; :mod:`dreamsuite.gan.paired`), and keeps everything in
the artifact store:

- checkpoints ``jobs/<job>/checkpoints/step-<step:08d>.pt`` and the ``latest`` pointer
  (:mod:`dreamsuite.gan.checkpoint`) every ``checkpoint_every`` steps and at the end; a started
  job resumes from ``latest``, and on the CPU with ``deterministic=True`` a job killed (even with
  SIGKILL) and restarted ends with exactly the weights of an uninterrupted run;
- previews ``jobs/<job>/previews/step-<step:08d>.png``: a grid of the EMA generator's images for
  seeds ``0 .. preview_seeds - 1`` (dream2dream: rows of photo | dream | one-pass output), at
  every checkpoint;
- the model record ``models/<job>.json`` and ``jobs/<job>/status.json`` (the latest event, for
  jobs followed through the store, e.g. on Kubernetes).

It prints one JSON event per line on stdout: ``progress``, ``checkpoint``, ``preview``,
``evaluation``, then ``done`` (exit 0), ``stopped`` after SIGTERM (it checkpoints first; exit 0)
or ``error`` (exit 1). Under ``torchrun`` (``WORLD_SIZE > 1``) every rank trains its shard of
each batch (DistributedDataParallel; gloo on the CPU, NCCL on CUDA) and only rank 0 writes;
rank 0 evaluates while the others wait at a barrier, for at most ``$DREAMSUITE_DIST_TIMEOUT_S``
seconds (default 3600: longer than any evaluation, where NCCL's own default, 10 minutes, is
not).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from dreamsuite.artifacts import ArtifactStore, open_store
from dreamsuite.cpus import MAX_THREADS, apply_threads, resolve_threads
from dreamsuite.device import select_device
from dreamsuite.errors import DreamsuiteError, InvalidArgument, shorten
from dreamsuite.gan.augment import parse_policy
from dreamsuite.gan.checkpoint import job_prefix, load_latest
from dreamsuite.gan.data import dataset_prefix, load_split, read_manifest
from dreamsuite.gan.dream2dream import MIN_SIDE
from dreamsuite.gan.job import Job
from dreamsuite.gan.loop import Trainer
from dreamsuite.gan.models import ModelKind, get_model_kind
from dreamsuite.gan.paired import LOSSES as DREAM2DREAM_LOSSES

__all__ = ["TrainConfig", "run", "main", "DETERMINISTIC_THREADS", "DIST_TIMEOUT_ENV", "Emit",
           "dist_timeout"]

#: Intra-op threads in deterministic mode: results depend on the thread count, so it is fixed;
#: one thread also never waits on a descheduled sibling when the machine is oversubscribed.
DETERMINISTIC_THREADS = 1

#: How long a rank waits in a collective (the others' step, rank 0's evaluation) before the
#: process group gives up on it, in seconds.
DIST_TIMEOUT_ENV = "DREAMSUITE_DIST_TIMEOUT_S"
DIST_TIMEOUT_S = 3600

Emit = Callable[[dict[str, Any]], None]
#: Most data sets (conditions) of one dream2dream model.
MAX_CONDITIONS = 64


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training job needs (``to_dict`` is the launchers' job config).

    ``dataset`` is the data set of a GAN. A ``dream2dream`` model trains on ``datasets``, one
    condition each, in order (``dataset`` is then ``datasets[0]``); with ``datasets`` empty, on
    ``dataset`` alone. ``crop``: dream2dream's training crop in pixels (0: half the data sets'
    side, see :func:`dreamsuite.gan.paired.default_crop`). ``loss``: dream2dream's training
    loss, ``paired``, ``pix2pix`` or ``objective`` (:data:`dreamsuite.gan.paired.LOSSES`).
    ``threads``: torch threads of the job process (:func:`main`; the launcher's budget; None:
    ``$OMP_NUM_THREADS``, else the CPUs available); deterministic mode runs on
    :data:`DETERMINISTIC_THREADS` all the same."""

    job_id: str
    artifacts: str
    dataset: str
    model: str = "dcgan64"
    steps: int = 2000
    batch: int = 32
    seed: int = 0
    checkpoint_every: int = 200
    eval_every: int = 0  # every N steps and at the end; 0: at the end only; -1: never
    lr: float = 2e-4
    width: int | None = None
    ema_decay: float = 0.999
    augment: str = "color,translation,cutout"
    device: str | None = None
    deterministic: bool = False
    preview_seeds: int = 16
    datasets: tuple[str, ...] = ()
    crop: int = 0
    loss: str = "paired"
    threads: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.datasets, list):  # from JSON
            object.__setattr__(self, "datasets", tuple(self.datasets))

    @property
    def dataset_ids(self) -> list[str]:
        """The data sets trained on, in condition order."""
        return list(self.datasets) or [self.dataset]

    def validate(self) -> TrainConfig:
        """``self`` if every field is valid; :class:`InvalidArgument` naming the field."""
        job_prefix(self.job_id)
        _check_str("artifacts", self.artifacts)
        try:
            dataset_prefix(self.dataset)
        except InvalidArgument as exc:
            raise InvalidArgument(f"dataset: {exc}") from None
        try:
            kind = get_model_kind(self.model)
        except InvalidArgument as exc:
            raise type(exc)(f"model: {exc}") from None
        self._check_datasets(kind)
        kind.check_width(self.width)
        for name, low, high in (("steps", 1, 10_000_000), ("batch", 1, 4096),
                                ("seed", 0, 2**63 - 1), ("checkpoint_every", 1, 10_000_000),
                                ("eval_every", -1, 10_000_000), ("preview_seeds", 0, 256)):
            _check_int(name, getattr(self, name), low, high)
        _check_float("lr", self.lr, 0.0, 1.0, low_open=True)
        _check_float("ema_decay", self.ema_decay, 0.0, 1.0, high_open=True)
        try:
            parse_policy(self.augment)
        except InvalidArgument as exc:
            raise InvalidArgument(f"augment: {exc}") from None
        if self.device is not None:
            _check_str("device", self.device)
            try:
                torch.device(self.device)
            except RuntimeError:
                raise InvalidArgument(f"device: unknown device {shorten(self.device)!r}") from None
        if not isinstance(self.deterministic, bool):
            raise InvalidArgument("deterministic: must be true or false")
        if self.threads is not None:
            _check_int("threads", self.threads, 1, MAX_THREADS)
        return self

    def _check_datasets(self, kind: ModelKind) -> None:
        ids = self.datasets
        if not isinstance(ids, tuple) or not all(isinstance(d, str) for d in ids):
            raise InvalidArgument("datasets: must be a list of data set ids")
        for dataset in ids:
            try:
                dataset_prefix(dataset)
            except InvalidArgument as exc:
                raise InvalidArgument(f"datasets: {exc}") from None
        if ids and ids[0] != self.dataset:
            raise InvalidArgument(f"datasets: the first must be dataset ({shorten(self.dataset)!r}),"
                                  f" not {shorten(ids[0])!r}")
        if len(set(ids)) != len(ids):
            raise InvalidArgument("datasets: a data set is named twice")
        if kind.paired:
            if self.loss not in DREAM2DREAM_LOSSES:
                raise InvalidArgument(f"loss: {shorten(repr(self.loss))} is not one of "
                                      f"{', '.join(DREAM2DREAM_LOSSES)}")
            if self.crop != 0:
                _check_int("crop", self.crop, MIN_SIDE, 4096)
            if len(ids) > MAX_CONDITIONS:
                raise InvalidArgument(f"datasets: at most {MAX_CONDITIONS} (one per condition)")
            return
        if len(ids) > 1:
            raise InvalidArgument(f"datasets: a {kind.name} trains on one data set (dataset); "
                                  "several data sets are conditions of dream2dream")
        if self.crop != 0:
            raise InvalidArgument(f"crop: only dream2dream trains on crops, not {kind.name}")
        if self.loss != "paired":
            raise InvalidArgument(f"loss: only dream2dream takes a loss, not {kind.name}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """The config in ``data``, validated; unknown fields are refused (a typo would
        otherwise be silently ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidArgument(f"unknown training config fields: {shorten(', '.join(unknown))}"
                                  f"; valid: {', '.join(sorted(known))}")
        missing = [f for f in ("job_id", "artifacts", "dataset") if f not in data]
        if missing:
            raise InvalidArgument(f"{missing[0]}: required")
        return cls(**data).validate()


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(f"{name}: must be a whole number in [{low}, {high}], "
                              f"not {shorten(value)!r}")


def _check_float(name: str, value: Any, low: float, high: float, *, low_open: bool = False,
                 high_open: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise InvalidArgument(f"{name}: must be a number in {interval}, not {shorten(value)!r}")


def _check_str(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{name}: must be a non-empty string")


@dataclass(frozen=True)
class _World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0


def _start_world(device: str | None) -> _World:
    """Join the process group when started by torchrun (``WORLD_SIZE > 1``)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return _World()
    world = _World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    cuda = device != "cpu" and torch.cuda.is_available() and (device or "cuda").startswith("cuda")
    if cuda:
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=dist_timeout())
    return world


def dist_timeout(env: Mapping[str, str] = os.environ) -> timedelta:
    """The process group's collective timeout: ``$DREAMSUITE_DIST_TIMEOUT_S`` seconds, else
    :data:`DIST_TIMEOUT_S`."""
    text = env.get(DIST_TIMEOUT_ENV, "").strip()
    if not text:
        return timedelta(seconds=DIST_TIMEOUT_S)
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidArgument(f"${DIST_TIMEOUT_ENV} must be a positive number of seconds, "
                              f"not {text!r}")
    return timedelta(seconds=seconds)


def _pick_device(config: TrainConfig, world: _World) -> torch.device:
    device = select_device(config.device)
    if device.type == "cuda" and world.size > 1:
        device = torch.device("cuda", world.local_rank)
    return device


@contextlib.contextmanager
def _process_settings(deterministic: bool, device: torch.device) -> Iterator[None]:
    """Deterministic mode (same inputs, same bits: deterministic kernels and a fixed thread
    count; on CUDA as far as its kernels allow, with warnings where one has no deterministic
    form), or cuDNN autotuning on CUDA; the previous settings come back afterwards, so an
    in-process run leaves its caller as it was."""
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.get_num_threads(), torch.backends.cudnn.benchmark)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
        torch.backends.cudnn.benchmark = False
        torch.set_num_threads(DETERMINISTIC_THREADS)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.set_num_threads(before[2])
        torch.backends.cudnn.benchmark = before[3]


def run(config: TrainConfig, store: ArtifactStore | None = None, *,
        emit: Emit = lambda event: None,
        should_stop: Callable[[], bool] = lambda: False) -> str:
    """Train (or resume) the job ``config`` describes; ``"done"`` when all steps are done,
    ``"stopped"`` when ``should_stop()`` turned true (after a checkpoint). ``emit`` gets every
    event (rank 0 only)."""
    config.validate()
    world = _start_world(config.device)
    device = _pick_device(config, world)
    if config.batch % world.size:
        raise InvalidArgument(f"batch: {config.batch} does not split over {world.size} ranks")
    with _process_settings(config.deterministic, device):
        return _train(config, store or open_store(config.artifacts), world, device, emit,
                      should_stop)


def _train(config: TrainConfig, store: ArtifactStore, world: _World, device: torch.device,
           emit: Emit, should_stop: Callable[[], bool]) -> str:
    kind = get_model_kind(config.model)
    if kind.paired:
        return _train_paired(config, store, world, device, emit, should_stop)
    manifest = read_manifest(store, config.dataset)
    train = load_split(store, manifest, "train", size=kind.resolution)
    if not len(train):
        raise InvalidArgument(f"dataset: {config.dataset!r} has no training images")
    trainer = Trainer(kind, train.mul(255).round_().to(torch.uint8), width=config.width,
                      batch=config.batch, lr=config.lr, ema_decay=config.ema_decay,
                      augment=config.augment, seed=config.seed, device=device,
                      rank=world.rank, world=world.size)
    state = load_latest(store, config.job_id)
    if state is not None:
        _check_resumable(config, state)
        trainer.load_state_dict(state)
    job = Job(config, store, trainer, manifest, emit if world.rank == 0 else None,
              resumed_from=state)
    return job.run(lambda: _stop_requested(should_stop, world))


def _train_paired(config: TrainConfig, store: ArtifactStore, world: _World,
                  device: torch.device, emit: Emit, should_stop: Callable[[], bool]) -> str:
    from dreamsuite.gan.paired import PairTrainer, conditions_of, load_pairs

    kind = get_model_kind(config.model)
    manifests = [read_manifest(store, dataset) for dataset in config.dataset_ids]
    train = load_pairs(store, manifests, "train")
    if not len(train):
        raise InvalidArgument(f"datasets: {', '.join(config.dataset_ids)} hold no training pairs")
    holdout = load_pairs(store, manifests, "holdout") if world.rank == 0 else None
    trainer = PairTrainer(kind, train, conditions_of(manifests), width=config.width,
                          batch=config.batch, lr=config.lr, ema_decay=config.ema_decay,
                          crop=config.crop, seed=config.seed, device=device, holdout=holdout,
                          rank=world.rank, world=world.size, loss=config.loss)
    state = load_latest(store, config.job_id)
    if state is not None:
        _check_resumable(config, state)
        trainer.load_state_dict(state)
    job = Job(config, store, trainer, manifests[0], emit if world.rank == 0 else None,
              resumed_from=state)
    return job.run(lambda: _stop_requested(should_stop, world))


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _check_resumable(config: TrainConfig, state: dict[str, Any]) -> None:
    before = state.get("config", {})
    for name in ("model", "dataset", "seed", "batch", "width", "augment", "datasets", "crop",
                 "loss"):
        was, now = before.get(name, _DEFAULTS[name]), getattr(config, name)
        if isinstance(was, list | tuple):  # a list after JSON, a tuple in the config
            was, now = list(was), list(now)
        if was != now:
            raise InvalidArgument(
                f"{name}: job {config.job_id!r} was started with {name}="
                f"{shorten(repr(was))}, not {shorten(repr(now))}; "
                "start a new job (another job_id) to change it")


def _stop_requested(should_stop: Callable[[], bool], world: _World) -> bool:
    """Whether any rank was asked to stop (every rank must stop at the same step)."""
    stop = bool(should_stop())
    if world.size == 1:
        return stop
    flag = torch.tensor([int(stop)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _print_event(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, allow_nan=False, default=_jsonable) + "\n")
    sys.stdout.flush()


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def main(argv: list[str] | None = None) -> int:
    """The job process: read the config, train, print events; 0 on done or stopped."""
    parser = argparse.ArgumentParser(prog="python -m dreamsuite.gan.train",
                                     description="Train a GAN on a dreamed data set.")
    parser.add_argument("--config", required=True, help="JSON file with TrainConfig.to_dict()")
    args = parser.parse_args(argv)
    stop = {"asked": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("asked", True))
    rank0 = int(os.environ.get("RANK", "0")) == 0
    emit = _print_event if rank0 else (lambda event: None)
    config = None
    try:
        with open(args.config) as fh:
            config = TrainConfig.from_dict(json.load(fh))
        threads, source = resolve_threads(config.threads)
        print(f"trainer: {apply_threads(threads)} torch threads ({source})", file=sys.stderr)
        run(config, emit=emit, should_stop=lambda: stop["asked"])
        return 0
    except (DreamsuiteError, OSError, ValueError) as exc:
        message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, DreamsuiteError) else str(exc)
    except Exception as exc:  # the job reports any failure as its last event
        traceback.print_exc()
        message = f"internal error: {type(exc).__name__}: {exc}"
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    event = {"event": "error", "message": shorten(message, 2000)}
    emit(event)
    if rank0 and config is not None:
        Job.report_error(config, event)
    print(f"training failed: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
