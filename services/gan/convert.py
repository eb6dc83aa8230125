"""proto <-> library conversions of the GAN service (no logic beyond that)."""

from __future__ import annotations

import json
import math

from dreamsuite.errors import InvalidArgument
from dreamsuite.gan.dataset import BuildProgress
from dreamsuite.v1 import common_pb2, gan_pb2
from dreamsuite.wire.convert import artifact_message
from services.gan.datasets import DatasetRequest
from services.gan.jobs import JobSnapshot, StoredRef
from services.gan.publish import Published, PublishRequest
from services.gan.sampling import Samples

__all__ = ["dataset_request", "progress_message", "train_config", "job_message",
           "model_message", "samples_message", "publish_request", "published_message"]

_STATES = {name.removeprefix("JOB_STATE_"): number
           for name, number in gan_pb2.JobState.items() if number}
#: StartTraining fields that take the trainer's default when 0 / unset.
_TRAIN_DEFAULTS = {"model": "dcgan64", "steps": 2000, "batch": 32, "checkpoint_every": 200}


def dataset_request(request: gan_pb2.BuildDatasetRequest) -> DatasetRequest:
    which = request.source.WhichOneof("source")
    if which is None:
        raise InvalidArgument("source: give builtin, folder or prefix")
    holdout = request.holdout_fraction if request.HasField("holdout_fraction") else 0.25
    return DatasetRequest(
        source=(which, getattr(request.source, which)), template=request.dream,
        size=request.size or 64, holdout_fraction=holdout,
        crops_per_photo=request.crops_per_photo, max_images=request.max_images,
        concurrency=request.concurrency or 4)


def progress_message(progress: BuildProgress, manifest_uri: str = "") -> gan_pb2.BuildDatasetResponse:
    message = gan_pb2.BuildDatasetResponse(
        dataset_id=progress.dataset_id, done=progress.done, total=progress.total,
        failed=sum(progress.failures.values()), existing=progress.existing,
        failures=[gan_pb2.DatasetFailure(reason=r, count=c)
                  for r, c in sorted(progress.failures.items())])
    manifest = progress.manifest
    if manifest is not None:
        counts = manifest.counts
        message.dataset.CopyFrom(gan_pb2.DatasetInfo(
            id=manifest.id, manifest_uri=manifest_uri, size=manifest.size,
            train=counts.get("train", 0), holdout=counts.get("holdout", 0),
            created=manifest.created,
            dream_config_json=json.dumps(manifest.dream_config, sort_keys=True)))
    return message


def train_config(request: gan_pb2.StartTrainingRequest) -> dict:
    """The trainer's config (without job id and store) for a ``StartTrainingRequest``."""
    datasets = list(request.datasets)
    dataset = request.dataset or (datasets[0] if datasets else "")
    if not dataset:
        raise InvalidArgument("dataset is empty: name a data set (BuildDataset returns its id)")
    config = {
        "dataset": dataset,
        "model": request.model or _TRAIN_DEFAULTS["model"],
        "steps": request.steps or _TRAIN_DEFAULTS["steps"],
        "batch": request.batch or _TRAIN_DEFAULTS["batch"],
        "seed": request.seed,
        "checkpoint_every": request.checkpoint_every or _TRAIN_DEFAULTS["checkpoint_every"],
        "eval_every": request.eval_every,
    }
    if request.HasField("width"):
        config["width"] = request.width
    if datasets:
        config["datasets"] = datasets
    if request.HasField("crop"):
        config["crop"] = request.crop
    if request.loss:
        config["loss"] = request.loss
    if request.HasField("lr"):
        if not math.isfinite(request.lr):
            raise InvalidArgument(f"lr must be a finite number, not {request.lr}")
        config["lr"] = request.lr
    return config


def _checkpoint(ref: StoredRef | None) -> gan_pb2.Checkpoint | None:
    if ref is None:
        return None
    return gan_pb2.Checkpoint(uri=ref.uri or ref.key, step=ref.step, sha256=ref.sha256)


def _evaluation(evaluation: dict) -> gan_pb2.Evaluation | None:
    if not evaluation:
        return None
    metrics = {k: float(v) for k, v in evaluation.get("metrics", {}).items()
               if isinstance(v, int | float) and math.isfinite(v)}
    return gan_pb2.Evaluation(step=int(evaluation.get("step", 0)), metrics=metrics)


def job_message(job: JobSnapshot) -> gan_pb2.TrainProgress:
    preview = None
    if job.preview is not None:
        preview = common_pb2.Artifact(uri=job.preview.uri or job.preview.key,
                                      presigned_url=job.preview.url, sha256=job.preview.sha256,
                                      content_type="image/png")
    return gan_pb2.TrainProgress(
        job_id=job.job_id, state=_STATES.get(job.state, 0), step=job.step, total=job.total,
        images_seen=job.images_seen, d_loss=job.d_loss, g_loss=job.g_loss,
        d_real_sign=job.d_real_sign, steps_per_second=job.steps_per_second,
        eta_seconds=job.eta_seconds, checkpoint=_checkpoint(job.checkpoint),
        evaluation=_evaluation(job.evaluation), preview=preview, message=job.message,
        dataset=job.dataset, model=job.model, restarts=job.restarts)


def model_message(record: dict) -> gan_pb2.ModelInfo:
    return gan_pb2.ModelInfo(
        model=str(record.get("model", "")), kind=str(record.get("kind", "")),
        dataset=str(record.get("dataset", "")), step=int(record.get("step", 0)),
        checkpoint=gan_pb2.Checkpoint(uri=str(record.get("checkpoint", "")),
                                      step=int(record.get("step", 0)),
                                      sha256=str(record.get("sha256", ""))),
        evaluation=_evaluation({"step": record.get("step", 0),
                                "metrics": record.get("evaluation") or {}}),
        finished=bool(record.get("finished", False)), size=int(record.get("size", 0)),
        conditions=[str(c.get("name", "")) for c in record.get("conditions") or []
                    if isinstance(c, dict)])


def samples_message(samples: Samples, *, inline: bool) -> gan_pb2.SampleResponse:
    return gan_pb2.SampleResponse(model=samples.model, step=samples.step, images=[
        gan_pb2.SampledImage(
            seed=image.seed, image=image.png if inline else b"",
            artifact=artifact_message(image.artifact, image.url))
        for image in samples.images])


def publish_request(request: gan_pb2.PublishModelRequest) -> PublishRequest:
    return PublishRequest.checked(request.model, request.name, request.batch_size,
                                  request.max_batch_delay_ms)


def published_message(published: Published) -> gan_pb2.PublishModelResponse:
    return gan_pb2.PublishModelResponse(
        name=published.name, registered=published.registered, conditions=published.conditions,
        version=published.version,
        archive=artifact_message(published.archive, published.url))
