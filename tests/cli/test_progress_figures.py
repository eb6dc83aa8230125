"""Progress figures that are not known yet: a resumed trainer's first progress event, sent before
its first step, has null losses, and NaN reaches JSON as null. The local progress bar and the
demo's curves must show them as gaps, never fail on them (the GAN service once marked such a job
lost on a TypeError)."""

from __future__ import annotations

import math

from PIL import Image, ImageChops

from dreamsuite.launcher.gan import progress_postfix
from dreamsuite.launcher.plots import line_chart


def test_the_progress_bar_shows_null_losses_as_a_dash():
    gan = {"event": "progress", "step": 40, "d_loss": None, "g_loss": None, "d_real_sign": None}
    assert progress_postfix(gan) == {"d": "-", "g": "-", "real": "-"}
    paired = {"event": "progress", "step": 40, "g_loss": None, "pixel_loss": None,
              "perceptual_loss": None}
    assert progress_postfix(paired) == {"loss": "-", "pixel": "-", "perceptual": "-"}


def test_the_progress_bar_formats_known_losses():
    gan = {"event": "progress", "d_loss": 0.69315, "g_loss": 1.25, "d_real_sign": -0.5}
    assert progress_postfix(gan) == {"d": "0.693", "g": "1.250", "real": "-0.50"}
    paired = {"event": "progress", "g_loss": 2.0, "pixel_loss": 0.012345, "perceptual_loss": None}
    assert progress_postfix(paired) == {"loss": "2.000", "pixel": "0.0123", "perceptual": "-"}


def test_a_chart_leaves_out_null_and_nan_points(tmp_path):
    with_gaps = {"D loss": [(0, 1.0), (10, None), (20, math.nan), (30, 4.0)],
                 "G loss": [(0, None), (30, 2.0)]}
    without = {"D loss": [(0, 1.0), (30, 4.0)], "G loss": [(30, 2.0)]}
    a = line_chart(with_gaps, tmp_path / "gaps.png", title="t")
    b = line_chart(without, tmp_path / "plain.png", title="t")
    with Image.open(a) as left, Image.open(b) as right:
        assert left.size == right.size
        assert ImageChops.difference(left.convert("RGB"), right.convert("RGB")).getbbox() is None
