"""dreamsuite.engine.presets: the paper's configurations by name, each a valid config, and a
preset whose weights are absent fails with the usual WeightsMissing message."""

from __future__ import annotations

import dataclasses

import pytest

from dreamsuite.backbones import WEIGHTS_ENV, get_backbone_spec
from dreamsuite.engine import DreamConfig, check_config, dream
from dreamsuite.engine.presets import PRESETS, get_preset, preset_weights
from dreamsuite.errors import UnknownName, WeightsMissing
from dreamsuite.images import sample_image


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_a_valid_config_of_its_backbone(name):
    preset = get_preset(name)
    assert preset.name == name and preset.description
    checked = check_config(preset.config())
    assert checked.spec.name == preset.backbone
    assert set(preset.fields) <= {f.name for f in dataclasses.fields(DreamConfig)}


def test_paper_inception_is_the_papers_keras_layers_and_schedule():
    config = check_config(get_preset("paper-inception").config()).config
    assert config.backbone == "inception_v3"
    # The paper's mixed3, 5, 6, 7 in Keras numbering, recorded by their torchvision names.
    assert [(t.layer, t.weight, t.channels) for t in config.maplist.terms] == [
        ("mixed_6a", 1.0, None), ("mixed_6c", 1.0, None), ("mixed_6d", 1.0, None),
        ("mixed_6e", 1.0, None)]
    # Keras' schedule: 3 octaves 1.4 apart, 20 steps of 0.01 in [-1, 1] pixels (0.005 in ours),
    # no jitter, the plain normalised step.
    assert (config.octaves, config.octave_scale, config.steps, config.step_size) == (
        3, 1.4, 20, 0.005)
    assert (config.jitter, config.laplacian, config.decorrelate) == (0, 0, False)


def test_the_default_preset_is_the_default_dream_with_embedded_weights():
    preset = get_preset("lite0-default")
    assert preset.config() == DreamConfig()
    assert preset_weights(preset) == "embedded"


def test_a_preset_is_a_base_that_changes_override():
    base = DreamConfig(seed=7, octaves=2)
    config = get_preset("paper-vgg16").config(base)
    assert (config.seed, config.backbone, config.octaves) == (7, "vgg16", 3)


def test_an_unknown_preset_lists_the_valid_names():
    with pytest.raises(UnknownName) as info:
        get_preset("paper-resnet")
    message = str(info.value)
    assert "paper-resnet" in message
    for name in PRESETS:
        assert name in message


@pytest.mark.parametrize("name", ["paper-inception", "paper-vgg16"])
def test_a_preset_without_its_weights_says_which_file_and_how(name, isolated_weights):
    preset = get_preset(name)
    spec = get_backbone_spec(preset.backbone)
    assert preset_weights(preset) == "missing"
    assert spec.weights_file in preset.description
    with pytest.raises(WeightsMissing) as info:
        dream(sample_image("chelsea", size=80), preset.config(), device="cpu")
    message = str(info.value)
    assert spec.weights_file in message and WEIGHTS_ENV in message
