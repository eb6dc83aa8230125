"""Layer aliases through the engine: Inception V3's Keras names (``mixed3`` for ``mixed_6a``)
are resolved where a config is checked, so configs, provenance, guide weights, selections and
style layers carry the friendly names, and an alias dreams exactly what its name dreams.

Inception V3 runs with random weights (its pretrained ones are not embedded) on ~80 px images.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dreamsuite.backbones import get_backbone, get_backbone_spec
from dreamsuite.engine import DreamConfig, check_config, check_guide_weights, dream
from dreamsuite.engine.config import check_layer_names
from dreamsuite.engine.guide import guide_features, guide_weights, select_neurons
from dreamsuite.engine.objectives import LayerTerm, Maplist
from dreamsuite.engine.style import StyleConfig, stylize
from dreamsuite.errors import InvalidArgument, UnknownName
from dreamsuite.images import sample_image

#: One octave of one step: enough to show two dreams are (or are not) the same.
TINY = DreamConfig(backbone="inception_v3", weights="random", octaves=1, steps=1, jitter=4,
                   seed=3)


def _layers(*layers: str) -> Maplist:
    return Maplist(tuple(LayerTerm(layer) for layer in layers))


def _config(*layers: str, **changes) -> DreamConfig:
    return dataclasses.replace(TINY, maplist=_layers(*layers), **changes)


@pytest.fixture(scope="module")
def inception():
    return get_backbone("inception_v3", weights="random", device="cpu")


@pytest.fixture(scope="module")
def cat() -> torch.Tensor:
    """The cat at 80 px: above Inception V3's 75 px minimum."""
    return sample_image("chelsea", size=80)


# --- validation ----------------------------------------------------------------------------------


def test_a_checked_config_names_layers_by_their_friendly_names():
    config = dataclasses.replace(
        TINY, maplist=Maplist((LayerTerm("mixed3", 0.5, {3: 1.0, 700: -1.0}),
                               LayerTerm("mixed_6c"))),
        layer_octave_weights={"mixed3": (2.0,)})
    checked = check_config(config)
    assert checked.maplist.terms == (LayerTerm("mixed_6a", 0.5, {3: 1.0, 700: -1.0}),
                                     LayerTerm("mixed_6c"))
    assert checked.config.maplist == checked.maplist
    assert checked.config.layer_octave_weights == {"mixed_6a": (2.0,)}
    # Two configs that differ only by aliases check the same.
    other = dataclasses.replace(
        config, maplist=Maplist((LayerTerm("mixed_6a", 0.5, {3: 1.0, 700: -1.0}),
                                 LayerTerm("mixed5"))),
        layer_octave_weights={"mixed_6a": (2.0,)})
    assert check_config(other).config == checked.config
    # No maplist stays no maplist (the default layer), as before.
    assert check_config(TINY).config.maplist is None


def test_an_aliased_layer_keeps_its_channel_checks():
    config = dataclasses.replace(TINY, maplist=Maplist((LayerTerm("mixed3", 1.0, {768: 1.0}),)))
    with pytest.raises(UnknownName, match=r"maplist.layers\[0\]: layer 'mixed3'.*0..767"):
        check_config(config)


def test_octave_weights_that_name_one_layer_twice_are_refused():
    config = _config("mixed3", layer_octave_weights={"mixed3": (1.0,), "mixed_6a": (0.5,)})
    with pytest.raises(InvalidArgument, match="'mixed3' and 'mixed_6a' name the same layer"):
        check_config(config)


def test_layer_names_resolve_and_repeat_once():
    spec = get_backbone_spec("inception_v3")
    assert check_layer_names(spec, ["mixed3", "mixed_6a", "mixed0"]) == ["mixed_6a", "mixed_5b"]
    with pytest.raises(UnknownName, match=r"layers\[1\]: .*no layer 'mixed11'"):
        check_layer_names(spec, ["mixed3", "mixed11"])


# --- dreams --------------------------------------------------------------------------------------


def test_an_alias_dreams_what_its_name_dreams_and_records_the_name(cat):
    by_alias = dream(cat, _config("mixed3"), device="cpu")
    by_name = dream(cat, _config("mixed_6a"), device="cpu")
    assert torch.equal(by_alias.image, by_name.image)
    assert by_alias.provenance["config"] == by_name.provenance["config"]
    assert by_alias.provenance["config"]["maplist"] == {
        "layers": [{"layer": "mixed_6a", "weight": 1.0}]}


def test_a_guided_dream_takes_aliased_guide_weights(inception, cat):
    weights = guide_weights(inception, [cat], ["mixed_6a"])
    by_alias = dream(cat, _config("mixed3"), guide_weights_override={"mixed3": weights["mixed_6a"]},
                     device="cpu")
    by_name = dream(cat, _config("mixed_6a"), guide_weights_override=weights, device="cpu")
    assert torch.equal(by_alias.image, by_name.image)
    assert by_alias.provenance["config"]["maplist"]["layers"][0]["layer"] == "mixed_6a"


# --- guide weights, selection, style -------------------------------------------------------------


def test_guide_weights_of_aliases_are_keyed_by_friendly_names(inception, cat):
    weights = guide_weights(inception, [cat], ["mixed3", "mixed5", "mixed_6a"])
    assert list(weights) == ["mixed_6a", "mixed_6c"]
    direct = guide_weights(inception, [cat], ["mixed_6a", "mixed_6c"])
    for layer, values in direct.items():
        assert torch.equal(weights[layer], values)
    assert torch.equal(guide_features(inception, [cat], "mixed3"),
                       guide_features(inception, [cat], "mixed_6a"))


def test_precomputed_guide_weights_may_name_aliases_once():
    spec = get_backbone_spec("inception_v3")
    values = torch.ones(768)
    checked = check_guide_weights(spec, {"mixed3": values}, ["mixed_6a"])
    assert list(checked) == ["mixed_6a"]
    with pytest.raises(InvalidArgument, match=r"guide_weights\[1\]: layer 'mixed_6a' is "
                                              "mixed_6a, which an earlier entry"):
        check_guide_weights(spec, {"mixed3": values, "mixed_6a": values}, ["mixed_6a"])


def test_a_selection_of_aliases_is_keyed_by_friendly_names(inception, cat):
    selection = select_neurons(inception, [cat], ["mixed3", "mixed_6a", "mixed0"], top_k=2,
                               bottom_k=1)
    assert list(selection.means) == ["mixed_6a", "mixed_5b"]
    assert selection.maplist().layers == ["mixed_6a", "mixed_5b"]


def test_style_layers_may_be_aliases(cat):
    def styled(style_layers, content_layer):
        config = StyleConfig(backbone="inception_v3", weights="random", iterations=1,
                             optimizer="adam", style_layers=style_layers,
                             content_layer=content_layer)
        return stylize(cat, [(cat, 1.0)], config, device="cpu")

    assert torch.equal(styled({"mixed0": 1.0, "mixed1": 0.5}, "mixed2"),
                       styled({"mixed_5b": 1.0, "mixed_5c": 0.5}, "mixed_5d"))
    with pytest.raises(InvalidArgument, match="name the same layer"):
        styled({"mixed0": 1.0, "mixed_5b": 1.0}, "mixed2")
