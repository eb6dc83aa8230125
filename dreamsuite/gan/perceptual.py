"""A perceptual distance between two images on a frozen backbone, per image pair.

For each *stage* of the backbone (the last block of each run of blocks with the same channel
count: EfficientNet's stages), the features of both images are normalised to unit length along
the channels at every position, and the distance of the stage is the mean over positions of the
L2 distance between the two normalised vectors (in ``[0, 2]``). The distance of the pair is the
mean over the stages. ``squared=True`` averages the squared distances instead (the LPIPS form
without learned weights: smooth at 0, which a training loss wants).

Training uses it on EfficientNet-Lite0 (the embedded backbone) as the perceptual loss of
``dream2dream``; evaluation uses it on EfficientNet-Lite2, a network that neither made the dreams
nor trained the model.

>>> distance = PerceptualDistance("efficientnet_lite2", device="cpu")
>>> d = distance(outputs, dreams)                  # [N]: one value per pair
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dreamsuite.backbones import BackboneSpec, get_backbone, get_backbone_spec

__all__ = ["stage_layers", "PerceptualDistance", "EVAL_BACKBONE", "LOSS_BACKBONE"]

#: Backbone of the evaluation distance (never used in training).
EVAL_BACKBONE = "efficientnet_lite2"
#: Backbone of the training loss (the embedded default, weights shipped in a package).
LOSS_BACKBONE = "efficientnet_lite0"
_EPS = 1e-10


def stage_layers(spec: BackboneSpec, *, up_to: str | None = None) -> list[str]:
    """The last ``block_*`` layer of each run of blocks with the same channel count, in
    forward order (up to and including ``up_to``)."""
    blocks = [layer for layer in spec.layers if layer.name.startswith("block_")]
    if up_to is not None:
        last = spec.layer(up_to).index
        blocks = [layer for layer in blocks if layer.index <= last]
    out = []
    for layer, following in zip(blocks, [*blocks[1:], None], strict=True):
        if following is None or following.channels != layer.channels:
            out.append(layer.name)
    return out


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.square().sum(dim=1, keepdim=True) + _EPS)


class PerceptualDistance(nn.Module):
    """``forward(x, y)``: images ``[N, 3, H, W]`` in ``[0, 1]`` (same shape) -> ``[N]``
    float32 on the backbone's device (see the module docstring). Differentiable in both
    inputs; the backbone is frozen."""

    def __init__(self, backbone: str, *, layers: Sequence[str] | None = None,
                 up_to: str | None = None, squared: bool = False,
                 device: str | torch.device | None = None):
        super().__init__()
        self.net = get_backbone(backbone, device=device)
        self.layers = tuple(layers or stage_layers(get_backbone_spec(backbone), up_to=up_to))
        self.extractor = self.net.extractor(self.layers)
        self.squared = squared

    @property
    def device(self) -> torch.device:
        return self.net.device

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"images of different shapes: {tuple(x.shape)}, {tuple(y.shape)}")
        n = len(x)
        feats = self.extractor(self.net.prepare(torch.cat([x, y])))
        per_stage = []
        for name in self.layers:
            f = feats[name].float()
            diff = (_unit(f[:n]) - _unit(f[n:])).square().sum(dim=1)
            if not self.squared:
                diff = (diff + _EPS).sqrt()
            per_stage.append(diff.mean(dim=(1, 2)))
        return torch.stack(per_stage).mean(dim=0)
