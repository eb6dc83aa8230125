"""FastGAN for 128 px and up, after "Towards Faster and Stabilized GAN Training for
High-fidelity Few-shot Image Synthesis" (Liu et al., ICLR 2021), written from the paper.

Generator: ``z`` -> 4x4 (transposed 4x4 convolution, BatchNorm, GLU), then one up-sampling
block per doubling (nearest up-sampling, 3x3 convolution, BatchNorm, GLU) to the output size and
a 3x3 convolution with tanh. **Skip-layer excitation** (SLE): a low-resolution feature map is
pooled to 4x4, squeezed by a 4x4 convolution to one vector per image (LeakyReLU, 1x1 convolution,
sigmoid) that gates the channels of the feature map 16 times larger (4 -> 64, 8 -> 128,
16 -> 256 ...), so coarse structure steers fine texture with a short gradient path.

Discriminator: a strided 4x4 convolution, then residual down-sampling blocks (a strided
4x4 + 3x3 path and an average-pool + 1x1 path, averaged) down to 8x8, and a 4x4 convolution that
gives a 5x5 map of logits. **Self-supervision**: two small decoders reconstruct, from D's own
features of real images, the whole image (from the 8x8 features) and a random quarter of it
(from the matching quarter of the 16x16 features), at 64x64. The paper uses a perceptual
(LPIPS) reconstruction loss; with no network weights downloadable here it is an L1 loss.
The reconstruction loss is added to D's loss on real images only.

Channel widths scale with ``width`` (``w``): generator 16w at 4x4, 8w at 8, 4w at 16, 2w at 32
and 64, w at 128, w/2 at 256; the discriminator mirrors it. Spectral norm on every
discriminator convolution, hinge loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dreamsuite.gan.dcgan import dcgan_init, sn_conv

__all__ = ["FastGANGenerator", "FastGANDiscriminator", "SkipLayerExcitation"]

#: Side of the decoders' reconstructions.
RECONSTRUCTION_SIZE = 64


def _g_channels(width: int, resolution: int) -> int:
    table = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2}
    return max(8, width * table[resolution] if resolution in table else width * 128 // resolution)


def _up(cin: int, cout: int) -> nn.Sequential:
    """Nearest 2x up-sampling, 3x3 convolution, BatchNorm, GLU (the conv makes 2x channels)."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                         nn.Conv2d(cin, 2 * cout, 3, 1, 1, bias=False),
                         nn.BatchNorm2d(2 * cout), nn.GLU(dim=1))


class SkipLayerExcitation(nn.Module):
    """Gate the channels of ``high`` by a vector computed from the low-resolution ``low``."""

    def __init__(self, c_low: int, c_high: int):
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(4), nn.Conv2d(c_low, c_high, 4, 1, 0, bias=False),
            nn.LeakyReLU(0.1, True), nn.Conv2d(c_high, c_high, 1, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return high * self.gate(low)


class FastGANGenerator(nn.Module):
    """``z [N, z_dim]`` -> ``[N, 3, R, R]`` in ``[-1, 1]``, ``R`` a power of two >= 128."""

    def __init__(self, z_dim: int, width: int, resolution: int = 128):
        super().__init__()
        if resolution < 128 or resolution & (resolution - 1):
            raise ValueError(f"FastGAN resolution must be a power of two >= 128, not {resolution}")
        self.z_dim = z_dim
        c4 = _g_channels(width, 4)
        self.init = nn.Sequential(nn.ConvTranspose2d(z_dim, 2 * c4, 4, 1, 0, bias=False),
                                  nn.BatchNorm2d(2 * c4), nn.GLU(dim=1))
        sizes = [4 * 2**i for i in range(1, int(math.log2(resolution // 4)) + 1)]
        self.ups = nn.ModuleList(_up(_g_channels(width, s // 2), _g_channels(width, s))
                                 for s in sizes)
        self.sle_pairs = [(s // 16, s) for s in sizes if s >= 64]
        self.sle = nn.ModuleDict({
            str(high): SkipLayerExcitation(_g_channels(width, low), _g_channels(width, high))
            for low, high in self.sle_pairs})
        self.out = nn.Conv2d(_g_channels(width, resolution), 3, 3, 1, 1)
        dcgan_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.init(z.view(z.shape[0], self.z_dim, 1, 1))
        feats = {4: x}
        for up in self.ups:
            x = up(x)
            size = x.shape[-1]
            if str(size) in self.sle:
                x = self.sle[str(size)](feats[size // 16], x)
            feats[size] = x
        return torch.tanh(self.out(x))


class _DownBlock(nn.Module):
    """Residual down-sampling: (4x4 stride-2 conv, BN, LReLU, 3x3 conv, BN, LReLU) averaged
    with (2x2 average pool, 1x1 conv, BN, LReLU)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.main = nn.Sequential(
            sn_conv(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True),
            sn_conv(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
            nn.LeakyReLU(0.2, True))
        self.skip = nn.Sequential(nn.AvgPool2d(2), sn_conv(cin, cout, 1, 1, 0, bias=False),
                                  nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.main(x) + self.skip(x)) / 2


class _Decoder(nn.Module):
    """8x8 features -> ``[N, 3, 64, 64]`` in ``[-1, 1]``."""

    def __init__(self, cin: int, width: int):
        super().__init__()
        chans = [max(8, 4 * width), max(8, 2 * width), max(8, width)]
        self.net = nn.Sequential(
            _up(cin, chans[0]), _up(chans[0], chans[1]), _up(chans[1], chans[2]),
            nn.Conv2d(chans[2], 3, 3, 1, 1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FastGANDiscriminator(nn.Module):
    """``[N, 3, R, R]`` -> ``(logits [N, 25], reconstruction loss or None)``.

    ``forward(x, reconstruct=n)``: the first ``n`` images are real; D also reconstructs them
    and returns the mean L1 reconstruction loss. D has BatchNorm, so it is *batch coupled*:
    statistics are taken separately over the real images and over the rest, exactly as if D
    were called on each part, which lets the trainer send one batch."""

    batch_coupled = True

    def __init__(self, width: int, resolution: int = 128):
        super().__init__()
        ch = {r: max(8, width * 64 // r) for r in (8, 16, 32, 64, 128, 256, 512, 1024)}
        self.stem = nn.Sequential(sn_conv(3, ch[resolution // 2], 4, 2, 1),
                                  nn.LeakyReLU(0.2, True))
        sizes = [resolution // 2 // 2**i for i in range(int(math.log2(resolution // 16)))]
        self.downs = nn.ModuleList(_DownBlock(ch[s], ch[s // 2]) for s in sizes)
        self.head = nn.Sequential(
            sn_conv(ch[8], ch[16], 1, 1, 0, bias=False), nn.BatchNorm2d(ch[16]),
            nn.LeakyReLU(0.2, True), sn_conv(ch[16], 1, 4, 1, 0))
        self.decode_whole = _Decoder(ch[8], width)
        self.decode_part = _Decoder(ch[16], width)

    def _trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features at 16x16 and 8x8."""
        x = self.stem(x)
        f16 = None
        for down in self.downs:
            x = down(x)
            if x.shape[-1] == 16:
                f16 = x
        return f16, x

    def forward(self, x: torch.Tensor, reconstruct: int = 0,
                generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        parts = [p for p in (x[:reconstruct], x[reconstruct:]) if p.shape[0]]
        feats = [self._trunk(p) for p in parts]
        logits = torch.cat([self.head(f8).flatten(1) for _, f8 in feats])
        if not reconstruct:
            return logits, None
        real = x[:reconstruct]
        f16, f8 = feats[0]
        quarter = int(torch.randint(4, (1,), generator=generator,
                                    device=generator.device if generator else "cpu"))
        row, col = divmod(quarter, 2)
        side, half = f16.shape[-1] // 2, real.shape[-1] // 2
        part = f16[..., row * side:(row + 1) * side, col * side:(col + 1) * side]
        target_part = real[..., row * half:(row + 1) * half, col * half:(col + 1) * half]
        size = (RECONSTRUCTION_SIZE, RECONSTRUCTION_SIZE)
        loss = (F.l1_loss(self.decode_whole(f8), F.adaptive_avg_pool2d(real, size))
                + F.l1_loss(self.decode_part(part), F.adaptive_avg_pool2d(target_part, size)))
        return logits, loss
