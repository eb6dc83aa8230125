"""dreamsuite.engine.octaves: the octave planner, tiles and regularisers."""

from __future__ import annotations

import pytest
import torch

from dreamsuite.engine.octaves import plan_octaves, roll_copy, smooth, tile_slices, total_variation


def test_octaves_grow_by_the_scale_up_to_the_full_size():
    plan = plan_octaves((300, 400), octaves=4, scale=1.4, min_size=32)
    assert plan.warnings == []
    assert plan.work_size == (300, 400)
    assert len(plan.sizes) == 4
    assert plan.sizes[-1] == (300, 400)
    for (h0, w0), (h1, w1) in zip(plan.sizes, plan.sizes[1:], strict=False):
        assert h1 / h0 == pytest.approx(1.4, rel=0.02)
        assert w1 / w0 == pytest.approx(1.4, rel=0.02)


@pytest.mark.parametrize("min_size", [32, 75, 100])
def test_planner_never_goes_below_the_minimum_size_and_warns(min_size):
    plan = plan_octaves((120, 160), octaves=6, scale=1.4, min_size=min_size)
    assert plan.sizes, "the full size itself is always dreamable"
    assert all(min(size) >= min_size for size in plan.sizes)
    assert plan.sizes[-1] == (120, 160)
    # 120 / 1.4**5 is about 22 px: some octaves must have been dropped, with a warning.
    assert len(plan.sizes) < 6
    assert any("dropped" in w and str(min_size) in w for w in plan.warnings)


def test_image_smaller_than_the_minimum_is_dreamed_upscaled():
    plan = plan_octaves((20, 30), octaves=3, scale=1.4, min_size=32)
    assert min(plan.work_size) >= 32
    assert plan.work_size[1] / plan.work_size[0] == pytest.approx(30 / 20, rel=0.05)
    assert plan.sizes and all(min(size) >= 32 for size in plan.sizes)
    assert any("20x30" in w and "32" in w for w in plan.warnings)


@pytest.mark.parametrize(("size", "tile"), [((160, 160), 64), ((100, 257), 64), ((50, 40), 64),
                                            ((513, 512), 512)])
def test_tiles_cover_the_image_exactly_once_and_stay_within_the_tile(size, tile):
    tiles = tile_slices(size, tile)
    cover = torch.zeros(size, dtype=torch.int32)
    for ys, xs in tiles:
        assert 0 < ys.stop - ys.start <= tile and 0 < xs.stop - xs.start <= tile
        cover[ys, xs] += 1
    assert torch.all(cover == 1)
    # Tiles are even: no sliver much thinner than half a tile when the image needs tiling.
    if max(size) > tile:
        sides = [s.stop - s.start for t in tiles for s in t]
        assert min(sides) >= min(min(size), tile // 2)


def test_total_variation_is_zero_on_flat_images_and_grows_with_edges():
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert float(total_variation(flat)) == 0.0
    stripes = flat.clone()
    stripes[..., ::2] = 0.8  # vertical stripes: every horizontal neighbour differs by 0.5
    dx = (stripes[..., 1:] - stripes[..., :-1]).abs().mean()
    assert float(total_variation(stripes)) == pytest.approx(float(dx))
    assert float(total_variation(stripes)) > float(total_variation(smooth(stripes, 1.0)))


def test_smooth_blurs_and_keeps_the_mean():
    gen = torch.Generator().manual_seed(0)
    noise = torch.rand(1, 3, 32, 32, generator=gen)
    assert torch.equal(smooth(noise, 0.0), noise)
    blurred = smooth(noise, 1.5)
    assert blurred.shape == noise.shape
    assert float(blurred.std()) < 0.6 * float(noise.std())
    assert float(blurred.mean()) == pytest.approx(float(noise.mean()), abs=0.02)


@pytest.mark.parametrize("shifts", [(0, 0), (5, -3), (-7, 11), (13, 0), (0, -1), (40, -45)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_roll_copy_is_torch_roll_in_the_layout_asked_for(shifts, layout):
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 13, 17, generator=gen)
    for source in (image, image.contiguous(memory_format=torch.channels_last)):
        rolled = roll_copy(source, shifts, layout)
        assert torch.equal(rolled, torch.roll(image, shifts, (2, 3)))
        assert rolled.is_contiguous(memory_format=layout)
        assert rolled.data_ptr() != source.data_ptr()
