from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Reduction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REDUCTION_UNSPECIFIED: _ClassVar[Reduction]
    REDUCTION_STATS: _ClassVar[Reduction]
    REDUCTION_FULL: _ClassVar[Reduction]
REDUCTION_UNSPECIFIED: Reduction
REDUCTION_STATS: Reduction
REDUCTION_FULL: Reduction

class ActivationsRequest(_message.Message):
    __slots__ = ("image", "backbone", "layers", "reduction", "max_side", "max_response_bytes")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    REDUCTION_FIELD_NUMBER: _ClassVar[int]
    MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    MAX_RESPONSE_BYTES_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    backbone: str
    layers: _containers.RepeatedScalarFieldContainer[str]
    reduction: Reduction
    max_side: int
    max_response_bytes: int
    def __init__(self, image: _Optional[bytes] = ..., backbone: _Optional[str] = ..., layers: _Optional[_Iterable[str]] = ..., reduction: _Optional[_Union[Reduction, str]] = ..., max_side: _Optional[int] = ..., max_response_bytes: _Optional[int] = ...) -> None: ...

class LayerActivations(_message.Message):
    __slots__ = ("layer", "channels", "height", "width", "sum", "mean", "max", "maps")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    MAPS_FIELD_NUMBER: _ClassVar[int]
    layer: str
    channels: int
    height: int
    width: int
    sum: _containers.RepeatedScalarFieldContainer[float]
    mean: _containers.RepeatedScalarFieldContainer[float]
    max: _containers.RepeatedScalarFieldContainer[float]
    maps: bytes
    def __init__(self, layer: _Optional[str] = ..., channels: _Optional[int] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., sum: _Optional[_Iterable[float]] = ..., mean: _Optional[_Iterable[float]] = ..., max: _Optional[_Iterable[float]] = ..., maps: _Optional[bytes] = ...) -> None: ...

class ActivationsError(_message.Message):
    __slots__ = ("code", "message")
    class Code(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        CODE_UNSPECIFIED: _ClassVar[ActivationsError.Code]
        CODE_INVALID_ARGUMENT: _ClassVar[ActivationsError.Code]
        CODE_RESOURCE_EXHAUSTED: _ClassVar[ActivationsError.Code]
        CODE_INTERNAL: _ClassVar[ActivationsError.Code]
        CODE_OUT_OF_MEMORY: _ClassVar[ActivationsError.Code]
    CODE_UNSPECIFIED: ActivationsError.Code
    CODE_INVALID_ARGUMENT: ActivationsError.Code
    CODE_RESOURCE_EXHAUSTED: ActivationsError.Code
    CODE_INTERNAL: ActivationsError.Code
    CODE_OUT_OF_MEMORY: ActivationsError.Code
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: ActivationsError.Code
    message: str
    def __init__(self, code: _Optional[_Union[ActivationsError.Code, str]] = ..., message: _Optional[str] = ...) -> None: ...

class ActivationsResponse(_message.Message):
    __slots__ = ("backbone", "layers", "image_height", "image_width", "backend_version", "error", "batch_size", "shared_forward")
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    BACKEND_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHARED_FORWARD_FIELD_NUMBER: _ClassVar[int]
    backbone: str
    layers: _containers.RepeatedCompositeFieldContainer[LayerActivations]
    image_height: int
    image_width: int
    backend_version: str
    error: ActivationsError
    batch_size: int
    shared_forward: int
    def __init__(self, backbone: _Optional[str] = ..., layers: _Optional[_Iterable[_Union[LayerActivations, _Mapping]]] = ..., image_height: _Optional[int] = ..., image_width: _Optional[int] = ..., backend_version: _Optional[str] = ..., error: _Optional[_Union[ActivationsError, _Mapping]] = ..., batch_size: _Optional[int] = ..., shared_forward: _Optional[int] = ...) -> None: ...
