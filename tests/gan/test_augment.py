"""dreamsuite.gan.augment: DiffAugment's transforms, their gradients and their randomness."""

from __future__ import annotations

import pytest
import torch

from dreamsuite.errors import InvalidArgument
from dreamsuite.gan.augment import _color, diff_augment, parse_policy

POLICY = "color,translation,cutout"


def _batch(n: int = 6, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", [(4, 3, 32, 32), (3, 3, 33, 20), (1, 3, 8, 8)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_shapes_and_memory_format_are_kept(shape, channels_last):
    x = torch.rand(shape) * 2 - 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = diff_augment(x, POLICY, generator=_gen())
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    # the layout does not change the values
    y_nchw = diff_augment(x.contiguous(), POLICY, generator=_gen())
    torch.testing.assert_close(y, y_nchw)


def test_same_generator_state_same_augmentation_other_state_another():
    x = _batch()
    a = diff_augment(x, POLICY, generator=_gen(1))
    b = diff_augment(x, POLICY, generator=_gen(1))
    c = diff_augment(x, POLICY, generator=_gen(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    g = _gen(1)
    diff_augment(x, POLICY, generator=g)
    assert not torch.equal(diff_augment(x, POLICY, generator=g), a), "the generator advances"


def test_gradients_flow_through_every_transform():
    x = _batch(2, 8).double().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: diff_augment(t, POLICY, generator=_gen(3)), (x,))
    x = _batch(4, 16).requires_grad_()
    diff_augment(x, POLICY, generator=_gen()).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # without colour (whose means mix all pixels), cutout and padding hide some pixels from
    # the output: their gradient is exactly 0, and the others pass through with gradient 1
    x.grad = None
    diff_augment(x, "translation,cutout", generator=_gen()).sum().backward()
    assert (x.grad == 0).any() and (x.grad == 1).any()


def _reference_color(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Brightness, then saturation, then contrast, one after the other (the paper's order)."""
    r = r.view(-1, 3, 1, 1)
    x = x + (r[:, :1] - 0.5)
    mean = x.mean(1, keepdim=True)
    x = (x - mean) * (r[:, 1:2] * 2) + mean
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * (r[:, 2:] + 0.5) + mean


def test_fused_color_equals_the_three_transforms_in_sequence():
    x, r = _batch(5, 16).double(), torch.rand(5, 3, generator=_gen(4)).double()
    torch.testing.assert_close(_color(x, r), _reference_color(x, r))


def test_color_changes_every_image_and_keeps_pixel_positions():
    x = _batch()
    y = diff_augment(x, "color", generator=_gen())
    assert all(not torch.allclose(a, b) for a, b in zip(x, y, strict=True))
    # an affine map per image and per channel mean: a constant image stays constant
    flat = diff_augment(torch.full((2, 3, 8, 8), 0.3), "color", generator=_gen())
    assert torch.allclose(flat, flat[:, :, :1, :1].expand_as(flat))


def _shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x[:, i + dy, j + dx]``, 0 outside."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    src = x[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
    out[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)] = src
    return out


def test_translation_shifts_each_image_by_at_most_an_eighth_with_zero_padding():
    x = _batch(16, 32) + 2  # no zeros in the input: zeros in the output are padding
    y = diff_augment(x, "translation", generator=_gen())
    shifts = []
    for a, b in zip(x, y, strict=True):
        found = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                 if torch.equal(_shifted(a, dy, dx), b)]
        assert len(found) == 1, "each output is exactly one shift of its input, |shift| <= 4"
        shifts.append(found[0])
    assert len(set(shifts)) > 1 and any(s != (0, 0) for s in shifts)


def test_cutout_zeroes_one_square_of_half_the_side():
    x = torch.ones(32, 3, 32, 32)
    y = diff_augment(x, "cutout", generator=_gen())
    sides = []
    for image in y:
        zero = image[0] == 0
        assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert len(rows) and len(cols)
        # the zeros form one filled rectangle (a 16x16 square, clipped at the border)
        assert zero.sum() == len(rows) * len(cols)
        assert len(rows) <= 16 and len(cols) <= 16
        sides.append((len(rows), len(cols)))
    assert (16, 16) in sides
    assert len({tuple(map(int, image[0].eq(0).nonzero()[0])) for image in y}) > 1


def test_all_transforms_together_change_the_batch_and_empty_policy_does_not():
    x = _batch()
    assert not torch.equal(diff_augment(x, POLICY, generator=_gen()), x)
    assert diff_augment(x, "", generator=_gen()) is x


def test_policies_parse_in_canonical_order_and_unknown_names_are_refused():
    assert parse_policy("cutout, color") == ("color", "cutout")
    assert parse_policy(["translation"]) == ("translation",)
    with pytest.raises(InvalidArgument, match="valid: color, translation, cutout"):
        parse_policy("color,flip")
    with pytest.raises(InvalidArgument, match="twice"):
        parse_policy("color,color")
