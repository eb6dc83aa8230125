from dreamsuite.v1 import activations_pb2 as _activations_pb2
from dreamsuite.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GuideLayer(_message.Message):
    __slots__ = ("name", "weight")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    name: str
    weight: float
    def __init__(self, name: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class GuideWeightsRequest(_message.Message):
    __slots__ = ("guides", "backbone", "layers")
    GUIDES_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    guides: _containers.RepeatedCompositeFieldContainer[_common_pb2.ImageRef]
    backbone: str
    layers: _containers.RepeatedCompositeFieldContainer[GuideLayer]
    def __init__(self, guides: _Optional[_Iterable[_Union[_common_pb2.ImageRef, _Mapping]]] = ..., backbone: _Optional[str] = ..., layers: _Optional[_Iterable[_Union[GuideLayer, _Mapping]]] = ...) -> None: ...

class GuideWeightsResponse(_message.Message):
    __slots__ = ("backbone", "layers", "maplist", "backend_version")
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    MAPLIST_FIELD_NUMBER: _ClassVar[int]
    BACKEND_VERSION_FIELD_NUMBER: _ClassVar[int]
    backbone: str
    layers: _containers.RepeatedCompositeFieldContainer[_common_pb2.LayerWeights]
    maplist: _common_pb2.Maplist
    backend_version: str
    def __init__(self, backbone: _Optional[str] = ..., layers: _Optional[_Iterable[_Union[_common_pb2.LayerWeights, _Mapping]]] = ..., maplist: _Optional[_Union[_common_pb2.Maplist, _Mapping]] = ..., backend_version: _Optional[str] = ...) -> None: ...

class SelectNeuronsRequest(_message.Message):
    __slots__ = ("images", "prefix", "backbone", "layers", "top_k", "bottom_k")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    BOTTOM_K_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.ImageRef]
    prefix: str
    backbone: str
    layers: _containers.RepeatedScalarFieldContainer[str]
    top_k: int
    bottom_k: int
    def __init__(self, images: _Optional[_Iterable[_Union[_common_pb2.ImageRef, _Mapping]]] = ..., prefix: _Optional[str] = ..., backbone: _Optional[str] = ..., layers: _Optional[_Iterable[str]] = ..., top_k: _Optional[int] = ..., bottom_k: _Optional[int] = ...) -> None: ...

class LayerSelection(_message.Message):
    __slots__ = ("layer", "top", "bottom", "means")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    BOTTOM_FIELD_NUMBER: _ClassVar[int]
    MEANS_FIELD_NUMBER: _ClassVar[int]
    layer: str
    top: _containers.RepeatedScalarFieldContainer[int]
    bottom: _containers.RepeatedScalarFieldContainer[int]
    means: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, layer: _Optional[str] = ..., top: _Optional[_Iterable[int]] = ..., bottom: _Optional[_Iterable[int]] = ..., means: _Optional[_Iterable[float]] = ...) -> None: ...

class SelectNeuronsResponse(_message.Message):
    __slots__ = ("backbone", "layers", "images", "backend_version", "maplist")
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    BACKEND_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAPLIST_FIELD_NUMBER: _ClassVar[int]
    backbone: str
    layers: _containers.RepeatedCompositeFieldContainer[LayerSelection]
    images: int
    backend_version: str
    maplist: _common_pb2.Maplist
    def __init__(self, backbone: _Optional[str] = ..., layers: _Optional[_Iterable[_Union[LayerSelection, _Mapping]]] = ..., images: _Optional[int] = ..., backend_version: _Optional[str] = ..., maplist: _Optional[_Union[_common_pb2.Maplist, _Mapping]] = ...) -> None: ...

class GuideActivationsRequest(_message.Message):
    __slots__ = ("image", "backbone", "layers", "max_side")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.ImageRef
    backbone: str
    layers: _containers.RepeatedScalarFieldContainer[str]
    max_side: int
    def __init__(self, image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., backbone: _Optional[str] = ..., layers: _Optional[_Iterable[str]] = ..., max_side: _Optional[int] = ...) -> None: ...

class GuideActivationsResponse(_message.Message):
    __slots__ = ("backbone", "layers", "backend_version")
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_VERSION_FIELD_NUMBER: _ClassVar[int]
    backbone: str
    layers: _containers.RepeatedCompositeFieldContainer[_activations_pb2.LayerActivations]
    backend_version: str
    def __init__(self, backbone: _Optional[str] = ..., layers: _Optional[_Iterable[_Union[_activations_pb2.LayerActivations, _Mapping]]] = ..., backend_version: _Optional[str] = ...) -> None: ...
