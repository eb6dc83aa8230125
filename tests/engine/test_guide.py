"""dreamsuite.engine.guide: guide weights, Guided Dreams (both modes) and neuron selection."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from dreamsuite.engine import DreamConfig, build_objective, check_config, dream
from dreamsuite.engine.guide import (
    guide_features,
    guide_weights,
    map_means,
    normalise,
    prepare_guide,
    select_neurons,
)
from dreamsuite.engine.objectives import LayerTerm, Maplist
from dreamsuite.errors import InvalidArgument, UnknownName

LAYER = "block_10"
#: The same small, seeded dream for the guided and the unguided runs.
BASE = DreamConfig(octaves=2, steps=6, jitter=4, seed=3, maplist=Maplist((LayerTerm(LAYER),)))


def _profile(backbone, image: torch.Tensor, layer: str = LAYER) -> torch.Tensor:
    """The normalised per-map activation vector ``[C]`` of ``image`` at ``layer``."""
    acts = backbone.activations(image, [layer])[layer]
    means = acts.mean(dim=(0, 2, 3))
    return means / means.abs().sum()


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a, b, dim=0))


# --- guide weights -------------------------------------------------------------------------------


def test_guide_weights_are_the_normalised_map_means(lite0, chelsea):
    weights = guide_weights(lite0, [chelsea], [LAYER, "block_3"])
    assert set(weights) == {LAYER, "block_3"}
    for layer, w in weights.items():
        assert w.shape == (lite0.spec.layer(layer).channels,)
        assert float(w.abs().sum()) == pytest.approx(1.0, abs=1e-5)
        torch.testing.assert_close(w, _profile(lite0, chelsea, layer), atol=1e-6, rtol=1e-4)


def test_several_guides_average(lite0, chelsea, astronaut, rocket):
    one = [guide_weights(lite0, [g], [LAYER])[LAYER] for g in (chelsea, astronaut, rocket)]
    both = guide_weights(lite0, [chelsea, astronaut, rocket], [LAYER])[LAYER]
    torch.testing.assert_close(both, normalise(sum(one) / 3), atol=1e-6, rtol=1e-4)
    reordered = guide_weights(lite0, [rocket, chelsea, astronaut], [LAYER])[LAYER]
    torch.testing.assert_close(both, reordered, atol=1e-6, rtol=1e-4)
    for single in one:
        assert not torch.allclose(both, single, atol=1e-3)


def test_large_guides_are_downscaled_first():
    big = torch.rand(3, 600, 1200)
    small = prepare_guide(big, max_side=300)
    assert small.shape == (3, 150, 300)
    assert prepare_guide(small, max_side=300) is small


def test_guide_errors_name_the_problem(lite0, chelsea):
    with pytest.raises(InvalidArgument, match="guide"):
        guide_weights(lite0, [], [LAYER])
    with pytest.raises(UnknownName, match="block_99"):
        guide_weights(lite0, [chelsea], ["block_99"])
    with pytest.raises(InvalidArgument, match="guide"):
        guide_features(lite0, [], LAYER)


def test_guide_features_hold_every_guide_position(lite0, chelsea, astronaut):
    feats = guide_features(lite0, [chelsea, astronaut], LAYER)
    acts = [lite0.activations(g, [LAYER])[LAYER][0] for g in (chelsea, astronaut)]
    assert feats.shape == (112, sum(a.shape[1] * a.shape[2] for a in acts))
    torch.testing.assert_close(feats[:, : acts[0][0].numel()], acts[0].flatten(1))


def test_weights_mode_objective_uses_the_guide_weights(lite0, chelsea):
    config = dataclasses.replace(BASE, maplist=Maplist((LayerTerm(LAYER, 0.5),)))
    _, maplist = build_objective(lite0, check_config(config), [chelsea])
    (term,) = maplist.terms
    assert term.weight == 0.5
    expected = guide_weights(lite0, [chelsea], [LAYER])[LAYER]
    got = torch.tensor([term.channels[c] for c in range(112)])
    torch.testing.assert_close(got, expected)


# --- Guided Dreams move towards their guide ------------------------------------------------------


@pytest.fixture(scope="module")
def unguided(coffee) -> torch.Tensor:
    return dream(coffee, BASE).image


@pytest.mark.parametrize("mode", ["weights", "match"])
def test_guided_dream_moves_towards_the_guide(lite0, coffee, chelsea, unguided, mode):
    target = _profile(lite0, chelsea)
    guided = dream(coffee, dataclasses.replace(BASE, guide_mode=mode), guides=[chelsea]).image
    assert guided.shape == coffee.shape
    unguided_cos = _cosine(_profile(lite0, unguided), target)
    guided_cos = _cosine(_profile(lite0, guided), target)
    assert guided_cos > unguided_cos + 0.05, (mode, unguided_cos, guided_cos)
    assert guided_cos > _cosine(_profile(lite0, coffee), target)


def test_two_guides_move_towards_their_average(lite0, coffee, chelsea, astronaut, unguided):
    target = guide_weights(lite0, [chelsea, astronaut], [LAYER])[LAYER]
    guided = dream(coffee, BASE, guides=[chelsea, astronaut]).image
    assert _cosine(_profile(lite0, guided), target) > _cosine(_profile(lite0, unguided), target)


def test_guide_weights_override_is_the_same_as_the_guides(lite0, coffee, chelsea):
    config = dataclasses.replace(BASE, octaves=1, steps=2)
    weights = guide_weights(lite0, [chelsea], [LAYER])
    by_guide = dream(coffee, config, guides=[chelsea]).image
    by_override = dream(coffee, config, guide_weights_override=weights).image
    torch.testing.assert_close(by_override, by_guide)


# --- neuron selection ----------------------------------------------------------------------------


def test_selection_ranks_maps_by_batch_mean(lite0, chelsea, astronaut, rocket):
    batch = [chelsea, astronaut, rocket]
    selection = select_neurons(lite0, batch, [LAYER, "block_3"], top_k=4, bottom_k=3)
    for layer in (LAYER, "block_3"):
        direct = torch.stack([
            lite0.activations(image, [layer])[layer].mean(dim=(0, 2, 3)) for image in batch
        ]).mean(dim=0)
        torch.testing.assert_close(selection.means[layer], direct, atol=1e-5, rtol=1e-4)
        order = sorted(range(direct.numel()), key=lambda c: float(direct[c]))
        assert set(selection.top[layer]) == set(order[-4:])
        assert set(selection.bottom[layer]) == set(order[:3])
        top_means = direct[selection.top[layer]]
        assert torch.all(top_means[:-1] >= top_means[1:]), "top maps come strongest first"

    (term, _) = selection.maplist().terms
    assert term.layer == LAYER
    assert {c for c, w in term.channels.items() if w > 0} == set(selection.top[LAYER])
    assert {c for c, w in term.channels.items() if w < 0} == set(selection.bottom[LAYER])


def test_dreaming_the_selection_raises_top_maps_and_lowers_bottom_maps(
    lite0, chelsea, astronaut, rocket, coffee
):
    selection = select_neurons(lite0, [chelsea, astronaut, rocket], [LAYER], top_k=3, bottom_k=3)
    out = dream(coffee, dataclasses.replace(BASE, maplist=selection.maplist())).image
    before = map_means(lite0, coffee, [LAYER])[LAYER]
    after = map_means(lite0, out, [LAYER])[LAYER]
    top, bottom = selection.top[LAYER], selection.bottom[LAYER]
    assert float(after[top].mean()) > float(before[top].mean()) + 0.25
    assert float(after[bottom].mean()) < float(before[bottom].mean()) - 0.5


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"top_k": 0, "bottom_k": 0}, "top_k"),
        ({"top_k": -1, "bottom_k": 2}, "top_k"),
        ({"top_k": 100, "bottom_k": 100}, "112 maps"),
    ],
)
def test_bad_selections_are_refused(lite0, chelsea, kwargs, names):
    with pytest.raises(InvalidArgument, match=names):
        select_neurons(lite0, [chelsea], [LAYER], **kwargs)


def test_selection_needs_images_and_known_layers(lite0, chelsea):
    with pytest.raises(InvalidArgument, match="image"):
        select_neurons(lite0, [], [LAYER], top_k=1)
    with pytest.raises(UnknownName, match="block_99"):
        select_neurons(lite0, [chelsea], ["block_99"], top_k=1)
