from dreamsuite.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReconstructMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECONSTRUCT_MODE_UNSPECIFIED: _ClassVar[ReconstructMode]
    RECONSTRUCT_MODE_CONTENT: _ClassVar[ReconstructMode]
    RECONSTRUCT_MODE_STYLE: _ClassVar[ReconstructMode]

class FeatureTransform(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEATURE_TRANSFORM_UNSPECIFIED: _ClassVar[FeatureTransform]
    FEATURE_TRANSFORM_GRAM: _ClassVar[FeatureTransform]
    FEATURE_TRANSFORM_SOFTMAX: _ClassVar[FeatureTransform]
    FEATURE_TRANSFORM_PYRAMID: _ClassVar[FeatureTransform]

class StyleOptimizer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STYLE_OPTIMIZER_UNSPECIFIED: _ClassVar[StyleOptimizer]
    STYLE_OPTIMIZER_LBFGS: _ClassVar[StyleOptimizer]
    STYLE_OPTIMIZER_ADAM: _ClassVar[StyleOptimizer]

class StyleInit(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STYLE_INIT_UNSPECIFIED: _ClassVar[StyleInit]
    STYLE_INIT_CONTENT: _ClassVar[StyleInit]
    STYLE_INIT_STYLE: _ClassVar[StyleInit]
    STYLE_INIT_NOISE: _ClassVar[StyleInit]
RECONSTRUCT_MODE_UNSPECIFIED: ReconstructMode
RECONSTRUCT_MODE_CONTENT: ReconstructMode
RECONSTRUCT_MODE_STYLE: ReconstructMode
FEATURE_TRANSFORM_UNSPECIFIED: FeatureTransform
FEATURE_TRANSFORM_GRAM: FeatureTransform
FEATURE_TRANSFORM_SOFTMAX: FeatureTransform
FEATURE_TRANSFORM_PYRAMID: FeatureTransform
STYLE_OPTIMIZER_UNSPECIFIED: StyleOptimizer
STYLE_OPTIMIZER_LBFGS: StyleOptimizer
STYLE_OPTIMIZER_ADAM: StyleOptimizer
STYLE_INIT_UNSPECIFIED: StyleInit
STYLE_INIT_CONTENT: StyleInit
STYLE_INIT_STYLE: StyleInit
STYLE_INIT_NOISE: StyleInit

class ReconstructRequest(_message.Message):
    __slots__ = ("image", "backbone", "weights", "layers", "all_at_once", "mode", "iterations", "optimizer", "seed", "transform", "inline_images")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    ALL_AT_ONCE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    INLINE_IMAGES_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.ImageRef
    backbone: str
    weights: _common_pb2.Weights
    layers: _containers.RepeatedScalarFieldContainer[str]
    all_at_once: bool
    mode: ReconstructMode
    iterations: int
    optimizer: StyleOptimizer
    seed: int
    transform: FeatureTransform
    inline_images: bool
    def __init__(self, image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., backbone: _Optional[str] = ..., weights: _Optional[_Union[_common_pb2.Weights, str]] = ..., layers: _Optional[_Iterable[str]] = ..., all_at_once: _Optional[bool] = ..., mode: _Optional[_Union[ReconstructMode, str]] = ..., iterations: _Optional[int] = ..., optimizer: _Optional[_Union[StyleOptimizer, str]] = ..., seed: _Optional[int] = ..., transform: _Optional[_Union[FeatureTransform, str]] = ..., inline_images: _Optional[bool] = ...) -> None: ...

class WeightedImage(_message.Message):
    __slots__ = ("image", "weight")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.ImageRef
    weight: float
    def __init__(self, image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., weight: _Optional[float] = ...) -> None: ...

class LayerWeight(_message.Message):
    __slots__ = ("layer", "weight")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    layer: str
    weight: float
    def __init__(self, layer: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class StylizeRequest(_message.Message):
    __slots__ = ("content", "styles", "backbone", "weights", "style_layers", "content_layer", "content_weight", "style_weight", "tv_weight", "transform", "temperature", "init", "optimizer", "iterations", "learning_rate", "scales", "style_scale", "preserve_color", "tile", "seed", "inline_images")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    STYLES_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    STYLE_LAYERS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_LAYER_FIELD_NUMBER: _ClassVar[int]
    CONTENT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    STYLE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TV_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    INIT_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    SCALES_FIELD_NUMBER: _ClassVar[int]
    STYLE_SCALE_FIELD_NUMBER: _ClassVar[int]
    PRESERVE_COLOR_FIELD_NUMBER: _ClassVar[int]
    TILE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    INLINE_IMAGES_FIELD_NUMBER: _ClassVar[int]
    content: _common_pb2.ImageRef
    styles: _containers.RepeatedCompositeFieldContainer[WeightedImage]
    backbone: str
    weights: _common_pb2.Weights
    style_layers: _containers.RepeatedCompositeFieldContainer[LayerWeight]
    content_layer: str
    content_weight: float
    style_weight: float
    tv_weight: float
    transform: FeatureTransform
    temperature: float
    init: StyleInit
    optimizer: StyleOptimizer
    iterations: int
    learning_rate: float
    scales: int
    style_scale: float
    preserve_color: bool
    tile: int
    seed: int
    inline_images: bool
    def __init__(self, content: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., styles: _Optional[_Iterable[_Union[WeightedImage, _Mapping]]] = ..., backbone: _Optional[str] = ..., weights: _Optional[_Union[_common_pb2.Weights, str]] = ..., style_layers: _Optional[_Iterable[_Union[LayerWeight, _Mapping]]] = ..., content_layer: _Optional[str] = ..., content_weight: _Optional[float] = ..., style_weight: _Optional[float] = ..., tv_weight: _Optional[float] = ..., transform: _Optional[_Union[FeatureTransform, str]] = ..., temperature: _Optional[float] = ..., init: _Optional[_Union[StyleInit, str]] = ..., optimizer: _Optional[_Union[StyleOptimizer, str]] = ..., iterations: _Optional[int] = ..., learning_rate: _Optional[float] = ..., scales: _Optional[int] = ..., style_scale: _Optional[float] = ..., preserve_color: _Optional[bool] = ..., tile: _Optional[int] = ..., seed: _Optional[int] = ..., inline_images: _Optional[bool] = ...) -> None: ...

class ReconstructResponse(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: StyleProgress
    result: StyleResult
    def __init__(self, progress: _Optional[_Union[StyleProgress, _Mapping]] = ..., result: _Optional[_Union[StyleResult, _Mapping]] = ...) -> None: ...

class StylizeResponse(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: StyleProgress
    result: StyleResult
    def __init__(self, progress: _Optional[_Union[StyleProgress, _Mapping]] = ..., result: _Optional[_Union[StyleResult, _Mapping]] = ...) -> None: ...

class StyleProgress(_message.Message):
    __slots__ = ("scale", "scales", "iteration", "iterations", "loss", "width", "height", "elapsed_seconds", "preview", "layer")
    SCALE_FIELD_NUMBER: _ClassVar[int]
    SCALES_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    scale: int
    scales: int
    iteration: int
    iterations: int
    loss: float
    width: int
    height: int
    elapsed_seconds: float
    preview: bytes
    layer: str
    def __init__(self, scale: _Optional[int] = ..., scales: _Optional[int] = ..., iteration: _Optional[int] = ..., iterations: _Optional[int] = ..., loss: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., elapsed_seconds: _Optional[float] = ..., preview: _Optional[bytes] = ..., layer: _Optional[str] = ...) -> None: ...

class StyledImage(_message.Message):
    __slots__ = ("layer", "artifact", "width", "height", "image")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    layer: str
    artifact: _common_pb2.Artifact
    width: int
    height: int
    image: bytes
    def __init__(self, layer: _Optional[str] = ..., artifact: _Optional[_Union[_common_pb2.Artifact, _Mapping]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., image: _Optional[bytes] = ...) -> None: ...

class StyleResult(_message.Message):
    __slots__ = ("images", "provenance_json")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_JSON_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[StyledImage]
    provenance_json: str
    def __init__(self, images: _Optional[_Iterable[_Union[StyledImage, _Mapping]]] = ..., provenance_json: _Optional[str] = ...) -> None: ...
