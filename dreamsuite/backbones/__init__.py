"""Backbones: a registry of frozen ImageNet networks with friendly, dreamable layer names.

>>> from dreamsuite.backbones import get_backbone, list_backbones
>>> bb = get_backbone("efficientnet_lite0")            # embedded real weights
>>> acts = bb.activations(images, ["block_10"])         # {"block_10": [N, 112, h, w]}
"""

from dreamsuite.backbones import zoo as _zoo  # noqa: F401  (registers the backbones)
from dreamsuite.backbones.loaded import Backbone, FeatureExtractor, fuse_batchnorm, get_backbone
from dreamsuite.backbones.registry import (
    DEFAULT_BACKBONE,
    WEIGHTS_ENV,
    BackboneSpec,
    LayerInfo,
    get_backbone_spec,
    list_backbones,
    resolve_weights_file,
    weights_status,
)

__all__ = [
    "DEFAULT_BACKBONE",
    "WEIGHTS_ENV",
    "Backbone",
    "BackboneSpec",
    "FeatureExtractor",
    "LayerInfo",
    "fuse_batchnorm",
    "get_backbone",
    "get_backbone_spec",
    "list_backbones",
    "resolve_weights_file",
    "weights_status",
]
