"""dreamsuite.gan.models: the registry, and every registered kind's two networks."""

from __future__ import annotations

import copy

import pytest
import torch

from dreamsuite.errors import InvalidArgument, UnknownName
from dreamsuite.gan.models import DEFAULT_MODEL, get_model_kind, list_models

WIDTH = 4  # tiny networks: the tests check shapes and wiring, not quality
#: Every GAN kind (dream2dream, the paired kind, has tests of its own: tests/gan/test_dream2dream.py);
#: the 256 px ones take seconds even when tiny.
KINDS = [pytest.param(n, marks=pytest.mark.slow) if n.endswith("256") else n
         for n in list_models() if not get_model_kind(n).paired]


def test_registry_lists_the_kinds_default_first():
    names = list_models()
    assert names[0] == DEFAULT_MODEL == "dcgan64"
    assert {"dcgan64", "fastgan128"} <= set(names)
    assert get_model_kind().name == DEFAULT_MODEL


def test_unknown_kind_lists_the_valid_names():
    with pytest.raises(UnknownName, match="'stylegan9'.*available: dcgan64, fastgan128"):
        get_model_kind("stylegan9")


@pytest.mark.parametrize("width", [0, 1, 10_000, 2.5, True])
def test_bad_widths_are_refused(width):
    with pytest.raises(InvalidArgument, match="width"):
        get_model_kind("dcgan64").build_generator(width)


@pytest.mark.parametrize("name", KINDS)
def test_generator_maps_latents_to_images_of_the_kinds_size(name):
    kind = get_model_kind(name)
    torch.manual_seed(0)
    G = kind.build_generator(WIDTH).eval()
    with torch.no_grad():
        x = G(torch.randn(2, kind.z_dim))
    assert x.shape == (2, 3, kind.resolution, kind.resolution)
    assert x.abs().max() <= 1
    assert G.z_dim == kind.z_dim


@pytest.mark.parametrize("name", KINDS)
def test_discriminator_gives_logits_per_image_and_an_aux_loss_only_for_reals(name):
    kind = get_model_kind(name)
    torch.manual_seed(0)
    D = kind.build_discriminator(WIDTH)
    x = torch.rand(3, 3, kind.resolution, kind.resolution) * 2 - 1
    logits, aux = D(x)
    assert logits.shape[0] == 3 and logits.dim() == 2
    assert aux is None
    logits, aux = D(x, reconstruct=2, generator=torch.Generator().manual_seed(0))
    if name.startswith("fastgan"):
        assert aux.dim() == 0 and aux > 0
        aux.backward()  # the decoders learn from D's features
        assert D.decode_whole.net[-2].weight.grad.abs().sum() > 0
        assert D.decode_part.net[-2].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", KINDS)
def test_one_batch_of_real_and_fake_equals_two_separate_passes(name):
    """What lets the trainer send cat(real, fake) through D once."""
    kind = get_model_kind(name)
    torch.manual_seed(0)
    D = kind.build_discriminator(WIDTH)  # training mode: batch statistics, power iteration
    real = torch.rand(2, 3, kind.resolution, kind.resolution) * 2 - 1
    fake = torch.rand(2, 3, kind.resolution, kind.resolution) * 2 - 1
    together, _ = copy.deepcopy(D)(torch.cat([real, fake]), reconstruct=2,
                                   generator=torch.Generator().manual_seed(0))
    alone_real, _ = copy.deepcopy(D)(real)
    alone_fake, _ = copy.deepcopy(D)(fake)
    torch.testing.assert_close(together, torch.cat([alone_real, alone_fake]), atol=1e-5, rtol=1e-4)


def test_fastgan_generator_excites_high_resolution_features_from_low_ones():
    kind = get_model_kind("fastgan128")
    G = kind.build_generator(WIDTH)
    assert [tuple(p) for p in G.sle_pairs] == [(4, 64), (8, 128)]
    seen = {}

    def record(size: str):
        def hook(module, args, out):
            seen[size] = args
        return hook

    for size, sle in G.sle.items():
        sle.register_forward_hook(record(size))
    G(torch.randn(2, kind.z_dim))
    for size, (low, high) in seen.items():
        assert high.shape[-1] == int(size) and low.shape[-1] == int(size) // 16
    assert set(seen) == {"64", "128"}


def test_the_projected_discriminator_trains_small_heads_on_frozen_pretrained_features():
    """Only the heads learn; the backbone stays out of the checkpoint (the process's cached
    Lite0), the random projections are fixed by the seed, and G gets gradients through the
    frozen network."""
    from dreamsuite.backbones import get_backbone
    from dreamsuite.gan.projected import FEATURE_BACKBONE

    kind = get_model_kind("projected64")
    torch.manual_seed(0)
    D = kind.build_discriminator(WIDTH)
    torch.manual_seed(0)
    again = kind.build_discriminator(WIDTH)
    state = D.state_dict()
    assert all(k.split(".")[0] in ("mix_channels", "mix_scales", "heads") for k in state)
    for key, value in again.state_dict().items():
        assert torch.equal(value, state[key]), key
    trained = {n for n, p in D.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith("heads.") for n in trained)
    backbone = get_backbone(FEATURE_BACKBONE, device="cpu")
    frozen = sum(p.numel() for p in backbone.model.parameters())
    assert sum(v.numel() for v in state.values()) < frozen / 10
    # One logit per position of each head: 16 -> 4 px, 8 -> 4, 4 and 2 px maps at 64 px.
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_()
    logits, _ = D(x)
    assert logits.shape == (2, 4)
    (-logits.mean()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in D.named_parameters() if not p.requires_grad)
    assert all(p.grad is not None for n, p in D.named_parameters() if p.requires_grad)
    assert all(p.grad is None for p in backbone.model.parameters())
