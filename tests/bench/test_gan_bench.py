"""The GAN benchmark's plumbing and its reference loop (figures are measured, not asserted)."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from dreamsuite.bench import gan
from dreamsuite.gan.augment import diff_augment


def test_reference_loop_trains_the_same_networks_from_the_same_weights():
    trainer = gan._trainer("dcgan64", 4, 4, torch.device("cpu"))
    reference = gan.ReferenceLoop(trainer)
    for ours, theirs in zip(trainer.G.state_dict().values(),
                            reference.netG.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs)
    before = [p.detach().clone() for p in reference.netD.parameters()]
    d_loss, g_loss = reference.step()
    assert d_loss > 0 and g_loss > 0
    assert all(not torch.equal(a, b) for a, b in zip(before, reference.netD.parameters(),
                                                     strict=True))


def test_reference_and_fused_augmentation_agree_in_distribution():
    """Both make the same kinds of images: same shape, same share of zeroed pixels."""
    x = torch.rand(256, 3, 32, 32) * 0.5 + 1  # strictly positive: zeros come from the policy
    torch.manual_seed(0)
    theirs = gan.reference_diff_augment(x, "translation,cutout")
    ours = diff_augment(x, "translation,cutout", generator=torch.Generator().manual_seed(0))
    assert theirs.shape == ours.shape
    share = [(y == 0).float().mean().item() for y in (theirs, ours)]
    assert share[0] == pytest.approx(share[1], abs=0.02)


@pytest.mark.slow
def test_gan_bench_reports_its_four_rows_as_json(capsys):
    args = argparse.Namespace(json=True, rounds=1, batch=4, width=4, steps=1)
    assert gan.main(args) == 0
    figures = json.loads(capsys.readouterr().out)
    step, sampling, fastgan = figures["train_step"], figures["sampling"], figures["fastgan"]
    assert step["ratio"] == pytest.approx(step["ours_seconds"] / step["reference_seconds"])
    assert sampling["images"] == 64
    assert sampling["speedup"] == pytest.approx(sampling["dream_seconds"]
                                                / sampling["per_image_seconds"])
    assert fastgan["model"] == "fastgan128" and fastgan["step_seconds"] > 0
    projected = figures["projected"]
    assert projected["model"] == "projected64" and projected["width"] == step["width"]
    assert projected["images_per_second"] == pytest.approx(4 / projected["step_seconds"])
