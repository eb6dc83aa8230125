"""dreamsuite.gan.sample: one seed per image, batch independence, truncation, loading."""

from __future__ import annotations

import math
import sys
import types

import pytest
import torch

from dreamsuite.artifacts import open_store
from dreamsuite.errors import InvalidArgument
from dreamsuite.gan.data import write_dataset
from dreamsuite.gan.sample import latents, load_generator, sample
from dreamsuite.gan.train import TrainConfig, run
from dreamsuite.images import encode_png

LATEST = "jobs/j1/checkpoints/latest"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store holding a dcgan64 job trained for 3 steps (evaluation stubbed)."""
    root = tmp_path_factory.mktemp("sample")
    store = open_store(root)
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 32, 32, generator=g) for _ in range(8)]
    write_dataset(store, "d1", {"train": [(f"p{i}", x, x) for i, x in enumerate(images)]}, 32)
    stub = types.ModuleType("dreamsuite.gan.evaluate")
    stub.job_evaluation = lambda *args, **kwargs: {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "dreamsuite.gan.evaluate", stub)
        run(TrainConfig(job_id="j1", artifacts=store.url, dataset="d1", steps=3, batch=4,
                        checkpoint_every=3, width=4, preview_seeds=0), store)
    return store


@pytest.fixture(scope="module")
def generator(store):
    return load_generator(store, LATEST, "cpu")[0]


def test_load_generator_gives_the_ema_generator_in_eval_mode_and_keeps_the_rng(store):
    before = torch.get_rng_state()
    generator, kind = load_generator(store, LATEST, "cpu")
    assert torch.equal(torch.get_rng_state(), before)
    assert kind.name == "dcgan64" and not generator.training
    assert not any(p.requires_grad for p in generator.parameters())
    by_key, _ = load_generator(store, "jobs/j1/checkpoints/step-00000003.pt", "cpu")
    for a, b in zip(generator.state_dict().values(), by_key.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_same_seeds_give_the_same_bytes(store, generator):
    a = sample(generator, [3, 5, 7], truncation=math.inf)
    again = sample(load_generator(store, LATEST, "cpu")[0], [3, 5, 7], truncation=math.inf)
    assert a.shape == (3, 3, 64, 64) and a.min() >= 0 and a.max() <= 1
    assert [encode_png(x) for x in a] == [encode_png(x) for x in again]
    assert not torch.equal(a[0], a[1]), "different seeds, different images"


def test_an_image_depends_on_its_seed_alone_not_on_its_batch(generator):
    alone = sample(generator, [5])
    in_batch = sample(generator, [1, 5, 9, 11])[1]
    assert (alone[0] - in_batch).abs().max() <= 1 / 255
    chunked = sample(generator, range(5), batch=2)
    assert (chunked - sample(generator, range(5), batch=64)).abs().max() <= 1 / 255


def test_truncation_bounds_the_latents_deterministically():
    z = latents(range(8), 128, 0.5)
    assert z.abs().max() <= 0.5
    assert torch.equal(z, latents(range(8), 128, 0.5))
    plain = latents([4], 128)
    assert torch.equal(plain[0], torch.randn(128, generator=torch.Generator().manual_seed(4)))
    # components already inside the bound are kept; only the others are redrawn
    inside = plain.abs() <= 1.5
    truncated = latents([4], 128, 1.5)
    assert torch.equal(truncated[inside], plain[inside])
    assert not torch.equal(truncated, plain)


def test_truncation_changes_images_and_keeps_them_deterministic(generator):
    a = sample(generator, [2], truncation=0.5)
    assert torch.equal(a, sample(generator, [2], truncation=0.5))
    assert not torch.equal(a, sample(generator, [2], truncation=math.inf))


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), 0.01, "big", None])
def test_bad_truncation_is_refused(generator, bad):
    with pytest.raises(InvalidArgument, match="truncation"):
        sample(generator, [0], truncation=bad)


def test_bad_seeds_batches_and_modes_are_refused(generator):
    with pytest.raises(InvalidArgument, match="seeds"):
        sample(generator, [1.5])
    with pytest.raises(InvalidArgument, match="seeds"):
        sample(generator, [2**64])
    with pytest.raises(InvalidArgument, match="batch"):
        sample(generator, [0], batch=0)
    generator.train()
    try:
        with pytest.raises(InvalidArgument, match="eval mode"):
            sample(generator, [0])
    finally:
        generator.eval()
    assert sample(generator, []).shape == (0, 3, 64, 64)
