"""The engine benchmark's plumbing (its figures are measured by running it, not asserted)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from dreamsuite.backbones.efficientnet_lite import FastMBConv, FastStem
from dreamsuite.backbones.fused import ConvReLU
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
    assert figure["target"] == 0.50
    assert figure["met"] == (figure["ratio"] <= 0.50)


def test_each_workload_has_the_issues_target_and_the_table_marks_it(capsys):
    assert engine.TARGET_RATIO == {"efficientnet_lite0": 0.50, "vgg16": 0.85}
    assert {backbone for backbone, _, _ in engine.WORKLOADS} == set(engine.TARGET_RATIO)
    figures = [
        engine.EngineFigure("efficientnet_lite0", "block_10", 1.0, 2.5, 0.4,
                            engine.target_ratio("efficientnet_lite0")),
        engine.EngineFigure("vgg16", "relu4_3", 2.0, 2.2, 0.9, engine.target_ratio("vgg16")),
    ]
    args = SimpleNamespace(size=512, octaves=4, steps=10)
    engine._print_table(figures, None, args)
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["efficientnet_lite0"].endswith("<= 0.50 ok")
    assert rows["vgg16"].endswith("<= 0.85 MISSED")
    assert engine.target_ratio("mobilenet_v2") == engine.DEFAULT_TARGET_RATIO


def test_naive_floor_network_is_vanilla_and_stops_at_the_layer():
    net = engine.naive_network("vgg16", "relu4_3")
    # Normalize + features[:23]: nothing past relu4_3, NCHW weights, BatchNorm-free VGG.
    assert len(net) == 1 + 23
    assert all(not p.requires_grad for p in net.parameters())
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous()
    # The floor never runs the engine's fused stages or its Normalize.
    assert isinstance(net[0], engine.NaiveNormalize)
    assert sum(isinstance(m, torch.nn.ReLU) for m in net) == 10
    assert not any(isinstance(m, ConvReLU) for m in net.modules())
    lite = engine.naive_network("efficientnet_lite0", "block_10")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in lite.modules())
    assert not any(isinstance(m, (FastMBConv, FastStem)) for m in lite.modules())


@pytest.mark.slow
def test_peak_rss_is_the_childs_own_not_the_parents():
    bloat = torch.ones(400_000_000)  # 1.6 GB in this process must not show in the child's peak
    peak = engine._peak_rss_child(128, 512)
    assert peak < bloat.numel() * 4
    del bloat


def test_the_floor_runs_in_its_own_untuned_process_on_the_same_threads():
    from dreamsuite.cpus import keep_freed_memory

    keep_freed_memory()  # this process dreams with the tuned allocator...
    with engine.FloorProcess("efficientnet_lite0", "block_10") as floor:
        # ...the floor's process keeps the default one, as a plain dreamer's would.
        assert floor.info() == {"threads": torch.get_num_threads(), "device": "cpu",
                                "allocator_tuned": False}
        assert 0 < floor.time_passes((64, 48), 2)[1] < 60
        pid = floor.proc.pid
    assert floor.proc.returncode == 0 and pid != __import__("os").getpid()
