from dreamsuite.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GuideMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GUIDE_MODE_UNSPECIFIED: _ClassVar[GuideMode]
    GUIDE_MODE_WEIGHTS: _ClassVar[GuideMode]
    GUIDE_MODE_MATCH: _ClassVar[GuideMode]

class PreviewFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PREVIEW_FORMAT_UNSPECIFIED: _ClassVar[PreviewFormat]
    PREVIEW_FORMAT_JPEG: _ClassVar[PreviewFormat]
    PREVIEW_FORMAT_PNG: _ClassVar[PreviewFormat]
    PREVIEW_FORMAT_NONE: _ClassVar[PreviewFormat]
GUIDE_MODE_UNSPECIFIED: GuideMode
GUIDE_MODE_WEIGHTS: GuideMode
GUIDE_MODE_MATCH: GuideMode
PREVIEW_FORMAT_UNSPECIFIED: PreviewFormat
PREVIEW_FORMAT_JPEG: PreviewFormat
PREVIEW_FORMAT_PNG: PreviewFormat
PREVIEW_FORMAT_NONE: PreviewFormat

class OctaveSchedule(_message.Message):
    __slots__ = ("octaves", "octave_scale", "steps", "step_size")
    OCTAVES_FIELD_NUMBER: _ClassVar[int]
    OCTAVE_SCALE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    STEP_SIZE_FIELD_NUMBER: _ClassVar[int]
    octaves: int
    octave_scale: float
    steps: int
    step_size: float
    def __init__(self, octaves: _Optional[int] = ..., octave_scale: _Optional[float] = ..., steps: _Optional[int] = ..., step_size: _Optional[float] = ...) -> None: ...

class Regularisers(_message.Message):
    __slots__ = ("jitter", "tv", "smooth", "blur_every", "blur_sigma")
    JITTER_FIELD_NUMBER: _ClassVar[int]
    TV_FIELD_NUMBER: _ClassVar[int]
    SMOOTH_FIELD_NUMBER: _ClassVar[int]
    BLUR_EVERY_FIELD_NUMBER: _ClassVar[int]
    BLUR_SIGMA_FIELD_NUMBER: _ClassVar[int]
    jitter: int
    tv: float
    smooth: float
    blur_every: int
    blur_sigma: float
    def __init__(self, jitter: _Optional[int] = ..., tv: _Optional[float] = ..., smooth: _Optional[float] = ..., blur_every: _Optional[int] = ..., blur_sigma: _Optional[float] = ...) -> None: ...

class Guidance(_message.Message):
    __slots__ = ("guides", "guide_weights", "mode")
    GUIDES_FIELD_NUMBER: _ClassVar[int]
    GUIDE_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    guides: _containers.RepeatedCompositeFieldContainer[_common_pb2.ImageRef]
    guide_weights: _containers.RepeatedCompositeFieldContainer[_common_pb2.LayerWeights]
    mode: GuideMode
    def __init__(self, guides: _Optional[_Iterable[_Union[_common_pb2.ImageRef, _Mapping]]] = ..., guide_weights: _Optional[_Iterable[_Union[_common_pb2.LayerWeights, _Mapping]]] = ..., mode: _Optional[_Union[GuideMode, str]] = ...) -> None: ...

class NeuronSelection(_message.Message):
    __slots__ = ("layers", "top_k", "bottom_k", "images")
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    BOTTOM_K_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    layers: _containers.RepeatedScalarFieldContainer[str]
    top_k: int
    bottom_k: int
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.ImageRef]
    def __init__(self, layers: _Optional[_Iterable[str]] = ..., top_k: _Optional[int] = ..., bottom_k: _Optional[int] = ..., images: _Optional[_Iterable[_Union[_common_pb2.ImageRef, _Mapping]]] = ...) -> None: ...

class OutputOptions(_message.Message):
    __slots__ = ("preview_format", "preview_max_side", "preview_max_bytes", "store_octaves", "inline_images")
    PREVIEW_FORMAT_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    STORE_OCTAVES_FIELD_NUMBER: _ClassVar[int]
    INLINE_IMAGES_FIELD_NUMBER: _ClassVar[int]
    preview_format: PreviewFormat
    preview_max_side: int
    preview_max_bytes: int
    store_octaves: bool
    inline_images: bool
    def __init__(self, preview_format: _Optional[_Union[PreviewFormat, str]] = ..., preview_max_side: _Optional[int] = ..., preview_max_bytes: _Optional[int] = ..., store_octaves: _Optional[bool] = ..., inline_images: _Optional[bool] = ...) -> None: ...

class DreamRequest(_message.Message):
    __slots__ = ("image", "backbone", "weights", "maplist", "schedule", "regularisers", "guidance", "selection", "tile", "seed", "output", "laplacian_levels", "decorrelate", "fourier_decay", "guide_regions", "layer_octave_weights", "model", "condition")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    MAPLIST_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    REGULARISERS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_FIELD_NUMBER: _ClassVar[int]
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    TILE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    LAPLACIAN_LEVELS_FIELD_NUMBER: _ClassVar[int]
    DECORRELATE_FIELD_NUMBER: _ClassVar[int]
    FOURIER_DECAY_FIELD_NUMBER: _ClassVar[int]
    GUIDE_REGIONS_FIELD_NUMBER: _ClassVar[int]
    LAYER_OCTAVE_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.ImageRef
    backbone: str
    weights: _common_pb2.Weights
    maplist: _common_pb2.Maplist
    schedule: OctaveSchedule
    regularisers: Regularisers
    guidance: Guidance
    selection: NeuronSelection
    tile: int
    seed: int
    output: OutputOptions
    laplacian_levels: int
    decorrelate: bool
    fourier_decay: float
    guide_regions: _containers.RepeatedCompositeFieldContainer[GuideRegion]
    layer_octave_weights: _containers.RepeatedCompositeFieldContainer[_common_pb2.LayerWeights]
    model: str
    condition: str
    def __init__(self, image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., backbone: _Optional[str] = ..., weights: _Optional[_Union[_common_pb2.Weights, str]] = ..., maplist: _Optional[_Union[_common_pb2.Maplist, _Mapping]] = ..., schedule: _Optional[_Union[OctaveSchedule, _Mapping]] = ..., regularisers: _Optional[_Union[Regularisers, _Mapping]] = ..., guidance: _Optional[_Union[Guidance, _Mapping]] = ..., selection: _Optional[_Union[NeuronSelection, _Mapping]] = ..., tile: _Optional[int] = ..., seed: _Optional[int] = ..., output: _Optional[_Union[OutputOptions, _Mapping]] = ..., laplacian_levels: _Optional[int] = ..., decorrelate: _Optional[bool] = ..., fourier_decay: _Optional[float] = ..., guide_regions: _Optional[_Iterable[_Union[GuideRegion, _Mapping]]] = ..., layer_octave_weights: _Optional[_Iterable[_Union[_common_pb2.LayerWeights, _Mapping]]] = ..., model: _Optional[str] = ..., condition: _Optional[str] = ...) -> None: ...

class GuideRegion(_message.Message):
    __slots__ = ("mask", "octave_weights")
    MASK_FIELD_NUMBER: _ClassVar[int]
    OCTAVE_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    mask: _common_pb2.ImageRef
    octave_weights: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, mask: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., octave_weights: _Optional[_Iterable[float]] = ...) -> None: ...

class DreamUpdate(_message.Message):
    __slots__ = ("octave", "octaves", "width", "height", "loss", "elapsed_seconds", "preview", "preview_content_type", "octave_artifact", "image", "result")
    OCTAVE_FIELD_NUMBER: _ClassVar[int]
    OCTAVES_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    OCTAVE_ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    octave: int
    octaves: int
    width: int
    height: int
    loss: float
    elapsed_seconds: float
    preview: bytes
    preview_content_type: str
    octave_artifact: _common_pb2.Artifact
    image: bytes
    result: DreamResult
    def __init__(self, octave: _Optional[int] = ..., octaves: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., loss: _Optional[float] = ..., elapsed_seconds: _Optional[float] = ..., preview: _Optional[bytes] = ..., preview_content_type: _Optional[str] = ..., octave_artifact: _Optional[_Union[_common_pb2.Artifact, _Mapping]] = ..., image: _Optional[bytes] = ..., result: _Optional[_Union[DreamResult, _Mapping]] = ...) -> None: ...

class DreamResult(_message.Message):
    __slots__ = ("artifact", "width", "height", "provenance_json", "octave_losses", "warnings", "image", "input_artifact")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_JSON_FIELD_NUMBER: _ClassVar[int]
    OCTAVE_LOSSES_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    INPUT_ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    artifact: _common_pb2.Artifact
    width: int
    height: int
    provenance_json: str
    octave_losses: _containers.RepeatedScalarFieldContainer[float]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    image: bytes
    input_artifact: _common_pb2.Artifact
    def __init__(self, artifact: _Optional[_Union[_common_pb2.Artifact, _Mapping]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., provenance_json: _Optional[str] = ..., octave_losses: _Optional[_Iterable[float]] = ..., warnings: _Optional[_Iterable[str]] = ..., image: _Optional[bytes] = ..., input_artifact: _Optional[_Union[_common_pb2.Artifact, _Mapping]] = ...) -> None: ...

class ListBackbonesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBackbonesResponse(_message.Message):
    __slots__ = ("backbones",)
    BACKBONES_FIELD_NUMBER: _ClassVar[int]
    backbones: _containers.RepeatedCompositeFieldContainer[_common_pb2.BackboneInfo]
    def __init__(self, backbones: _Optional[_Iterable[_Union[_common_pb2.BackboneInfo, _Mapping]]] = ...) -> None: ...
