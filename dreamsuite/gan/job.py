"""The bookkeeping of a training job around its steps: progress events, checkpoints, previews,
evaluations, the model record and ``status.json``.

:class:`Job` drives a :class:`~dreamsuite.gan.loop.Trainer` to ``config.steps``. Under
torchrun every rank runs it (checkpoints gather every rank's RNG state), but only the rank that
was given an ``emit`` (rank 0) writes to the store or emits events. A paired trainer
(:class:`~dreamsuite.gan.paired.PairTrainer`, ``dream2dream``) makes its own preview grid and
evaluation; its model record also lists its data sets and conditions.
"""

from __future__ import annotations

import datetime
import math
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from dreamsuite.artifacts import ArtifactStore, open_store
from dreamsuite.errors import NotFound, shorten
from dreamsuite.gan.checkpoint import (
    capture_rng,
    get_json,
    model_record_key,
    preview_key,
    put_json,
    read_latest,
    save_checkpoint,
    status_key,
)
from dreamsuite.gan.data import Manifest, load_split
from dreamsuite.gan.loop import Trainer
from dreamsuite.gan.paired import PairTrainer
from dreamsuite.gan.sample import sample
from dreamsuite.images import encode_png, image_grid

if TYPE_CHECKING:
    from dreamsuite.gan.train import TrainConfig

__all__ = ["Job", "evaluate_samples", "image_grid", "EVAL_SEED_BASE", "MAX_EVAL_SAMPLES"]

#: Evaluation samples use seeds from here on (previews use 0, 1, ...).
EVAL_SEED_BASE = 1_000_000
#: Evaluation compares at most this many samples (and at least 64) with the data.
MAX_EVAL_SAMPLES = 256
PROGRESS_SECONDS = 1.0


def evaluate_samples(samples: torch.Tensor, train: torch.Tensor, holdout: torch.Tensor, *,
                     device: str, seed: int) -> dict[str, float]:
    """Metrics of ``samples`` against the training and holdout images (all ``[N, 3, S, S]``
    in ``[0, 1]``), by :func:`dreamsuite.gan.evaluate.job_evaluation`."""
    # Imported here: evaluation pulls in the feature backbones and torchmetrics, which the
    # training steps never need, and a job that never evaluates should not pay for them.
    from dreamsuite.gan.evaluate import job_evaluation

    return job_evaluation(samples, train, holdout, device=device, seed=seed)


class Job:
    """Runs the steps of one training job and records them (see the module docstring)."""

    def __init__(self, config: TrainConfig, store: ArtifactStore, trainer: Trainer | PairTrainer,
                 manifest: Manifest, emit: Callable[[dict[str, Any]], None] | None,
                 resumed_from: dict[str, Any] | None = None):
        self.config, self.store, self.trainer, self.manifest = config, store, trainer, manifest
        self.emit = emit
        self.evaluation: dict[str, Any] = dict((resumed_from or {}).get("evaluation", {}))
        self.checkpoint: tuple[int, str, str] | None = None
        if resumed_from is not None and emit is not None:
            pointer = read_latest(store, config.job_id)
            if pointer is not None:
                self.checkpoint = (pointer["step"], pointer["key"], pointer["sha256"])
        elif resumed_from is not None:
            self.checkpoint = (int(resumed_from["step"]), "", "")
        self.last_progress: dict[str, Any] = {}
        self._window = (time.monotonic(), trainer.step)
        self._holdout: torch.Tensor | None = None

    def run(self, should_stop: Callable[[], bool]) -> str:
        """Train to ``config.steps``: ``"done"``, or ``"stopped"`` once ``should_stop()``."""
        trainer, total, config = self.trainer, self.config.steps, self.config
        if trainer.step >= total and self._finished_already():
            self._send({"event": "done", "step": trainer.step})
            return "done"
        first = trainer.step + 1
        while trainer.step < total:
            if should_stop():
                return self._stop()
            trainer.train_step()
            step = trainer.step
            save = step < total and step % config.checkpoint_every == 0
            evaluate = step < total and config.eval_every > 0 and step % config.eval_every == 0
            self._progress(force=step == first or save or bool(evaluate))
            if save:
                self._checkpoint()
            if evaluate:
                self._evaluate()
        return self._finish()

    def _finished_already(self) -> bool:
        if self.emit is None:
            return True
        try:
            record = get_json(self.store, model_record_key(self.config.job_id))
        except NotFound:
            return False
        return bool(record.get("finished")) and record.get("step") == self.trainer.step

    def _stop(self) -> str:
        if self.checkpoint is None or self.checkpoint[0] != self.trainer.step:
            self._checkpoint()
        if self.emit is not None:
            event = {"event": "stopped", "step": self.trainer.step, "key": self.checkpoint[1]}
            self._send(event)
            self._status(event)
        return "stopped"

    def _finish(self) -> str:
        self._progress(force=True)
        if self.checkpoint is None or self.checkpoint[0] != self.trainer.step:
            self._checkpoint()
        if self.config.eval_every >= 0:  # -1: never (quick runs, tests)
            self._evaluate()
        if self.emit is not None:
            self._record(finished=True)
            event = {"event": "done", "step": self.trainer.step}
            self._send(event)
            self._status(event)
        return "done"

    def _send(self, event: dict[str, Any]) -> None:
        if self.emit is not None:
            self.emit(_finite(event))

    def _progress(self, *, force: bool = False, state: str = "RUNNING") -> None:
        if self.emit is None:
            return
        now, step = time.monotonic(), self.trainer.step
        started, first_step = self._window
        if not force and now - started < PROGRESS_SECONDS:
            return
        last = self.last_progress
        stats = self.trainer.pop_stats() if state == "RUNNING" else {}
        if not stats:  # no step since the last event: repeat its losses
            stats = {k: last.get(k) for k in ("d_loss", "g_loss", "d_real_sign")}
            stats |= {k: last[k] for k in ("pixel_loss", "perceptual_loss") if k in last}
        rate = ((step - first_step) / (now - started) if step > first_step
                else last.get("steps_per_second") or math.nan)
        self.last_progress = {
            "event": "progress", "state": state, "step": step, "total": self.config.steps,
            "images_seen": step * self.trainer.batch, **stats, "steps_per_second": rate,
            "eta_seconds": (self.config.steps - step) / rate if rate > 0 else math.nan,
            "threads": torch.get_num_threads()}  # what the steps ran with, to check a budget
        self._send(self.last_progress)
        if step > first_step:
            self._window = (now, step)

    def _checkpoint(self) -> None:
        state = self.trainer.state_dict()  # collective under DDP: every rank gets here
        step = self.trainer.step
        self.checkpoint = (step, "", "")
        if self.emit is None:
            return
        state.update(config=self.config.to_dict(), images_seen=step * self.trainer.batch,
                     dataset=self.config.dataset, resolution=self._resolution,
                     evaluation=self.evaluation, rng=capture_rng())
        key, digest = save_checkpoint(self.store, self.config.job_id, step, state)
        self.checkpoint = (step, key, digest)
        event = {"event": "checkpoint", "step": step, "key": key, "sha256": digest}
        self._send(event)
        self._preview()
        self._record(finished=False)
        self._status(event)

    def _preview(self) -> None:
        count = self.config.preview_seeds
        if not count:
            return
        if isinstance(self.trainer, PairTrainer):
            grid = self.trainer.preview_grid(count)
        else:
            images = sample(self.trainer.G_ema, range(count), truncation=math.inf)
            grid = image_grid(images, columns=math.ceil(math.sqrt(count)))
        key = preview_key(self.config.job_id, self.trainer.step)
        self.store.put_at(key, encode_png(grid), content_type="image/png")
        self._send({"event": "preview", "step": self.trainer.step, "key": key})

    def _evaluate(self) -> None:
        """Rank 0 evaluates; under torchrun the other ranks wait for it at a barrier (one
        collective with the process group's long timeout, rather than the next step's)."""
        try:
            if self.emit is not None:
                self._evaluate_here()
        finally:
            if dist.is_initialized():
                device = self.trainer.device
                dist.barrier(device_ids=[device.index] if device.type == "cuda" else None)

    def _evaluate_here(self) -> None:
        self._progress(force=True, state="EVALUATING")
        step = self.trainer.step
        try:
            self.evaluation = _finite(self._metrics())
            event = {"event": "evaluation", "step": step, "metrics": self.evaluation}
        except Exception as exc:  # a failed metric must not throw away the trained model
            message = shorten(f"{type(exc).__name__}: {exc}", 500)
            print(f"evaluation at step {step} failed: {message}", file=sys.stderr)
            self.evaluation = {"error": message}
            event = {"event": "evaluation", "step": step, "metrics": {}, "error": message}
        self._send(event)
        self._status(event)
        self._window = (time.monotonic(), step)

    def _metrics(self) -> dict[str, float]:
        trainer = self.trainer
        if isinstance(trainer, PairTrainer):
            cuda = [trainer.device] if trainer.device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):
                metrics = trainer.evaluation_metrics()
            return {str(k): float(v) for k, v in metrics.items()}
        train = trainer.images.float().div(255).cpu()
        count = max(64, min(MAX_EVAL_SAMPLES, len(train)))
        samples = sample(trainer.G_ema, range(EVAL_SEED_BASE, EVAL_SEED_BASE + count),
                         truncation=math.inf)
        if self._holdout is None:
            self._holdout = load_split(self.store, self.manifest, "holdout",
                                       size=trainer.kind.resolution)
        cuda = [trainer.device] if trainer.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):  # evaluation must not move training's RNG
            metrics = evaluate_samples(samples, train[:MAX_EVAL_SAMPLES], self._holdout,
                                       device=str(trainer.device), seed=self.config.seed)
        return {str(k): float(v) for k, v in metrics.items()}

    @property
    def _resolution(self) -> int:
        if isinstance(self.trainer, PairTrainer):
            return self.trainer.resolution
        return self.trainer.kind.resolution

    def _record(self, *, finished: bool) -> None:
        step, key, digest = self.checkpoint
        record = {
            "model": self.config.job_id, "kind": self.config.model, "dataset": self.config.dataset,
            "step": step, "checkpoint": key, "sha256": digest, "evaluation": self.evaluation,
            "finished": finished, "size": self._resolution}
        if isinstance(self.trainer, PairTrainer):
            record["datasets"] = self.config.dataset_ids
            record["conditions"] = self.trainer.conditions
            record["width"] = self.trainer.width
            record["crop"] = self.trainer.crop
            record["loss"] = self.trainer.loss
        put_json(self.store, model_record_key(self.config.job_id), record)

    def _status(self, event: dict[str, Any]) -> None:
        put_json(self.store, status_key(self.config.job_id), _finite({
            **event, "progress": self.last_progress, "updated": _now()}))

    @staticmethod
    def report_error(config: TrainConfig, event: dict[str, Any]) -> None:
        """Best effort: the error as ``status.json`` (the store may be what failed)."""
        try:
            put_json(open_store(config.artifacts), status_key(config.job_id),
                     {**event, "updated": _now()})
        except Exception as exc:  # already failing; say so and keep the original error
            print(f"cannot write {status_key(config.job_id)}: {exc}", file=sys.stderr)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
