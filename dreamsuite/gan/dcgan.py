"""DCGAN at 64 px: the classic small-data baseline (Radford et al., 2016).

Generator: ``z [N, Z]`` -> 4x4 -> 8 -> 16 -> 32 -> ``[N, 3, 64, 64]`` in ``[-1, 1]``:
transposed 4x4 convolutions, BatchNorm and ReLU, tanh at the end; channels ``8w, 4w, 2w, w``.

Discriminator: ``[N, 3, 64, 64]`` -> 32 -> 16 -> 8 -> 4 -> one logit per image: strided 4x4
convolutions with LeakyReLU(0.2) and spectral normalisation instead of BatchNorm. Spectral norm
keeps D Lipschitz-bounded on a few hundred images (with DiffAugment), and with no batch
statistics in D the real and generated images can go through D in one batch with the same
result as two separate passes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "dcgan_init", "sn_conv"]


class DCGANGenerator(nn.Module):
    """``z [N, z_dim]`` -> ``[N, 3, 64, 64]`` in ``[-1, 1]``."""

    def __init__(self, z_dim: int, width: int):
        super().__init__()
        self.z_dim = z_dim
        w = width

        def up(cin: int, cout: int) -> list[nn.Module]:
            return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU(True)]

        self.net = nn.Sequential(
            nn.ConvTranspose2d(z_dim, 8 * w, 4, 1, 0, bias=False), nn.BatchNorm2d(8 * w),
            nn.ReLU(True),
            *up(8 * w, 4 * w), *up(4 * w, 2 * w), *up(2 * w, w),
            nn.ConvTranspose2d(w, 3, 4, 2, 1, bias=False), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], self.z_dim, 1, 1))


class DCGANDiscriminator(nn.Module):
    """``[N, 3, 64, 64]`` -> ``(logits [N, 1], None)``; the second item is the auxiliary loss
    of discriminators that have one (this one has none)."""

    batch_coupled = False

    def __init__(self, width: int):
        super().__init__()
        w = width

        def down(cin: int, cout: int) -> list[nn.Module]:
            return [sn_conv(cin, cout, 4, 2, 1), nn.LeakyReLU(0.2, True)]

        self.net = nn.Sequential(
            *down(3, w), *down(w, 2 * w), *down(2 * w, 4 * w), *down(4 * w, 8 * w),
            sn_conv(8 * w, 1, 4, 1, 0),
        )

    def forward(self, x: torch.Tensor, reconstruct: int = 0,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, None]:
        return self.net(x).flatten(1), None


def dcgan_init(module: nn.Module) -> nn.Module:
    """The DCGAN initialisation: convolutions N(0, 0.02), BatchNorm scales N(1, 0.02), biases 0.
    Draws from the global torch generator (seed it first)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


def sn_conv(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0,
            bias: bool = True) -> nn.Module:
    """A spectrally normalised convolution, initialised N(0, 0.02) before the power iteration
    is set up (so its singular-vector estimate matches the initial weight)."""
    return spectral_norm(dcgan_init(nn.Conv2d(cin, cout, kernel, stride, padding, bias=bias)))
