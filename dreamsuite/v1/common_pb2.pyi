from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Weights(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WEIGHTS_UNSPECIFIED: _ClassVar[Weights]
    WEIGHTS_PRETRAINED: _ClassVar[Weights]
    WEIGHTS_RANDOM: _ClassVar[Weights]
WEIGHTS_UNSPECIFIED: Weights
WEIGHTS_PRETRAINED: Weights
WEIGHTS_RANDOM: Weights

class ImageRef(_message.Message):
    __slots__ = ("data", "uri")
    DATA_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    uri: str
    def __init__(self, data: _Optional[bytes] = ..., uri: _Optional[str] = ...) -> None: ...

class ChannelWeight(_message.Message):
    __slots__ = ("channel", "weight")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    channel: int
    weight: float
    def __init__(self, channel: _Optional[int] = ..., weight: _Optional[float] = ...) -> None: ...

class LayerTerm(_message.Message):
    __slots__ = ("layer", "weight", "channels")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    layer: str
    weight: float
    channels: _containers.RepeatedCompositeFieldContainer[ChannelWeight]
    def __init__(self, layer: _Optional[str] = ..., weight: _Optional[float] = ..., channels: _Optional[_Iterable[_Union[ChannelWeight, _Mapping]]] = ...) -> None: ...

class Maplist(_message.Message):
    __slots__ = ("layers",)
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    layers: _containers.RepeatedCompositeFieldContainer[LayerTerm]
    def __init__(self, layers: _Optional[_Iterable[_Union[LayerTerm, _Mapping]]] = ...) -> None: ...

class LayerWeights(_message.Message):
    __slots__ = ("layer", "weights")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    layer: str
    weights: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, layer: _Optional[str] = ..., weights: _Optional[_Iterable[float]] = ...) -> None: ...

class Artifact(_message.Message):
    __slots__ = ("uri", "presigned_url", "sha256", "size_bytes", "content_type")
    URI_FIELD_NUMBER: _ClassVar[int]
    PRESIGNED_URL_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    uri: str
    presigned_url: str
    sha256: str
    size_bytes: int
    content_type: str
    def __init__(self, uri: _Optional[str] = ..., presigned_url: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., content_type: _Optional[str] = ...) -> None: ...

class LayerInfo(_message.Message):
    __slots__ = ("name", "channels", "aliases")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    name: str
    channels: int
    aliases: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., channels: _Optional[int] = ..., aliases: _Optional[_Iterable[str]] = ...) -> None: ...

class BackboneInfo(_message.Message):
    __slots__ = ("name", "description", "layers", "default_layer", "min_size", "weights_status")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_LAYER_FIELD_NUMBER: _ClassVar[int]
    MIN_SIZE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_STATUS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    layers: _containers.RepeatedCompositeFieldContainer[LayerInfo]
    default_layer: str
    min_size: int
    weights_status: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., layers: _Optional[_Iterable[_Union[LayerInfo, _Mapping]]] = ..., default_layer: _Optional[str] = ..., min_size: _Optional[int] = ..., weights_status: _Optional[str] = ...) -> None: ...
