"""dreamsuite.gan.loop: the mode-seeking term in G's loss, and the kinds that use it."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from dreamsuite.gan.loop import Trainer, mode_seeking_loss
from dreamsuite.gan.models import get_model_kind, register


def test_mode_seeking_loss_is_one_over_the_samples_spread_relative_to_the_datas():
    torch.manual_seed(0)
    fake, real = torch.randn(6, 3, 8, 8), torch.randn(6, 3, 8, 8) * 2
    r = (fake[:3] - fake[3:]).abs().mean() / (real[:3] - real[3:]).abs().mean()
    assert r.item() == pytest.approx(0.5, abs=0.1)
    assert mode_seeking_loss(fake, real).item() == pytest.approx(1 / (r.item() + 1e-5), rel=1e-6)
    # An odd batch pairs the first half with the next half and leaves the last image out.
    assert torch.equal(mode_seeking_loss(torch.cat([fake, fake[:1]]), torch.cat([real, real[:1]])),
                       mode_seeking_loss(fake, real))
    # More spread-out samples: a smaller loss; the same sample six times: 1e5.
    assert mode_seeking_loss(fake * 2, real) < mode_seeking_loss(fake, real)
    assert mode_seeking_loss(fake[:1].expand(6, -1, -1, -1), real).item() == pytest.approx(1e5)
    assert mode_seeking_loss(fake[:1], real[:1]).item() == 0


def test_a_floor_hinges_the_term_at_that_share_of_the_datas_spread():
    torch.manual_seed(0)
    fake, real = torch.randn(6, 3, 8, 8), torch.randn(6, 3, 8, 8)
    r = ((fake[:3] - fake[3:]).abs().mean() / (real[:3] - real[3:]).abs().mean()).item()
    # A floor above the samples' relative spread pushes (less); one below it does not.
    higher, lower = r * 1.5, r / 1.5
    assert mode_seeking_loss(fake, real, floor=higher).item() == pytest.approx(
        1 / (r + 1e-5) - 1 / higher, rel=1e-5)
    assert mode_seeking_loss(fake, real, floor=lower).item() == 0
    # Collapsed samples are pushed apart whatever the floor.
    assert mode_seeking_loss(fake[:1].expand(6, -1, -1, -1), real, floor=0.5).item() > 1e4


def test_descending_the_mode_seeking_loss_spreads_a_collapsed_generators_samples():
    torch.manual_seed(0)
    G = nn.Sequential(nn.Linear(8, 48), nn.Tanh())
    with torch.no_grad():
        G[0].weight.mul_(1e-3)  # every latent maps to (nearly) the same image
    z, real = torch.randn(32, 8), torch.rand(32, 48) * 2 - 1
    opt = torch.optim.Adam(G.parameters(), lr=1e-2)
    spread = G(z).detach().std(0).mean()
    for _ in range(20):
        opt.zero_grad()
        mode_seeking_loss(G(z), real).backward()
        opt.step()
    assert G(z).detach().std(0).mean() > 20 * spread


def _trainer(kind, images) -> Trainer:
    return Trainer(kind, images, width=4, batch=4, lr=2e-4, ema_decay=0.999,
                   augment="color,translation,cutout", seed=0, device=torch.device("cpu"))


def test_projected64_adds_the_term_to_g_steps_only():
    """projected64 sets a mode-seeking weight; with it the G step moves G differently, while
    the D step (which comes first, from the same seed) is untouched."""
    kind = get_model_kind("projected64")
    assert kind.mode_seeking > 0 and get_model_kind("dcgan64").mode_seeking == 0
    images = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    on, off = _trainer(kind, images), _trainer(dataclasses.replace(kind, mode_seeking=0.0), images)
    for trainer in (on, off):
        trainer.train_step()
    for name, value in on.D.state_dict().items():
        assert torch.equal(value, off.D.state_dict()[name]), name
    moved = [name for name, value in on.G.state_dict().items()
             if value.is_floating_point() and not torch.equal(value, off.G.state_dict()[name])]
    assert moved
    # The progress figure is the adversarial loss alone, the same with the term and without.
    assert on.pop_stats()["g_loss"] == pytest.approx(off.pop_stats()["g_loss"], rel=1e-6)


@pytest.mark.parametrize("fields", [{"mode_seeking": -1.0}, {"mode_seeking_floor": 1.5},
                                    {"mode_seeking_floor": -0.1},
                                    {"mode_seeking": float("nan")}])
def test_a_kind_with_a_bad_mode_seeking_setting_is_not_registered(fields):
    kind = dataclasses.replace(get_model_kind("projected64"), name="projected64-bad", **fields)
    with pytest.raises(ValueError, match="mode_seeking"):
        register(kind)


def test_a_cpu_checkpoint_resumes_where_the_grad_scaler_is_enabled():
    """A checkpoint from a CPU run (scalers disabled: empty state) resumes on CUDA, where the
    scalers are enabled: they start afresh instead of refusing the empty state. Simulated
    with CPU scalers enabled, which refuse an empty state the same way."""
    kind = get_model_kind("dcgan64")
    images = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    saved = _trainer(kind, images)
    saved.train_step()
    state = saved.state_dict()
    assert state["scaler_G"] == {} and state["scaler_D"] == {}
    resumed = _trainer(kind, images)
    resumed.scaler_G = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)
    resumed.scaler_D = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)
    with pytest.raises(RuntimeError, match="empty"):  # what the scaler itself does
        torch.amp.GradScaler("cpu", enabled=True).load_state_dict(state["scaler_G"])
    resumed.load_state_dict(state)
    assert resumed.step == saved.step == 1
    for name, value in saved.G.state_dict().items():
        assert torch.equal(value, resumed.G.state_dict()[name]), name
    assert resumed.scaler_G.get_scale() == 1024.0
