"""``dreamsuite bench style``: both loops timed per iteration, the quality curves compared."""

from __future__ import annotations

import argparse
import json

import pytest

from dreamsuite.bench import style
from dreamsuite.bench.style import QualityPoint, style_gain

pytestmark = pytest.mark.slow


def test_the_bench_measures_both_loops_and_both_transforms(capsys):
    args = argparse.Namespace(json=True, size=64, iterations=3, rounds=1, quality_size=64,
                              quality_iterations=2, content_weights=[1.0, 10.0])
    assert style.main(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    speed = report["speed"]
    assert speed["ours_seconds_per_iteration"] > 0 < speed["tutorial_seconds_per_iteration"]
    assert speed["ratio"] == pytest.approx(speed["ours_seconds_per_iteration"]
                                           / speed["tutorial_seconds_per_iteration"])
    assert speed["default_ratio"] == pytest.approx(speed["default_seconds_per_iteration"]
                                                   / speed["tutorial_seconds_per_iteration"])
    assert {(p["transform"], p["content_weight"]) for p in report["quality"]} == {
        ("pyramid", 1.0), ("pyramid", 10.0), ("gram", 1.0), ("gram", 10.0)}
    assert report["chosen"] == "pyramid"


def test_the_tutorial_loop_computes_the_same_loss_as_ours():
    """Same backbone, layers and Gram arithmetic: the comparison is like for like."""
    import torch

    from dreamsuite.backbones import get_backbone
    from dreamsuite.engine.style import StyleConfig, _Loss, _Net, image_grams
    from dreamsuite.images import sample_image

    content, other = sample_image("coffee", size=64), sample_image("chelsea", size=64)
    other = torch.nn.functional.interpolate(other[None], content.shape[-2:])[0]
    config = StyleConfig(transform="gram")
    layers, content_layer = config.resolved_style_layers(), config.resolved_content_layer()
    model, style_losses, content_losses = style._tutorial_model(
        content[None], other[None], list(layers), content_layer)
    x = torch.rand(1, 3, *content.shape[-2:], generator=torch.Generator().manual_seed(0))
    model(x)
    theirs = (config.style_weight * sum(s.loss for s in style_losses)
              + config.content_weight * sum(c.loss for c in content_losses))
    backbone = get_backbone("efficientnet_lite0", device="cpu")
    net = _Net(backbone, [*layers, content_layer])
    loss = _Loss(net, "gram", 1.0, layers, image_grams(net, other[None], list(layers), "gram",
                                                       1.0), content_layer,
                 style_weight=config.style_weight, content_weight=config.content_weight)
    loss.prepare_content(content[None])
    ours, _ = loss(x)
    assert ours == pytest.approx(float(theirs), rel=1e-3)


def test_style_gain_interpolates_at_matched_content_distance():
    points = [QualityPoint("gram", 1, 100.0, 1.0), QualityPoint("gram", 3, 10.0, 10.0),
              QualityPoint("softmax", 1, 20.0, 3.1622776601683795),
              QualityPoint("softmax", 9, 5.0, 50.0)]  # outside Gatys' range: not counted
    # Gatys at content distance sqrt(10) (log midpoint) has style distance sqrt(1000) ~ 31.6.
    assert style_gain(points) == pytest.approx(1 - 20 / 1000 ** 0.5)
    assert style_gain([QualityPoint("gram", 1, 1.0, 1.0)]) is None
