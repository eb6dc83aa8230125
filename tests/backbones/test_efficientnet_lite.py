"""The EfficientNet-Lite family: architectures that match the shipped weights, and those weights
classifying the sample photos. The registry-wide tests in test_backbones.py cover the rest."""

from __future__ import annotations

import pytest

from dreamsuite.backbones import get_backbone, get_backbone_spec, weights_status
from dreamsuite.backbones.efficientnet_lite import (
    LITE0_BLOCKS,
    LITE_VARIANTS,
    EfficientNetLite,
    lite_blocks,
    lite_state_dict,
)
from dreamsuite.images import resize, sample_image

SCALED = ["lite1", "lite2"]


@pytest.mark.parametrize("variant", list(LITE_VARIANTS))
def test_architecture_has_the_shapes_of_the_shipped_weights(variant):
    state = lite_state_dict(variant)
    model = EfficientNetLite.variant(variant).state_dict()
    assert set(model) == set(state)
    wrong = {k: (tuple(model[k].shape), tuple(state[k].shape))
             for k in model if model[k].shape != state[k].shape}
    assert not wrong


def test_lite_scaling_keeps_stem_head_and_the_single_block_stages():
    assert lite_blocks() == LITE0_BLOCKS and len(LITE0_BLOCKS) == 16
    lite2 = lite_blocks(1.1, 1.2)
    assert lite2[0][3] == 32 and lite2[-1][4] == 352  # stem 32 in, last stage 320 * 1.1 out
    assert len(lite2) == 21  # 1 + 3 + 3 + 4 + 4 + 5 + 1: first and last stage not repeated
    assert [b[4] for b in lite2].count(352) == 1 and [b[4] for b in lite2].count(16) == 1


@pytest.mark.parametrize("variant", SCALED)
def test_scaled_lites_are_registered_with_embedded_weights(variant):
    spec = get_backbone_spec(f"efficientnet_{variant}")
    assert weights_status(spec) == "embedded"
    names = [layer.name for layer in spec.layers]
    assert names[0] == "stem" and names[-1] == "head" and names[1] == "block_0"
    assert spec.layer("head").channels == 1280
    assert spec.layer(spec.default_layer).channels in (112, 120)


@pytest.mark.parametrize("variant", SCALED)
@pytest.mark.parametrize(
    ("sample", "classes"),
    [("chelsea", range(281, 286)), ("coffee", [967])],
    ids=["chelsea-is-a-cat", "coffee-is-espresso"],
)
def test_shipped_weights_classify_sample_photos(variant, sample, classes):
    backbone = get_backbone(f"efficientnet_{variant}", device="cpu")
    side = LITE_VARIANTS[variant].resolution
    logits = backbone.classify(resize(sample_image(sample), (side, side)).clamp(0, 1))
    assert logits.shape == (1, 1000)
    assert int(logits.argmax()) in classes
