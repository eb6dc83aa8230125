"""dreamsuite.engine.dream: dreams raise their objective, seeds, tiling without seams, bad input.

Dreams run the embedded backbone (real weights) on 64-160 px images with few steps.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dreamsuite.backbones import loaded
from dreamsuite.engine import DreamConfig, build_objective, check_config, dream
from dreamsuite.engine.guide import map_means
from dreamsuite.engine.objectives import LayerTerm, Maplist, from_maplist
from dreamsuite.engine.octaves import tile_slices
from dreamsuite.errors import Cancelled, InvalidArgument, UnknownName
from dreamsuite.images import sample_image

#: Small and quick: two octaves of five steps, jitter sized for a ~100 px image.
QUICK = DreamConfig(octaves=2, steps=5, jitter=4, seed=0)


def _config(layer: str | LayerTerm, **changes) -> DreamConfig:
    term = layer if isinstance(layer, LayerTerm) else LayerTerm(layer)
    return dataclasses.replace(QUICK, maplist=Maplist((term,)), **changes)


def _objective_value(backbone, image: torch.Tensor, maplist: Maplist) -> float:
    acts = backbone.activations(image, maplist.layers)
    return float(from_maplist(maplist)(acts))


# --- a dream does what its objective asks ------------------------------------------------------


@pytest.mark.parametrize("layer", ["block_3", "block_10"])
def test_dream_raises_its_objective(lite0, coffee, layer):
    config = _config(layer)
    result = dream(coffee, config)
    out = result.image
    assert out.shape == coffee.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    before = _objective_value(lite0, coffee, config.maplist)
    after = _objective_value(lite0, out, config.maplist)
    assert after > 1.2 * before, (before, after)
    assert len(result.losses) == 2


def test_minimising_maplist_lowers_the_chosen_maps(lite0, chelsea):
    layer, channels = "block_10", [3, 17, 40]
    config = _config(LayerTerm(layer, 1.0, {c: -1.0 for c in channels}))
    out = dream(chelsea, config).image
    before = map_means(lite0, chelsea, [layer])[layer][channels]
    after = map_means(lite0, out, [layer])[layer][channels]
    assert torch.all(after < before), (before, after)
    assert float((before - after).mean()) > 1.0


def test_same_seed_gives_the_same_image_and_another_seed_another(astronaut):
    config = _config("block_6", octaves=1, steps=4, jitter=16)
    first = dream(astronaut, config, device="cpu").image  # the promise holds on the CPU
    again = dream(astronaut, config, device="cpu").image
    other = dream(astronaut, dataclasses.replace(config, seed=1), device="cpu").image
    assert torch.equal(first, again)
    assert (first - other).abs().mean() > 1e-3


def test_progress_sees_every_step_and_each_octave_image(coffee):
    seen = []
    config = _config("block_6", octaves=2, steps=3)
    result = dream(coffee, config, progress=seen.append)
    assert [(p.octave, p.step) for p in seen] == [(o, s) for o in range(2) for s in range(3)]
    finals = [p for p in seen if p.image is not None]
    assert [p.step for p in finals] == [2, 2]
    assert tuple(finals[-1].image.shape[-2:]) == tuple(finals[-1].size)
    torch.testing.assert_close(finals[-1].image, result.image)
    assert [p.loss for p in finals] == result.losses


def test_cancellation_stops_within_a_step(coffee):
    calls = []

    def should_cancel() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled, match="step"):
        dream(coffee, _config("block_3"), should_cancel=should_cancel)
    assert len(calls) == 4


# --- sizes: tiny inputs and tiling -------------------------------------------------------------


def _record_input_sides(monkeypatch) -> list[tuple[int, int]]:
    """Every (h, w) the backbone is fed from now on, appended to the returned list."""
    sides: list[tuple[int, int]] = []
    forward = loaded.FeatureExtractor.forward

    def recording_forward(self, x):
        sides.append(tuple(x.shape[-2:]))
        return forward(self, x)

    monkeypatch.setattr(loaded.FeatureExtractor, "forward", recording_forward)
    return sides


def test_image_below_the_minimum_size_dreams_to_its_own_shape(lite0, coffee, monkeypatch):
    tiny = coffee[:, :20, :28].clone()  # below EfficientNet-Lite0's 32 px
    sides = _record_input_sides(monkeypatch)
    result = dream(tiny, _config("block_3", octaves=3))
    assert result.image.shape == (3, 20, 28)
    assert sides and min(min(s) for s in sides) >= lite0.spec.min_size
    assert any("minimum" in w for w in result.warnings)
    assert (result.image - tiny).abs().mean() > 1e-3


def test_too_many_octaves_are_dropped_with_a_warning_not_fed_below_the_minimum(
    lite0, coffee, monkeypatch
):
    sides = _record_input_sides(monkeypatch)
    result = dream(coffee, _config("block_3", octaves=8, steps=1))  # 96 / 1.4**7 is 9 px
    assert result.image.shape == coffee.shape
    assert min(min(s) for s in sides) >= lite0.spec.min_size
    assert 1 < len(result.losses) < 8
    assert any("dropped" in w for w in result.warnings)


def test_tile_smaller_than_the_backbone_allows_is_adjusted_not_a_crash():
    image = sample_image("rocket", size=100)
    config = dataclasses.replace(
        _config("mixed_7c", octaves=1, steps=1), backbone="inception_v3", weights="random",
        tile=64,  # tiles of 50 px: below Inception V3's 75 px minimum
    )
    result = dream(image, config)
    assert result.image.shape == image.shape
    assert any("tile" in w for w in result.warnings)


def _border_mask(length: int, starts: list[int]) -> torch.Tensor:
    """True for the two pixel rows (or columns) that meet at each tile border."""
    mask = torch.zeros(length, dtype=torch.bool)
    for start in starts:
        mask[start - 1:start + 1] = True
    return mask


def test_tiled_dream_has_no_seams_and_keeps_the_shape(monkeypatch):
    image = sample_image("astronaut", size=160)
    tile = 64
    sides = _record_input_sides(monkeypatch)
    # No jitter: only the whole-image roll that tiling does moves the tile grid. The plain pixel
    # step: the row/column means below need a change of even strength over the image, which its
    # fine-grained change gives; the cleaned default step's coarser change varies 0.8-1.2x
    # between rows with the content alone (tests/engine/test_clean.py checks its seams locally).
    out = dream(image, _config("block_3", octaves=1, steps=6, jitter=0, tile=tile,
                               laplacian=0, decorrelate=False)).image
    assert out.shape == image.shape
    assert max(max(s) for s in sides) <= tile, "memory must be bounded by the tile, not the image"

    tiles = tile_slices(tuple(image.shape[-2:]), tile)
    rows = _border_mask(160, sorted({ys.start for ys, _ in tiles} - {0}))
    cols = _border_mask(160, sorted({xs.start for _, xs in tiles} - {0}))
    assert rows.any() and cols.any()

    # A seam where tiles meet is either a jump across the border ...
    grad_rows = (out[:, 1:] - out[:, :-1]).abs().mean(dim=(0, 2))  # [i]: row i+1 vs row i
    grad_cols = (out[..., 1:] - out[..., :-1]).abs().mean(dim=(0, 1))
    across = torch.cat([grad_rows[rows[1:] & rows[:-1]], grad_cols[cols[1:] & cols[:-1]]])
    elsewhere = torch.cat([grad_rows[~(rows[1:] & rows[:-1])],
                           grad_cols[~(cols[1:] & cols[:-1])]])
    assert float(across.mean()) <= 1.5 * float(elsewhere.mean())

    # ... or a grid of lines the dream barely touched (tile edges see less context, so a fixed
    # grid gets smaller gradients there): the change must be as strong at borders as elsewhere.
    change = (out - image).abs()
    change_rows, change_cols = change.mean(dim=(0, 2)), change.mean(dim=(0, 1))
    at_borders = torch.cat([change_rows[rows], change_cols[cols]]).mean()
    off_borders = torch.cat([change_rows[~rows], change_cols[~cols]]).mean()
    ratio = float(at_borders / off_borders)
    assert 0.9 < ratio < 1 / 0.9, ratio


# --- bad input: clear errors naming the problem -----------------------------------------------


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        ({"octaves": 0}, "octaves"),
        ({"step_size": float("nan")}, "step_size"),
        ({"step_size": float("inf")}, "step_size"),
        ({"step_size": 0.0}, "step_size"),
        ({"octave_scale": 1.0}, "octave_scale"),
        ({"steps": 0}, "steps"),
        ({"tile": 8}, "tile"),
        ({"guide_mode": "telepathy"}, "guide_mode"),
        ({"weights": "imagenet"}, "weights"),
        ({"tv": float("nan")}, "tv"),
    ],
)
def test_bad_config_is_refused_naming_the_field(coffee, changes, names):
    config = dataclasses.replace(QUICK, **changes)
    with pytest.raises(InvalidArgument, match=names):
        config.validate()
    with pytest.raises(InvalidArgument, match=names):
        dream(coffee, config)


@pytest.mark.parametrize(
    ("changes", "error", "names"),
    [
        ({"backbone": "resnet9000"}, UnknownName, "resnet9000"),
        ({"maplist": Maplist((LayerTerm("block_99"),))}, UnknownName, "block_99"),
        ({"maplist": Maplist((LayerTerm("block_3", 1.0, {40: 1.0}),))}, UnknownName, "40"),
        ({"maplist": Maplist((LayerTerm("block_3", 1.0, {}),))}, InvalidArgument, "no channels"),
        ({"maplist": Maplist(())}, InvalidArgument, "empty"),
    ],
)
def test_unknown_names_and_empty_maplists_are_refused(coffee, changes, error, names):
    with pytest.raises(error, match=names):
        dream(coffee, dataclasses.replace(QUICK, **changes))


def test_unknown_layer_error_lists_the_valid_layers(lite0, coffee):
    with pytest.raises(UnknownName) as info:
        dream(coffee, _config("block_99"))
    for layer in lite0.spec.layers:
        assert layer.name in str(info.value)


def test_image_must_be_three_channels(coffee):
    with pytest.raises(InvalidArgument, match=r"\[3, H, W\]"):
        dream(coffee[:1], QUICK)


# --- provenance ---------------------------------------------------------------------------------


def test_provenance_records_the_config_and_reproduces_the_dream(lite0, coffee):
    config = _config(LayerTerm("block_6", 0.5, {2: 1.0, 7: -0.5}), seed=7, tv=0.1)
    result = dream(coffee, config, device="cpu")
    provenance = result.provenance
    recorded = DreamConfig.from_dict(provenance["config"])
    assert recorded == config
    assert provenance["size"] == list(coffee.shape[-2:])
    assert provenance["dreamsuite"] and len(provenance["input_sha256"]) == 64
    assert torch.equal(dream(coffee, recorded, device="cpu").image, result.image)


def test_default_maplist_is_recorded_as_the_backbone_default_layer(lite0, coffee):
    _, maplist = build_objective(lite0, check_config(QUICK))
    assert maplist == Maplist((LayerTerm(lite0.spec.default_layer),))


def test_precomputed_guide_weights_of_the_wrong_length_are_refused():
    from dreamsuite.engine import DreamConfig, dream
    from dreamsuite.engine.objectives import LayerTerm, Maplist
    from dreamsuite.errors import InvalidArgument
    from dreamsuite.images import sample_image

    config = DreamConfig(maplist=Maplist((LayerTerm("block_8"),)), octaves=1, steps=1)
    with pytest.raises(InvalidArgument, match="block_8.*has 112 maps, got 5 weights"):
        dream(sample_image("coffee", size=64), config,
              guide_weights_override={"block_8": torch.ones(5)})


def test_jitter_never_rolls_more_than_a_quarter_of_a_small_octave():
    import random

    from dreamsuite.engine import DreamConfig
    from dreamsuite.engine.dream import _Stepper, drive

    config = DreamConfig(jitter=32, tile=512)
    stepper = _Stepper(config)
    shifts = []

    def answer(request):
        shifts.append(request.pixels.contiguous())
        return torch.zeros_like(request.pixels), 0.0

    image = torch.rand(1, 3, 40, 48)
    rng = random.Random(0)
    for step in range(50):
        drive(stepper.step(image, rng, step, run=None), answer)
    largest = 0
    for rolled in shifts:
        for dy in range(-20, 21):
            for dx in range(-24, 25):
                if torch.equal(torch.roll(image, (dy, dx), (2, 3)), rolled):
                    largest = max(largest, abs(dy), abs(dx))
                    break
    assert largest == 40 // 4
