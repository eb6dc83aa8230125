"""Octave planning, tiling and the regularisers of the dream loop.

Shapes: images are ``[1, 3, H, W]``; octave sizes are ``(H, W)`` pairs, smallest first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from dreamsuite.errors import InvalidArgument

__all__ = ["OctavePlan", "plan_octaves", "tile_slices", "total_variation", "smooth", "roll_copy"]


@dataclass(frozen=True)
class OctavePlan:
    """Sizes to dream at (smallest first), the working size, and what was adjusted and why."""

    sizes: list[tuple[int, int]]
    work_size: tuple[int, int]
    warnings: list[str]


def plan_octaves(
    size: tuple[int, int], octaves: int, scale: float, min_size: int, *,
    max_pixels: int | None = None,
) -> OctavePlan:
    """Octave sizes for an image of ``size = (H, W)``, never below ``min_size`` on either side.

    Octaves that would be too small are dropped; an image itself smaller than ``min_size`` is
    dreamed upscaled to ``min_size`` (the caller scales the result back). The pixel limit
    ``max_pixels`` holds after that upscaling too (a 20000x1 strip would become ~20 MP).
    """
    warnings = []
    h, w = size
    if min(h, w) < min_size:
        factor = min_size / min(h, w)
        h, w = max(min_size, math.ceil(h * factor)), max(min_size, math.ceil(w * factor))
        warnings.append(
            f"image {size[0]}x{size[1]} is below the backbone's minimum input {min_size} px; "
            f"dreaming at {h}x{w} and scaling back"
        )
    if max_pixels is not None and h * w > max_pixels:
        raise InvalidArgument(
            f"image {size[0]}x{size[1]} would be dreamed at {h}x{w} = {h * w} pixels (its "
            f"shorter side scaled up to the backbone's minimum {min_size} px), over the limit "
            f"of {max_pixels} pixels; crop it to a less extreme aspect ratio"
        )
    sizes = []
    for i in range(octaves - 1, -1, -1):
        f = scale**i
        oh, ow = round(h / f), round(w / f)
        if min(oh, ow) >= min_size:
            sizes.append((oh, ow))
    if len(sizes) < octaves:
        warnings.append(
            f"{octaves - len(sizes)} of {octaves} octaves would be smaller than the backbone's "
            f"minimum input {min_size} px and were dropped; {len(sizes)} remain"
        )
    return OctavePlan(sizes=sizes, work_size=(h, w), warnings=warnings)


def _bounds(length: int, tile: int) -> list[tuple[int, int]]:
    count = max(1, math.ceil(length / tile))
    edges = [round(i * length / count) for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def tile_slices(size: tuple[int, int], tile: int) -> list[tuple[slice, slice]]:
    """Non-overlapping tiles covering ``size``, each at most ``tile`` and as even as possible
    (so a tile is never a thin sliver below the backbone's minimum size)."""
    return [
        (slice(y0, y1), slice(x0, x1))
        for y0, y1 in _bounds(size[0], tile)
        for x0, x1 in _bounds(size[1], tile)
    ]


def roll_copy(x: torch.Tensor, shifts: tuple[int, int],
              memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """``torch.roll(x, shifts, (-2, -1))`` in ``memory_format``, in one pass over ``x``: the
    four wrapped blocks are copied straight to their places. ``torch.roll`` over two dimensions
    rolls one after the other (a copy each), and a layout change would be a third."""
    h, w = x.shape[-2:]
    sy, sx = shifts[0] % h, shifts[1] % w
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=memory_format)
    rows = ((slice(sy, h), slice(0, h - sy)), (slice(0, sy), slice(h - sy, h)))
    cols = ((slice(sx, w), slice(0, w - sx)), (slice(0, sx), slice(w - sx, w)))
    for to_rows, from_rows in rows:
        for to_cols, from_cols in cols:
            if to_rows.stop > to_rows.start and to_cols.stop > to_cols.start:
                out[..., to_rows, to_cols].copy_(x[..., from_rows, from_cols])
    return out


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels of ``[N, 3, H, W]``."""
    dy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean()
    dx = (image[..., :, 1:] - image[..., :, :-1]).abs().mean()
    return dy + dx


def smooth(tensor: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``[N, C, H, W]`` with standard deviation ``sigma`` pixels (0: unchanged)."""
    if sigma <= 0:
        return tensor
    kernel = 2 * math.ceil(2 * sigma) + 1
    if min(tensor.shape[-2:]) <= kernel // 2:
        return tensor
    return gaussian_blur(tensor, [kernel, kernel], [sigma, sigma])


def upsample(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``[N, C, H, W]`` to ``size``."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False)
