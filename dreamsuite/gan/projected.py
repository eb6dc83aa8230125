"""A projected discriminator (after Sauer et al., "Projected GANs Converge Faster", NeurIPS
2021): D judges images in the feature space of a frozen pretrained network instead of learning
its features from a few hundred images.

The images (``[-1, 1]``, DiffAugmented by the trainer) are resized to ``feed`` px and run
through the embedded EfficientNet-Lite0 (frozen, BatchNorm folded; the network the dreams were
made with, whose features the dreams exaggerate) up to four layers, one per stride (4, 8, 16,
32 at the feed side). Each layer's activations go through a fixed random 1x1 projection to
more channels (cross-channel mixing), and the deeper projections are upsampled and added into
the shallower ones through fixed random 3x3 convolutions (cross-scale mixing), so no single
feature dominates. Only the small heads on top are trained: one per scale, strided 4x4
spectrally normalised convolutions down to 4x4, then one logit per position. ``forward``
returns every head's logits side by side (``[N, K]``), and the trainer's loss averages them.

The frozen network is not part of the module's state: it is the process's cached backbone for
the input's device (:func:`~dreamsuite.backbones.get_backbone`), so checkpoints hold the heads
and the fixed projections only. The projections are drawn at construction from the global
torch generator (seeded by the trainer) and saved with the heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dreamsuite.backbones import get_backbone, get_backbone_spec
from dreamsuite.gan.dcgan import sn_conv

__all__ = ["ProjectedDiscriminator", "FEATURE_BACKBONE", "FEATURE_LAYERS"]

FEATURE_BACKBONE = "efficientnet_lite0"
#: The last layer of each of Lite0's stages at strides 4, 8, 16 and 32.
FEATURE_LAYERS = ("block_2", "block_4", "block_10", "block_15")


class ProjectedDiscriminator(nn.Module):
    """``[N, 3, R, R]`` in ``[-1, 1]`` -> ``(logits [N, K], None)``; see the module docstring.
    ``width`` sets the heads' channels (``2 * width``) and the projections' (``width`` times
    1, 2, 4, 8 from shallow to deep)."""

    batch_coupled = False

    def __init__(self, width: int, feed: int = 64):
        super().__init__()
        spec = get_backbone_spec(FEATURE_BACKBONE)
        self.feed = feed
        channels = [spec.layer(layer).channels for layer in FEATURE_LAYERS]
        sides = [max(1, feed // s) for s in (4, 8, 16, 32)]
        projected = [width * m for m in (1, 2, 4, 8)]
        self.mix_channels = nn.ModuleList(
            nn.Conv2d(c, p, 1, bias=True).requires_grad_(False)
            for c, p in zip(channels, projected, strict=True))
        # Cross-scale mixing, deep to shallow: scale i gets scale i+1's mixed output.
        self.mix_scales = nn.ModuleList(
            nn.Conv2d(projected[i + 1], projected[i], 3, padding=1, bias=True)
            .requires_grad_(False) for i in range(len(projected) - 1))
        self.heads = nn.ModuleList(_head(p, s, 2 * width) for p, s in zip(projected, sides,
                                                                          strict=True))

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        backbone = get_backbone(FEATURE_BACKBONE, device=x.device)
        extractor = backbone.extractor(FEATURE_LAYERS)  # built once per backbone
        pixels = (x.float() + 1) * 0.5
        if pixels.shape[-1] != self.feed or pixels.shape[-2] != self.feed:
            pixels = F.interpolate(pixels, size=(self.feed, self.feed), mode="bilinear",
                                   align_corners=False)
        pixels = pixels.contiguous(memory_format=torch.channels_last)
        acts = extractor(pixels)
        mixed = [mix(acts[layer]) for mix, layer in zip(self.mix_channels, FEATURE_LAYERS,
                                                        strict=True)]
        out = [mixed[-1]]
        for i in range(len(mixed) - 2, -1, -1):
            deeper = F.interpolate(out[0], size=mixed[i].shape[-2:], mode="bilinear",
                                   align_corners=False)
            out.insert(0, mixed[i] + self.mix_scales[i](deeper))
        return out

    def forward(self, x: torch.Tensor, reconstruct: int = 0,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, None]:
        features = self._features(x)
        logits = [head(f).flatten(1) for head, f in zip(self.heads, features, strict=True)]
        return torch.cat(logits, dim=1), None


def _head(channels: int, side: int, width: int) -> nn.Sequential:
    """Strided 4x4 convolutions from ``side`` down to 4 px (none for a map of 4 px or less),
    then a convolution of kernel ``min(4, side)`` without padding: one logit per image from
    each scale."""
    layers: list[nn.Module] = []
    c = channels
    for _ in range(max(0, int(math.log2(max(side, 4) // 4)))):
        layers += [sn_conv(c, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        c = width
    kernel = min(4, side)
    layers.append(sn_conv(c, 1, kernel, 1, 0))
    return nn.Sequential(*layers)

