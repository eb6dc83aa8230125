"""dreamsuite.engine.shaping: guide masks grow each guide's patterns in its own region, octave
weights switch guides and layers on and off by scale, masks follow the roll and the tiles, and
batched shaped dreams evaluate each request at its own place.

Dreams run the embedded backbone (real weights) on ~100 px images with few steps.
"""

from __future__ import annotations

import dataclasses
import random
from types import SimpleNamespace

import pytest
import torch

from dreamsuite.engine import DreamConfig, dream
from dreamsuite.engine.batch import batch_gradients, dream_together
from dreamsuite.engine.config import check_config
from dreamsuite.engine.dream import GradientRequest, _Stepper, drive, gradient, prepare_dream
from dreamsuite.engine.guide import guide_weights
from dreamsuite.engine.objectives import LayerTerm, Maplist, guided
from dreamsuite.engine.shaping import Place, regional_channels, shaped_objective
from dreamsuite.errors import InvalidArgument
from dreamsuite.images import sample_image

LAYER = "block_8"
SHAPED = DreamConfig(maplist=Maplist((LayerTerm(LAYER),)), octaves=2, steps=6, jitter=4, seed=0)


def _halves(width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    left = torch.zeros(height, width)
    left[:, : width // 2] = 1
    return left, 1 - left


def _half_means(backbone, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-map mean activation of the left and the right half of the layer's grid."""
    act = backbone.activations(image, [LAYER])[LAYER][0]
    half = act.shape[-1] // 2
    return act[..., :half].mean(dim=(1, 2)), act[..., -half:].mean(dim=(1, 2))


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


# --- per region ---------------------------------------------------------------------------------


def test_each_half_grows_its_own_guides_patterns(lite0, rocket, chelsea, coffee):
    """Guide A (the cat) masked to the left half, B (the espresso) to the right: the left
    half's channel profile moves towards A's guide weights more than towards B's, and the
    right half's towards B's; swapping the masks swaps the outcome."""
    h, w = rocket.shape[-2:]
    left, right = _halves(w, h)
    weights_a, weights_b = (guide_weights(lite0, [g], [LAYER])[LAYER] for g in (chelsea, coffee))
    before_left, before_right = _half_means(lite0, rocket)

    def rises(masks):
        out = dream(rocket, SHAPED, guides=[chelsea, coffee], guide_masks=masks,
                    device="cpu").image
        after_left, after_right = _half_means(lite0, out)
        return {(half, name): _corr(after, weights) - _corr(before, weights)
                for half, before, after in (("left", before_left, after_left),
                                            ("right", before_right, after_right))
                for name, weights in (("A", weights_a), ("B", weights_b))}

    rise = rises([left, right])
    assert rise["left", "A"] > rise["left", "B"] + 0.1, rise
    assert rise["right", "B"] > rise["right", "A"] + 0.1, rise
    swapped = rises([right, left])
    assert swapped["left", "B"] > swapped["left", "A"] + 0.1, swapped
    assert swapped["right", "A"] > swapped["right", "B"] + 0.1, swapped


def test_regional_objective_is_the_guided_objective_over_the_masked_positions():
    acts = {LAYER: torch.rand(1, 5, 4, 6, generator=torch.Generator().manual_seed(0))}
    weights = torch.rand(2, 5, generator=torch.Generator().manual_seed(1))
    scales = torch.tensor([1.0, 0.5])
    everywhere = regional_channels(LAYER, weights, scales, None)(acts)
    plain = guided({LAYER: weights[0] + 0.5 * weights[1]}, {LAYER: 1.0})(acts)
    torch.testing.assert_close(everywhere, plain)
    # Pixel masks of 8x12 over a 4x6 grid: the left half for guide 0, nothing for guide 1.
    masks = torch.zeros(1, 2, 8, 12)
    masks[0, 0, :, :6] = 1
    value = regional_channels(LAYER, weights, scales, masks)(acts)
    left = acts[LAYER][..., :3]
    expected = (left.mean(dim=(0, 2, 3)) * weights[0]).sum() / 2  # half of the positions
    torch.testing.assert_close(value, expected)


def test_masks_are_rolled_and_tiled_with_the_pixels():
    """The mask each request carries covers exactly the request's pixels: channel 0 of the
    image *is* the mask here, through jitter, the whole-image roll of tiling and the tiles."""
    for tile, jitter in ((512, 16), (32, 0)):
        config = DreamConfig(jitter=jitter, tile=tile)
        stepper = _Stepper(config)
        mask = torch.rand(1, 1, 72, 88, generator=torch.Generator().manual_seed(tile))
        image = torch.cat([mask, torch.zeros(1, 2, 72, 88)], dim=1)
        run = SimpleNamespace(place=None)
        seen = []

        def answer(request, run=run, seen=seen):
            assert run.place.octave == 3
            seen.append(request.pixels.shape)
            torch.testing.assert_close(run.place.masks[:, 0], request.pixels[:, 0],
                                       rtol=0, atol=0)
            return torch.zeros_like(request.pixels), 0.0

        rng = random.Random(0)
        for step in range(4):
            drive(stepper.step(image, rng, step, run, 3, mask), answer)
        assert len(seen) == (4 if tile == 512 else 4 * 9)


# --- per octave ---------------------------------------------------------------------------------


def test_a_layer_weighted_zero_at_an_octave_leaves_that_octave_alone(coffee):
    config = dataclasses.replace(SHAPED, layer_octave_weights={LAYER: (0.0, 1.0)})
    seen = []
    out = dream(coffee, config, progress=seen.append, device="cpu").image
    first = next(p for p in seen if p.image is not None)
    base = torch.nn.functional.interpolate(coffee[None], size=first.size, mode="bilinear",
                                           align_corners=False)[0].clamp(0, 1)
    torch.testing.assert_close(first.image, base)  # nothing to ascend: untouched
    assert float((out - coffee).abs().mean()) > 0.02  # the second octave dreams


def test_guide_octave_weights_switch_guides_by_scale(lite0, chelsea, coffee):
    config = dataclasses.replace(SHAPED, guide_octave_weights=((1.0, 0.0), (0.0, 1.0)))
    shaped = shaped_objective(lite0, check_config(config), [chelsea, coffee], [])
    acts = {LAYER: torch.rand(1, lite0.spec.layer(LAYER).channels, 4, 4)}
    for octave, guide in ((0, chelsea), (1, coffee)):
        alone = guided(guide_weights(lite0, [guide], [LAYER]), {LAYER: 1.0})
        torch.testing.assert_close(shaped(Place(octave))(acts), alone(acts))


def test_dropped_octaves_keep_their_weights_in_place(lite0):
    """Octave weights index the schedule: when the smallest octave is dropped (too small for
    the backbone), the first octave dreamed takes the second weight."""
    config = dataclasses.replace(SHAPED, octaves=3, octave_scale=1.8,
                                 layer_octave_weights={LAYER: (5.0, 0.0, 1.0)})
    run = prepare_dream(sample_image("coffee", size=64), config, device="cpu")
    assert len(run.sizes) == 2 and run.first_octave == 1
    seen = []
    run.run(progress=seen.append)
    assert [p.loss for p in seen if p.octave == 0] == [0.0] * config.steps


# --- batching -----------------------------------------------------------------------------------


def test_batched_shaped_dreams_evaluate_each_request_at_its_own_place(rocket, chelsea, coffee):
    """Two regional dreams (masks swapped) and a plain one stepped as one batch: every pass's
    batched gradients equal each request's gradient alone, at its own run's place."""
    h, w = rocket.shape[-2:]
    left, right = _halves(w, h)
    config = dataclasses.replace(SHAPED, steps=3)
    runs = [prepare_dream(rocket, config, guides=[chelsea, coffee], guide_masks=masks,
                          device="cpu") for masks in ([left, right], [right, left])]
    runs.append(prepare_dream(rocket, config, device="cpu"))
    rounds = []

    def checked(requests):
        answers = batch_gradients(requests)
        for request, (grad, value) in zip(requests, answers, strict=True):
            alone, alone_value = gradient(GradientRequest(request.pixels.clone(), request.run))
            assert value == pytest.approx(alone_value, rel=1e-4)
            assert torch.allclose(grad, alone, rtol=1e-3, atol=1e-4 * float(alone.abs().max()))
        rounds.append(len(requests))
        return answers

    results = dream_together(runs, answer=checked)
    assert set(rounds) == {3}
    assert (results[0].image - results[1].image).abs().max() > 0.1


# --- checks and provenance ----------------------------------------------------------------------


@pytest.mark.parametrize("changes, guides, masks, message", [
    ({}, 2, 1, "guide_masks: 1 masks for 2 guides"),
    ({"guide_octave_weights": ((1.0, 1.0),)}, 2, 0, "guide_octave_weights: 1 entries for 2"),
    ({"guide_octave_weights": ((1.0, 1.0, 1.0),)}, 1, 0, r"one weight per octave \(2\), not 3"),
    ({"guide_mode": "match"}, 1, 1, "guide_masks need guide_mode 'weights'"),
    ({"layer_octave_weights": {"block_3": (1.0, 1.0)}}, 0, 0, "not a layer of the maplist"),
    ({"layer_octave_weights": {LAYER: (1.0, float("inf"))}}, 0, 0, "finite number"),
])
def test_bad_shaping_is_refused_naming_the_field(changes, guides, masks, message):
    image = sample_image("coffee", size=64)
    config = dataclasses.replace(SHAPED, **changes)
    guide_images = [sample_image("chelsea", size=64)] * guides
    mask_images = [torch.ones(64, 85)] * masks
    with pytest.raises(InvalidArgument, match=message):
        prepare_dream(image, config, guides=guide_images, guide_masks=mask_images,
                      device="cpu")


def test_a_mask_of_another_aspect_ratio_is_refused():
    image, guide = sample_image("coffee", size=64), sample_image("chelsea", size=64)
    with pytest.raises(InvalidArgument, match="guide_masks.0. is 64x64.*aspect ratio"):
        prepare_dream(image, SHAPED, guides=[guide], guide_masks=[torch.ones(64, 64)],
                      device="cpu")


def test_provenance_records_the_masks_and_octave_weights():
    image, guide = sample_image("coffee", size=64), sample_image("chelsea", size=64)
    h, w = image.shape[-2:]
    left, _ = _halves(w, h)
    config = dataclasses.replace(SHAPED, steps=1, guide_octave_weights=((0.5, 1.0), ()),
                                 layer_octave_weights={LAYER: (1.0, 2.0)})
    result = dream(image, config, guides=[guide, guide], guide_masks=[left, None], device="cpu")
    recorded = result.provenance
    assert len(recorded["guide_masks_sha256"][0]) == 64
    assert recorded["guide_masks_sha256"][1] is None
    again = DreamConfig.from_dict(recorded["config"])
    assert again.guide_octave_weights == ((0.5, 1.0), ())
    assert again.layer_octave_weights == {LAYER: (1.0, 2.0)}
    assert "guide_masks_sha256" not in dream(image, dataclasses.replace(config, steps=1,
                                             guide_octave_weights=()), device="cpu",
                                             guides=[guide, guide]).provenance
