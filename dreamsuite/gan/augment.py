"""DiffAugment: differentiable augmentation of everything the discriminator sees.

After "Differentiable Augmentation for Data-Efficient GAN Training" (Zhao et al., 2020): the
same random, differentiable transforms are applied to real *and* generated images before the
discriminator, in both the D and the G step, so that D cannot memorise a small training set
and G still gets gradients through the transform. Three transforms, in this order:

- ``color``: per image, brightness ``+U(-0.5, 0.5)``, saturation ``x U(0, 2)`` around the
  per-pixel channel mean, contrast ``x U(0.5, 1.5)`` around the image mean;
- ``translation``: per image, a shift of up to 1/8 of the side in each direction, zero padded;
- ``cutout``: per image, a zeroed square of half the side at a random centre.

Images are ``[N, C, H, W]`` in ``[-1, 1]`` (any float dtype, NCHW or channels_last). All the
randomness is drawn from an explicit :class:`torch.Generator`, so training is reproducible and
resumable: save ``generator.get_state()`` with the checkpoint.

This is a fused form: the three colour transforms are one affine map per pixel, and
translation and cutout are one gather and one mask, so the cost is a few passes over the batch.

>>> g = torch.Generator().manual_seed(0)
>>> y = diff_augment(x, "color,translation,cutout", generator=g)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dreamsuite.errors import InvalidArgument, shorten

__all__ = ["POLICIES", "DEFAULT_POLICY", "parse_policy", "diff_augment",
           "TRANSLATION_RATIO", "CUTOUT_RATIO"]

#: The transforms, in the order they are applied.
POLICIES = ("color", "translation", "cutout")
DEFAULT_POLICY = "color,translation,cutout"
#: Largest shift, as a fraction of the side.
TRANSLATION_RATIO = 0.125
#: Side of the cutout square, as a fraction of the image side.
CUTOUT_RATIO = 0.5


def parse_policy(policy: str | Sequence[str]) -> tuple[str, ...]:
    """The transforms of ``policy`` (``"color,translation"``, a list, or ``""`` for none);
    :class:`InvalidArgument` lists the valid names for an unknown one."""
    names = [p.strip() for p in policy.split(",")] if isinstance(policy, str) else list(policy)
    names = [n for n in names if n]
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise InvalidArgument(f"unknown augmentation {shorten(unknown[0])!r}; valid: "
                              f"{', '.join(POLICIES)} (comma-separated, or empty for none)")
    if len(set(names)) != len(names):
        raise InvalidArgument(f"augmentation policy {shorten(','.join(names))!r} names a "
                              "transform twice")
    return tuple(sorted(names, key=POLICIES.index))


def diff_augment(x: torch.Tensor, policy: str | Sequence[str] = DEFAULT_POLICY, *,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` (``[N, C, H, W]``) augmented per image by ``policy``; differentiable in ``x``.

    Random parameters are drawn from ``generator`` (the global CPU generator when None) in a
    fixed order, so the same generator state gives the same augmentation."""
    names = parse_policy(policy)
    if not names or x.shape[0] == 0:
        return x
    n, _, h, w = x.shape
    if "color" in names:
        x = _color(x, _draw(torch.rand, (n, 3), generator, x))
    shift = cut = None
    ch = cw = 0
    draws = []  # integers drawn on the generator's device, moved to x's device in one copy
    if "translation" in names:
        sh, sw = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
        draws += [_randint(-sh, sh + 1, n, generator), _randint(-sw, sw + 1, n, generator)]
    if "cutout" in names:
        ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
        draws += [_randint(0, h + 1 - ch % 2, n, generator) - ch // 2,
                  _randint(0, w + 1 - cw % 2, n, generator) - cw // 2]
    if draws:
        ints = torch.stack(draws, 1).to(x.device, non_blocking=True)
        if "translation" in names:
            shift, ints = ints[:, :2], ints[:, 2:]
        if "cutout" in names:
            cut = ints
        x = _shift_and_cut(x, shift, cut, (ch, cw))
    return x


def _draw(fn, size: tuple[int, ...], generator: torch.Generator | None,
          like: torch.Tensor) -> torch.Tensor:
    device = generator.device if generator is not None else torch.device("cpu")
    values = fn(size, generator=generator, device=device)
    return values.to(like.device, non_blocking=True)


def _randint(low: int, high: int, n: int, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(low, high, (n,), generator=generator, device=device)


def _color(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Brightness, saturation and contrast in one affine map.

    With ``m`` the per-pixel channel mean and ``M`` the image mean, brightness ``b``, then
    saturation ``s`` around the channel mean, then contrast ``c`` around the image mean give
    ``c s x + (c - c s) m + (1 - c) M + b`` (the mean of ``s (x - m)`` over the image is 0)."""
    r = r.to(x.dtype).view(-1, 3, 1, 1)
    b, s, c = r[:, :1] - 0.5, r[:, 1:2] * 2, r[:, 2:] + 0.5
    m = x.mean(1, keepdim=True)
    big_m = m.mean((2, 3), keepdim=True)
    cs = c * s
    offset = torch.addcmul((1 - c) * big_m + b, c - cs, m)
    return torch.addcmul(offset, cs, x)


def _shift_and_cut(x: torch.Tensor, shift: torch.Tensor | None, cut: torch.Tensor | None,
                   cut_size: tuple[int, int]) -> torch.Tensor:
    """Output pixel ``(i, j)`` of image ``k`` is ``x[k, :, i + dy, j + dx]`` (0 outside the
    image), times 0 inside the cutout square whose top-left corner is ``cut[k]``."""
    n, c, h, w = x.shape
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    keep = torch.ones(n, h, w, dtype=torch.bool, device=x.device)
    if shift is not None:
        src_r = rows + shift[:, 0].view(n, 1, 1)
        src_c = cols + shift[:, 1].view(n, 1, 1)
        keep = (src_r >= 0) & (src_r < h) & (src_c >= 0) & (src_c < w)
        index = (src_r.clamp(0, h - 1) * w + src_c.clamp(0, w - 1)).view(n, h * w)
        x = _gather_pixels(x, index)
    if cut is not None:
        top, left = cut[:, 0].view(n, 1, 1), cut[:, 1].view(n, 1, 1)
        inside = ((rows >= top) & (rows < top + cut_size[0]) &
                  (cols >= left) & (cols < left + cut_size[1]))
        keep = keep & ~inside
    return x * keep.unsqueeze(1).to(x.dtype)


def _gather_pixels(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[k, :, p]`` for every flat pixel ``p = index[k, q]``, keeping the memory format."""
    n, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        flat = x.permute(0, 2, 3, 1).reshape(n, h * w, c)
        out = flat.gather(1, index.unsqueeze(2).expand(n, h * w, c))
        return out.view(n, h, w, c).permute(0, 3, 1, 2)
    out = x.reshape(n, c, h * w).gather(2, index.unsqueeze(1).expand(n, c, h * w))
    return out.view(n, c, h, w)
