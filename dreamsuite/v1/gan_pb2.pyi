from dreamsuite.v1 import common_pb2 as _common_pb2
from dreamsuite.v1 import dream_pb2 as _dream_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_EVALUATING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_EVALUATING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState

class DatasetSource(_message.Message):
    __slots__ = ("builtin", "folder", "prefix")
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    FOLDER_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    builtin: str
    folder: str
    prefix: str
    def __init__(self, builtin: _Optional[str] = ..., folder: _Optional[str] = ..., prefix: _Optional[str] = ...) -> None: ...

class BuildDatasetRequest(_message.Message):
    __slots__ = ("source", "dream", "size", "holdout_fraction", "crops_per_photo", "max_images", "concurrency")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DREAM_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    CROPS_PER_PHOTO_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGES_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    source: DatasetSource
    dream: _dream_pb2.DreamRequest
    size: int
    holdout_fraction: float
    crops_per_photo: int
    max_images: int
    concurrency: int
    def __init__(self, source: _Optional[_Union[DatasetSource, _Mapping]] = ..., dream: _Optional[_Union[_dream_pb2.DreamRequest, _Mapping]] = ..., size: _Optional[int] = ..., holdout_fraction: _Optional[float] = ..., crops_per_photo: _Optional[int] = ..., max_images: _Optional[int] = ..., concurrency: _Optional[int] = ...) -> None: ...

class DatasetFailure(_message.Message):
    __slots__ = ("reason", "count")
    REASON_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    reason: str
    count: int
    def __init__(self, reason: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class DatasetInfo(_message.Message):
    __slots__ = ("id", "manifest_uri", "size", "train", "holdout", "created", "dream_config_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_URI_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    DREAM_CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    manifest_uri: str
    size: int
    train: int
    holdout: int
    created: str
    dream_config_json: str
    def __init__(self, id: _Optional[str] = ..., manifest_uri: _Optional[str] = ..., size: _Optional[int] = ..., train: _Optional[int] = ..., holdout: _Optional[int] = ..., created: _Optional[str] = ..., dream_config_json: _Optional[str] = ...) -> None: ...

class BuildDatasetResponse(_message.Message):
    __slots__ = ("dataset_id", "done", "total", "failed", "failures", "existing", "dataset")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    EXISTING_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    done: int
    total: int
    failed: int
    failures: _containers.RepeatedCompositeFieldContainer[DatasetFailure]
    existing: bool
    dataset: DatasetInfo
    def __init__(self, dataset_id: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., failed: _Optional[int] = ..., failures: _Optional[_Iterable[_Union[DatasetFailure, _Mapping]]] = ..., existing: _Optional[bool] = ..., dataset: _Optional[_Union[DatasetInfo, _Mapping]] = ...) -> None: ...

class StartTrainingRequest(_message.Message):
    __slots__ = ("dataset", "model", "steps", "batch", "seed", "checkpoint_every", "eval_every", "width", "lr", "datasets", "crop", "loss")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_EVERY_FIELD_NUMBER: _ClassVar[int]
    EVAL_EVERY_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    model: str
    steps: int
    batch: int
    seed: int
    checkpoint_every: int
    eval_every: int
    width: int
    lr: float
    datasets: _containers.RepeatedScalarFieldContainer[str]
    crop: int
    loss: str
    def __init__(self, dataset: _Optional[str] = ..., model: _Optional[str] = ..., steps: _Optional[int] = ..., batch: _Optional[int] = ..., seed: _Optional[int] = ..., checkpoint_every: _Optional[int] = ..., eval_every: _Optional[int] = ..., width: _Optional[int] = ..., lr: _Optional[float] = ..., datasets: _Optional[_Iterable[str]] = ..., crop: _Optional[int] = ..., loss: _Optional[str] = ...) -> None: ...

class StartTrainingResponse(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ("uri", "step", "sha256")
    URI_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    uri: str
    step: int
    sha256: str
    def __init__(self, uri: _Optional[str] = ..., step: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class Evaluation(_message.Message):
    __slots__ = ("step", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STEP_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    step: int
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, step: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class TrainProgress(_message.Message):
    __slots__ = ("job_id", "state", "step", "total", "images_seen", "d_loss", "g_loss", "d_real_sign", "steps_per_second", "eta_seconds", "checkpoint", "evaluation", "preview", "message", "dataset", "model", "restarts")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    IMAGES_SEEN_FIELD_NUMBER: _ClassVar[int]
    D_LOSS_FIELD_NUMBER: _ClassVar[int]
    G_LOSS_FIELD_NUMBER: _ClassVar[int]
    D_REAL_SIGN_FIELD_NUMBER: _ClassVar[int]
    STEPS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    step: int
    total: int
    images_seen: int
    d_loss: float
    g_loss: float
    d_real_sign: float
    steps_per_second: float
    eta_seconds: float
    checkpoint: Checkpoint
    evaluation: Evaluation
    preview: _common_pb2.Artifact
    message: str
    dataset: str
    model: str
    restarts: int
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., step: _Optional[int] = ..., total: _Optional[int] = ..., images_seen: _Optional[int] = ..., d_loss: _Optional[float] = ..., g_loss: _Optional[float] = ..., d_real_sign: _Optional[float] = ..., steps_per_second: _Optional[float] = ..., eta_seconds: _Optional[float] = ..., checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., evaluation: _Optional[_Union[Evaluation, _Mapping]] = ..., preview: _Optional[_Union[_common_pb2.Artifact, _Mapping]] = ..., message: _Optional[str] = ..., dataset: _Optional[str] = ..., model: _Optional[str] = ..., restarts: _Optional[int] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchJobResponse(_message.Message):
    __slots__ = ("progress",)
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    progress: TrainProgress
    def __init__(self, progress: _Optional[_Union[TrainProgress, _Mapping]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("progress",)
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    progress: TrainProgress
    def __init__(self, progress: _Optional[_Union[TrainProgress, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[TrainProgress]
    def __init__(self, jobs: _Optional[_Iterable[_Union[TrainProgress, _Mapping]]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model", "kind", "dataset", "step", "checkpoint", "evaluation", "finished", "size", "conditions")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    model: str
    kind: str
    dataset: str
    step: int
    checkpoint: Checkpoint
    evaluation: Evaluation
    finished: bool
    size: int
    conditions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., kind: _Optional[str] = ..., dataset: _Optional[str] = ..., step: _Optional[int] = ..., checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., evaluation: _Optional[_Union[Evaluation, _Mapping]] = ..., finished: _Optional[bool] = ..., size: _Optional[int] = ..., conditions: _Optional[_Iterable[str]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class SampleRequest(_message.Message):
    __slots__ = ("model", "seeds", "seed", "count", "truncation", "inline_images")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_FIELD_NUMBER: _ClassVar[int]
    INLINE_IMAGES_FIELD_NUMBER: _ClassVar[int]
    model: str
    seeds: _containers.RepeatedScalarFieldContainer[int]
    seed: int
    count: int
    truncation: float
    inline_images: bool
    def __init__(self, model: _Optional[str] = ..., seeds: _Optional[_Iterable[int]] = ..., seed: _Optional[int] = ..., count: _Optional[int] = ..., truncation: _Optional[float] = ..., inline_images: _Optional[bool] = ...) -> None: ...

class SampledImage(_message.Message):
    __slots__ = ("seed", "artifact", "image")
    SEED_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    seed: int
    artifact: _common_pb2.Artifact
    image: bytes
    def __init__(self, seed: _Optional[int] = ..., artifact: _Optional[_Union[_common_pb2.Artifact, _Mapping]] = ..., image: _Optional[bytes] = ...) -> None: ...

class SampleResponse(_message.Message):
    __slots__ = ("model", "step", "images")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    model: str
    step: int
    images: _containers.RepeatedCompositeFieldContainer[SampledImage]
    def __init__(self, model: _Optional[str] = ..., step: _Optional[int] = ..., images: _Optional[_Iterable[_Union[SampledImage, _Mapping]]] = ...) -> None: ...

class PublishModelRequest(_message.Message):
    __slots__ = ("model", "name", "batch_size", "max_batch_delay_ms")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    model: str
    name: str
    batch_size: int
    max_batch_delay_ms: int
    def __init__(self, model: _Optional[str] = ..., name: _Optional[str] = ..., batch_size: _Optional[int] = ..., max_batch_delay_ms: _Optional[int] = ...) -> None: ...

class PublishModelResponse(_message.Message):
    __slots__ = ("name", "archive", "registered", "conditions", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    archive: _common_pb2.Artifact
    registered: _containers.RepeatedScalarFieldContainer[str]
    conditions: _containers.RepeatedScalarFieldContainer[str]
    version: str
    def __init__(self, name: _Optional[str] = ..., archive: _Optional[_Union[_common_pb2.Artifact, _Mapping]] = ..., registered: _Optional[_Iterable[str]] = ..., conditions: _Optional[_Iterable[str]] = ..., version: _Optional[str] = ...) -> None: ...
