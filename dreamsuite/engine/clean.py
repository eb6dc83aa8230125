"""Cleaner dreams: the ascent direction conditioned over frequency bands and colour, and the
measure that says how much high-frequency speckle a dream added.

A raw pixel-space gradient is dominated by the highest spatial frequencies and by colour
(rainbow speckle). Three optional transforms of the gradient, applied in the dream step before
its usual mean-absolute normalisation, change that (all ``[N, 3, H, W] -> [N, 3, H, W]``):

- :func:`laplacian_normalise`: split the gradient into a Laplacian pyramid, divide each band by
  its RMS, merge (the TensorFlow DeepDream tutorial's ``lap_normalize``): every frequency band
  contributes equally to the step.
- decorrelated colour (:data:`COLOR_CORRELATION`, Lucid's ``color_correlation_svd_sqrt``
  normalised by its largest column norm): the step is taken in Lucid's decorrelated colour
  space ``z`` with ``rgb = C z``, so the pixel step is ``C C^T grad``, mostly luminance.
- :func:`fourier_precondition`: the gradient's spectrum scaled by ``1 / max(f, 1/max(H, W)) **
  decay`` (Lucid's ``fft_image`` scaling). A Fourier-space image does not survive the octave
  loop (the image is resized, detail is re-injected and pixels are clamped between steps), so
  this is the step a Fourier parameterisation takes when its coefficients move by the same
  normalised amount: preconditioning, not a re-parameterisation.

:func:`high_frequency_share` measures the result: the share of a change's spectral energy above
a quarter of the Nyquist frequency.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

__all__ = [
    "COLOR_CORRELATION",
    "HIGH_FREQUENCY_CUTOFF",
    "precondition",
    "laplacian_normalise",
    "fourier_precondition",
    "to_decorrelated",
    "from_decorrelated",
    "high_frequency_share",
    "up_adjoint",
]

# Lucid's color_correlation_svd_sqrt (square root of ImageNet's colour covariance, by SVD),
# divided by its largest column norm as Lucid does: columns are luminance, then two chroma axes.
_SVD_SQRT = torch.tensor([[0.26, 0.09, 0.02],
                          [0.27, 0.00, -0.05],
                          [0.27, -0.09, 0.03]])
COLOR_CORRELATION = _SVD_SQRT / _SVD_SQRT.norm(dim=0).max()

#: :func:`high_frequency_share` counts energy above this radial frequency (cycles per pixel):
#: a quarter of the Nyquist frequency, 0.5.
HIGH_FREQUENCY_CUTOFF = 0.125


def precondition(grad: torch.Tensor, *, laplacian: int = 0, decorrelate: bool = False,
                 fourier: float = 0.0) -> torch.Tensor:
    """The conditioned ascent direction for a pixel gradient ``[N, 3, H, W]``: into the
    decorrelated colour space (if ``decorrelate``), Laplacian-normalised over ``laplacian``
    levels, Fourier-preconditioned with decay ``fourier``, and back to RGB. With every option
    off it returns ``grad`` itself."""
    # One memory layout whatever the gradient came in (a batched pass hands out slices of a
    # channels_last batch): convolutions pick their kernels by layout, and a dream must not
    # depend on whether it was batched.
    grad = grad.contiguous()
    if decorrelate:
        grad = to_decorrelated(grad)
    if laplacian:
        grad = laplacian_normalise(grad, laplacian)
    if fourier:
        grad = fourier_precondition(grad, fourier)
    if decorrelate:
        grad = from_decorrelated(grad)
    return grad


def _mix_colours(matrix: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``matrix @ pixel`` at every pixel of ``[N, 3, H, W]``: one matrix product over the
    flattened pixels (an einsum permutes and copies the image first)."""
    flat = images.contiguous().flatten(2)
    return torch.matmul(matrix.to(images), flat).view(images.shape)


def to_decorrelated(grad: torch.Tensor) -> torch.Tensor:
    """The gradient with respect to decorrelated colours ``z`` of an RGB gradient (``C^T g``)."""
    return _mix_colours(COLOR_CORRELATION.T, grad)


def from_decorrelated(step: torch.Tensor) -> torch.Tensor:
    """The RGB change of a change ``step`` of decorrelated colours (``C z``)."""
    return _mix_colours(COLOR_CORRELATION, step)


def _blur_down(x: torch.Tensor) -> torch.Tensor:
    """Binomial 5x5 blur, then every second pixel (``[N, C, H, W] -> [N, C, ceil(H/2), ...]``),
    reflect-padded by 2 (replicate below 3 px): the 5x5 kernel ``k k^T / 256``, ``k = [1, 4, 6,
    4, 1]``, applied as its two 1-D passes on strided views, each computing only the rows (then
    columns) it keeps. On the CPU about 2.5x faster than the depthwise convolution, which also
    reorders a 3-channel image into 16-channel blocks (5x its size in memory)."""
    mode = "reflect" if min(x.shape[-2:]) > 2 else "replicate"
    padded = F.pad(x, (2, 2, 2, 2), mode=mode)
    h, w = (x.shape[-2] + 1) // 2, (x.shape[-1] + 1) // 2
    rows = _binomial_taps(padded, -2, h)
    del padded
    return _binomial_taps(rows, -1, w)


def _binomial_taps(x: torch.Tensor, dim: int, n: int) -> torch.Tensor:
    """``(x[2i] + 4 x[2i+1] + 6 x[2i+2] + 4 x[2i+3] + x[2i+4]) / 16`` along ``dim`` for
    ``i < n`` (no partial sum above twice the input: float16 keeps its range)."""
    def tap(k: int) -> torch.Tensor:
        every_second = (..., slice(None, None, 2)) + (slice(None),) * (-dim - 1)
        return x.narrow(dim, k, 2 * n - 1)[every_second]

    outer = torch.add(tap(0), tap(4)).mul_(1 / 16)
    return outer.add_(tap(1) + tap(3), alpha=1 / 4).add_(tap(2), alpha=3 / 8)


@functools.lru_cache(maxsize=256)
def _linear_taps(size_in: int, size_out: int, device: torch.device,
                 dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each output sample of a half-pixel-centred linear resize reads (``i0``, ``i1``)
    and the weight of ``i1`` (``dtype``, on ``device``): PyTorch's own bilinear rule
    (``src = (j + 1/2) in/out - 1/2``, clamped at 0; the last input repeated at the end)."""
    # In float32 like PyTorch's kernel for float32 and narrower, float64 for float64, so the
    # taps round as its do.
    exact = torch.float64 if dtype == torch.float64 else torch.float32
    scale = torch.tensor(size_in, dtype=exact) / size_out
    src = (scale * (torch.arange(size_out, dtype=exact) + 0.5) - 0.5).clamp_min(0)
    i0 = src.floor().long().clamp_max(size_in - 1)
    i1 = (i0 + 1).clamp_max(size_in - 1)
    return i0.to(device), i1.to(device), (src - i0).to(device, dtype)


def _up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``x`` (``[N, C, h, w]``) resized bilinearly to ``size`` (half-pixel centres)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _resize_adjoint_along(grad: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """The adjoint of the bilinear resize along ``dim`` from ``size`` samples to
    ``grad.shape[dim]``: each output's gradient added into the two inputs it read (the taps
    of :func:`_linear_taps`), by their weights."""
    i0, i1, weight = _linear_taps(size, grad.shape[dim], grad.device, grad.dtype)
    weight = weight.view([-1] + [1] * (-dim - 1))
    shape = list(grad.shape)
    shape[dim] = size
    upper = grad * weight
    out = grad.new_zeros(shape).index_add_(dim, i0, grad - upper)
    return out.index_add_(dim, i1, upper)


def up_adjoint(grad: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The gradient of ``F.interpolate(x, grad.shape[-2:], mode="bilinear")`` with respect to
    ``x`` (``[N, C, *size]``) from the output's gradient ``grad``: the same numbers as
    autograd's kernel to float rounding, one axis after the other. On the 2-core CPU it takes
    about 0.65-0.85x the kernel's time for 64-366 px inputs, either layout (re-measured: an
    earlier "3x faster" was wrong; one run on a busy machine had it slower at 256 -> 512)."""
    grad = grad.contiguous()
    return _resize_adjoint_along(_resize_adjoint_along(grad, -2, size[0]), -1, size[1])


def laplacian_normalise(grad: torch.Tensor, levels: int, eps: float = 1e-10) -> torch.Tensor:
    """``grad`` (``[N, C, H, W]``) split into ``levels`` band-pass images and a low-pass rest,
    each divided by its RMS, and merged again. Levels stop where the image would fall below
    4 px. Splitting and merging use the same upsampling, so without the normalisation the merge
    gives ``grad`` back exactly. Each band and each merged level is computed in the buffer of
    the upsampled image it starts from (no second full-size temporary per level), and each band
    is dropped once merged."""
    bands = []
    low = grad
    for _ in range(levels):
        if min(low.shape[-2:]) < 8:
            break
        down = _blur_down(low)
        up = _up(down, tuple(low.shape[-2:]))
        if torch.is_grad_enabled() and low.requires_grad:  # out= has no autograd
            bands.append(low - up)
        else:  # low - up(down) in one pass, in up's buffer
            bands.append(torch.sub(low, up, out=up))
        low = down
    out = low / _rms(low).clamp_min(eps)
    while bands:
        band = bands.pop()
        out = _up(out, tuple(band.shape[-2:])).addcdiv_(band, _rms(band).clamp_min(eps))
        del band
    return out


def _rms(x: torch.Tensor) -> torch.Tensor:
    """The root mean square of all of ``x`` (a 0-d tensor; no squared copy of ``x``)."""
    # Accumulated in float32 at least: a half-precision norm overflows long before the RMS.
    wide = torch.float64 if x.dtype == torch.float64 else torch.float32
    return torch.linalg.vector_norm(x, dtype=wide) / math.sqrt(x.numel())


def _radial_frequency(h: int, w: int, device: torch.device, *, half: bool) -> torch.Tensor:
    """``|f|`` in cycles per pixel on the grid of ``fft2`` (``rfft2`` when ``half``), ``[H, W']``."""
    fy = torch.fft.fftfreq(h, device=device)[:, None]
    fx = (torch.fft.rfftfreq(w, device=device) if half else torch.fft.fftfreq(w, device=device))
    return (fy.pow(2) + fx[None, :].pow(2)).sqrt()


def fourier_precondition(grad: torch.Tensor, decay: float) -> torch.Tensor:
    """``grad`` (``[N, C, H, W]``) with its spectrum scaled by ``1 / max(|f|, 1/max(H, W)) **
    decay``: Lucid's Fourier-image scaling (decay 1), applied once to the step direction. The
    FFT treats the gradient as periodic, as the dream's roll (jitter) treats the image."""
    h, w = grad.shape[-2:]
    freq = _radial_frequency(h, w, grad.device, half=True)
    scale = freq.clamp_min(1.0 / max(h, w)).pow(-decay)
    spectrum = torch.fft.rfft2(grad.float())
    return torch.fft.irfft2(spectrum * scale, s=(h, w)).to(grad.dtype)


def high_frequency_share(change: torch.Tensor, cutoff: float = HIGH_FREQUENCY_CUTOFF) -> float:
    """The share of ``change``'s spectral energy (2D FFT power of each channel of ``[C, H, W]``
    or ``[N, C, H, W]``, summed over channels) above the radial frequency ``cutoff`` cycles per
    pixel (default a quarter of Nyquist). A Hann window first, so the jump at the borders of a
    non-periodic change does not count as high-frequency energy. White noise scores about 0.95
    (the share of the spectrum's area above the cutoff), a smooth change about 0; an all-zero
    change 0."""
    x = change.detach().float()
    x = x.reshape(-1, *x.shape[-2:])
    h, w = x.shape[-2:]
    window = (torch.hann_window(h, periodic=False, dtype=x.dtype)[:, None]
              * torch.hann_window(w, periodic=False, dtype=x.dtype)[None, :]).to(x.device)
    x = (x - x.mean(dim=(-2, -1), keepdim=True)) * window
    power = torch.fft.fft2(x).abs().pow(2).sum(dim=0)
    total = float(power.sum())
    if total <= 0 or not math.isfinite(total):
        return 0.0
    high = _radial_frequency(h, w, x.device, half=False) > cutoff
    return float(power[high].sum()) / total
