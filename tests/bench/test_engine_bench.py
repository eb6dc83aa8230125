"""The engine benchmark's plumbing (its figures are measured by running it, not asserted)."""

from __future__ import annotations

import json

import pytest
import torch

from dreamsuite.bench import engine


def test_engine_bench_reports_dream_over_floor(capsys):
    from dreamsuite.cli import main

    code = main(["bench", "engine", "--json", "--size", "64", "--octaves", "2", "--steps", "1",
                 "--rounds", "1", "--no-memory", "--backbone", "efficientnet_lite0"])
    assert code == 0
    (figure,) = json.loads(capsys.readouterr().out)
    assert figure["backbone"] == "efficientnet_lite0" and figure["layer"] == "block_10"
    assert figure["dream_seconds"] > 0 and figure["floor_seconds"] > 0
    assert figure["ratio"] == pytest.approx(figure["dream_seconds"] / figure["floor_seconds"])


def test_naive_floor_network_is_vanilla_and_stops_at_the_layer():
    net = engine.naive_network("vgg16", "relu4_3")
    # Normalize + features[:23]: nothing past relu4_3, NCHW weights, BatchNorm-free VGG.
    assert len(net) == 1 + 23
    assert all(not p.requires_grad for p in net.parameters())
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous()


@pytest.mark.slow
def test_peak_rss_is_the_childs_own_not_the_parents():
    bloat = torch.ones(400_000_000)  # 1.6 GB in this process must not show in the child's peak
    peak = engine._peak_rss_child(128, 512)
    assert peak < bloat.numel() * 4
    del bloat
