"""dreamsuite.engine.clean: the high-frequency measure, the three gradient conditionings, and
cleaned dreams that keep octaves, jitter and tiling working.

Dreams run the embedded backbone (real weights) on ~100 px images with few steps.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dreamsuite.engine import DreamConfig, dream
from dreamsuite.engine.clean import (
    COLOR_CORRELATION,
    fourier_precondition,
    high_frequency_share,
    laplacian_normalise,
    precondition,
)
from dreamsuite.engine.config import UNRECORDED
from dreamsuite.engine.dream import prepare_dream
from dreamsuite.engine.objectives import LayerTerm, Maplist
from dreamsuite.engine.octaves import tile_slices
from dreamsuite.errors import InvalidArgument
from dreamsuite.images import sample_image

#: The engine's step before the cleaning options.
PLAIN = dict(UNRECORDED)


def _noise(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _smooth_field(h: int, w: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return torch.stack([torch.sin(3 * yy + 2 * xx), torch.cos(4 * xx), yy * xx])


# --- the measure --------------------------------------------------------------------------------


def test_white_noise_change_scores_high_and_a_smooth_change_low():
    assert high_frequency_share(_noise(3, 96, 128)) > 0.9  # ~0.95: the area above the cutoff
    assert high_frequency_share(_smooth_field(96, 128)) < 0.01
    assert high_frequency_share(torch.zeros(3, 32, 32)) == 0.0


def test_the_measure_ignores_the_borders_of_a_non_periodic_change():
    # A ramp wraps around with a jump at the border: without the window that jump would count.
    ramp = torch.linspace(0, 1, 128).expand(3, 96, 128)
    assert high_frequency_share(ramp) < 0.01


# --- the conditionings --------------------------------------------------------------------------


def test_with_every_option_off_the_gradient_is_untouched():
    grad = _noise(1, 3, 40, 48)
    assert precondition(grad) is grad


def test_laplacian_normalisation_gives_every_band_its_share():
    noise = _noise(1, 3, 96, 128)
    out = laplacian_normalise(noise, 4)
    assert out.shape == noise.shape
    # White noise holds almost all its energy in the finest band; equal bands move it down.
    assert high_frequency_share(out[0]) < 0.5 * high_frequency_share(noise[0])
    odd = laplacian_normalise(_noise(1, 3, 37, 53), 6)  # odd sizes, levels beyond the image
    assert odd.shape == (1, 3, 37, 53) and torch.isfinite(odd).all()


def _reference_laplacian(grad: torch.Tensor, levels: int) -> torch.Tensor:
    """The pyramid written plainly: F.interpolate, squared means, an einsum-free merge."""
    import torch.nn.functional as F

    from dreamsuite.engine.clean import _blur_down

    def up(x, size):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    bands, low = [], grad
    for _ in range(levels):
        if min(low.shape[-2:]) < 8:
            break
        down = _blur_down(low)
        bands.append(low - up(down, tuple(low.shape[-2:])))
        low = down
    out = low / low.pow(2).mean().sqrt()
    for band in reversed(bands):
        out = up(out, tuple(band.shape[-2:])) + band / band.pow(2).mean().sqrt()
    return out


@pytest.mark.parametrize("size", [(64, 96), (128, 128), (49, 74), (37, 53)])
def test_fast_laplacian_matches_the_plain_pyramid(size):
    grad = _noise(1, 3, *size)
    torch.testing.assert_close(laplacian_normalise(grad, 4), _reference_laplacian(grad, 4),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 3, 64, 96), (2, 3, 37, 53), (1, 3, 8, 9), (1, 1, 2, 5),
                                   (1, 3, 3, 3), (1, 3, 1, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_pyramids_blur_is_the_binomial_5x5_convolution(shape, dtype):
    """The two strided 1-D passes give the 5x5 binomial kernel's strided convolution of the
    reflect-padded image (replicate-padded below 3 px)."""
    import torch.nn.functional as F

    from dreamsuite.engine.clean import _blur_down

    x = _noise(*shape).to(dtype)
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=dtype) / 16
    kernel = (k[:, None] * k[None, :]).expand(shape[1], 1, 5, 5)
    mode = "reflect" if min(shape[-2:]) > 2 else "replicate"
    expected = F.conv2d(F.pad(x, (2, 2, 2, 2), mode=mode), kernel, stride=2, groups=shape[1])
    got = _blur_down(x)
    assert got.shape == expected.shape and got.dtype == dtype
    tolerance = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(got, expected, rtol=0, atol=tolerance)


def test_preconditioning_a_big_gradient_takes_a_few_copies_of_it():
    """The default preconditioning of a 2048 px gradient peaks at under 5.5 copies of it on
    top of it (4.5 measured; the depthwise blur's 16-channel blocks and out-of-place bands
    took 8.7), measured in a fresh process."""
    import subprocess
    import sys

    code = (
        "import re, torch\n"
        "from dreamsuite.engine.clean import precondition\n"
        "def kib(key):\n"
        "    status = open('/proc/self/status').read()\n"
        "    return int(re.search(key + r':\\s+(\\d+)', status).group(1))\n"
        "g = torch.randn(1, 3, 2048, 2048)\n"
        "precondition(torch.randn(1, 3, 64, 64), laplacian=4, decorrelate=True)\n"
        "before = max(kib('VmHWM'), kib('VmRSS'))\n"
        "precondition(g, laplacian=4, decorrelate=True)\n"
        "print((kib('VmHWM') - before) * 1024 / (g.numel() * 4))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True)
    copies = float(out.stdout.strip().splitlines()[-1])
    assert copies < 5.5, f"preconditioning took {copies:.1f} copies of the gradient"


@pytest.mark.parametrize("shape,size", [((2, 3, 16, 10), (32, 20)), ((1, 3, 7, 5), (13, 9)),
                                        ((1, 1, 1, 4), (1, 7)), ((1, 3, 3, 1), (5, 2)),
                                        ((1, 3, 9, 12), (37, 50)), ((1, 3, 16, 16), (512, 512))])
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_upsampling_adjoint_is_autograds_gradient(shape, size, channels_last):
    """``up_adjoint`` gives what autograd gives through ``F.interpolate`` (float64, so only
    the order of the sums differs), whatever the gradient's memory layout."""
    import torch.nn.functional as F

    from dreamsuite.engine.clean import up_adjoint

    x = _noise(*shape).double().requires_grad_()
    grad = _noise(shape[0], shape[1], *size).double()
    (expected,) = torch.autograd.grad(F.interpolate(x, size=size, mode="bilinear"), x, grad)
    if channels_last:
        grad = grad.contiguous(memory_format=torch.channels_last)
    got = up_adjoint(grad, tuple(shape[-2:]))
    assert got.shape == x.shape
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_the_pyramid_keeps_float64_precision_autograd_and_half_range():
    grad64 = _noise(1, 3, 37, 53).double()
    torch.testing.assert_close(laplacian_normalise(grad64, 4),
                               _reference_laplacian(grad64, 4), rtol=0, atol=1e-12)
    grad = _noise(1, 3, 37, 53).requires_grad_()
    laplacian_normalise(grad, 4).square().sum().backward()  # differentiable, as before
    assert grad.grad is not None and torch.isfinite(grad.grad).all()
    big = _noise(1, 3, 64, 64) * 2000  # a norm of ~2e5: past float16's 65504
    half = laplacian_normalise(big.half(), 3).float()
    torch.testing.assert_close(half, laplacian_normalise(big, 3), rtol=0.02, atol=0.02)


def test_decorrelated_step_is_mostly_luminance():
    luminance = torch.ones(1, 3, 8, 8)
    chroma = torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 8, 8)
    kept = precondition(luminance, decorrelate=True).norm() / luminance.norm()
    shrunk = precondition(chroma, decorrelate=True).norm() / chroma.norm()
    assert kept > 10 * shrunk
    # C C^T: the pixel step of a step in Lucid's decorrelated colours.
    torch.testing.assert_close(precondition(luminance, decorrelate=True)[0, :, 0, 0],
                               COLOR_CORRELATION @ COLOR_CORRELATION.T @ torch.ones(3))


def test_fourier_preconditioning_favours_low_frequencies():
    noise = _noise(1, 3, 64, 80)
    out = fourier_precondition(noise, 1.0)
    assert out.shape == noise.shape
    assert high_frequency_share(out[0]) < 0.4
    assert high_frequency_share(fourier_precondition(noise, 0.5)[0]) > high_frequency_share(
        out[0])


# --- cleaned dreams -----------------------------------------------------------------------------


def _gain_and_share(image: torch.Tensor, config: DreamConfig) -> tuple[float, float]:
    run = prepare_dream(image, config, device="cpu")
    out = run.run().image
    return run.evaluate(out) - run.evaluate(image), high_frequency_share(out - image)


def test_the_default_step_halves_the_speckle_and_keeps_the_objective(coffee):
    """The issue's rule on a small dream: the default (cleaned) step leaves at most half the
    plain step's high-frequency share, at 90% or more of its objective gain."""
    config = DreamConfig(octaves=2, steps=5, jitter=4, seed=0)
    assert (config.laplacian, config.decorrelate) == (4, True)
    plain_gain, plain_share = _gain_and_share(coffee, dataclasses.replace(config, **PLAIN))
    gain, share = _gain_and_share(coffee, config)
    assert share <= 0.5 * plain_share, (share, plain_share)
    assert gain >= 0.9 * plain_gain, (gain, plain_gain)


@pytest.mark.parametrize("options", [
    {"laplacian": 3, "decorrelate": False},
    {"laplacian": 0, "decorrelate": True},
    {"laplacian": 0, "decorrelate": True, "fourier": 1.0},
    {"laplacian": 2, "decorrelate": True, "fourier": 0.5},
])
def test_every_option_raises_the_objective_with_octaves_and_jitter(chelsea, options):
    config = DreamConfig(octaves=2, steps=4, jitter=8, seed=1, **options)
    run = prepare_dream(chelsea, config, device="cpu")
    result = run.run()
    assert result.image.shape == chelsea.shape
    assert float(result.image.min()) >= 0 and float(result.image.max()) <= 1
    assert run.evaluate(result.image) > 1.2 * run.evaluate(chelsea)


def test_same_seed_same_cleaned_dream(coffee):
    config = DreamConfig(octaves=1, steps=3, jitter=8, seed=3, fourier=1.0)
    first = dream(coffee, config, device="cpu").image
    assert torch.equal(first, dream(coffee, config, device="cpu").image)


def test_tiled_cleaned_dream_has_no_seams():
    """Tiles of 64 px over 160 px: the cleaned step's change at the tile grid is as strong as
    a few pixels beside it (a local comparison: the coarse change varies with the content)."""
    image = sample_image("astronaut", size=160)
    config = DreamConfig(maplist=Maplist((LayerTerm("block_3"),)), octaves=1, steps=6,
                         jitter=0, tile=64, seed=0)
    out = dream(image, config, device="cpu").image
    assert out.shape == image.shape
    change = (out - image).abs()
    profiles = (change.mean(dim=(0, 2)), change.mean(dim=(0, 1)))  # per row, per column
    tiles = tile_slices(tuple(image.shape[-2:]), 64)
    starts = (sorted({ys.start for ys, _ in tiles} - {0}), sorted({xs.start for _, xs in tiles}
                                                                  - {0}))
    for profile, edges in zip(profiles, starts, strict=True):
        for edge in edges:
            at = profile[edge - 1:edge + 1].mean()
            beside = torch.cat([profile[edge - 6:edge - 2], profile[edge + 2:edge + 6]]).mean()
            assert 0.8 < float(at / beside) < 1.25, (edge, float(at / beside))


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, message", [
    ({"laplacian": 13}, "laplacian must be between 0 and 12"),
    ({"laplacian": -1}, "laplacian must be between"),
    ({"fourier": -0.5}, "fourier must be between 0 and 4"),
    ({"fourier": float("nan")}, "fourier must be a finite number"),
    ({"decorrelate": "yes"}, "decorrelate must be true or false"),
])
def test_out_of_range_options_are_refused(changes, message):
    with pytest.raises(InvalidArgument, match=message):
        DreamConfig(**changes).validate()


def test_a_record_from_before_the_options_re_runs_the_plain_step():
    old = DreamConfig().to_dict()
    for name in UNRECORDED:
        del old[name]
    assert {k: getattr(DreamConfig.from_dict(old), k) for k in UNRECORDED} == UNRECORDED
    new = DreamConfig(laplacian=2, decorrelate=False, fourier=0.5)
    assert DreamConfig.from_dict(new.to_dict()) == new
