"""dream2dream: the one-pass network (any size, conditions, batch invariance, its cost), the
perceptual distance, and training on (photo, dream) pairs as a job (checkpoints, previews,
evaluation, resume), in-process on tiny data sets."""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch

from dreamsuite.artifacts import open_store
from dreamsuite.errors import InvalidArgument
from dreamsuite.gan import dream2dream
from dreamsuite.gan.checkpoint import load_latest
from dreamsuite.gan.data import write_dataset
from dreamsuite.gan.dream2dream import (
    DEFAULT_WIDTH,
    Dream2Dream,
    condition_index,
    conv_macs,
    export_state,
    from_export,
    gmac,
    one_pass,
    one_pass_batch,
)
from dreamsuite.gan.models import get_model_kind
from dreamsuite.gan.paired import (
    LOSSES,
    PERCEPTUAL_WEIGHT,
    PIXEL_WEIGHT,
    PairSet,
    PairTrainer,
    evaluate_pairs,
    load_dream2dream,
)
from dreamsuite.gan.perceptual import PerceptualDistance, stage_layers
from dreamsuite.gan.records import read_model
from dreamsuite.gan.sample import load_generator
from dreamsuite.gan.train import TrainConfig, run
from dreamsuite.images import load_image, sample_image

SIZE = 24


def fake_dream(photo: torch.Tensor, frequency: float) -> torch.Tensor:
    """A stand-in for a dream: the photo dimmed, with stripes whose direction is ``frequency``."""
    h, w = photo.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    stripes = 0.5 + 0.5 * torch.sin((xx + frequency * yy) * 0.8)
    return (0.7 * photo + 0.3 * stripes).clamp(0, 1)


def paired_dataset(store, dataset_id: str, frequency: float, *, train: int = 4, holdout: int = 2,
                   size: int = SIZE, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    photos = [torch.rand(3, size, size, generator=g) for _ in range(train + holdout)]
    write_dataset(store, dataset_id, {
        "train": [(f"p{i}", x, fake_dream(x, frequency)) for i, x in enumerate(photos[:train])],
        "holdout": [(f"h{i}", x, fake_dream(x, frequency)) for i, x in enumerate(photos[train:])],
    }, size, dream_config={"frequency": frequency})


@pytest.fixture
def store(tmp_path):
    store = open_store(tmp_path.as_uri())
    paired_dataset(store, "da", 1.0)
    paired_dataset(store, "db", -1.0, seed=1)
    return store


def _perturbed(width: int = 4, conditions: int = 2, seed: int = 0) -> Dream2Dream:
    """A network whose residual and conditions are not zero (as after training)."""
    torch.manual_seed(seed)
    net = Dream2Dream(width=width, conditions=conditions)
    with torch.no_grad():
        for p in (net.tail.weight, net.tail.bias, net.film.weight):
            p.normal_(0, 0.3)
    return net.eval()


# --- the network --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(8, 8), (13, 29), (64, 48), (31, 9)])
def test_any_size_in_gives_the_same_size_out_in_range(shape):
    net = _perturbed()
    image = torch.rand(3, *shape)
    out = one_pass(net, image, 1)
    assert out.shape == image.shape
    assert out.min() >= 0 and out.max() <= 1


def test_an_untrained_network_returns_the_photo():
    image = torch.rand(3, 20, 28)
    assert torch.equal(one_pass(Dream2Dream(width=4, conditions=3).eval(), image, 2), image)


def test_conditions_give_different_dreams_and_batches_change_nothing():
    net = _perturbed(conditions=3)
    a, b = torch.rand(3, 32, 40), torch.rand(3, 32, 40)
    alone = [one_pass(net, a, 0), one_pass(net, a, 2), one_pass(net, b, 1)]
    together = one_pass_batch(net, torch.stack([a, a, b]), [0, 2, 1])
    for one, batched in zip(alone, together, strict=True):
        torch.testing.assert_close(one, batched, atol=1e-5, rtol=0)
    assert (alone[0] - alone[1]).abs().mean() > 1e-3


@pytest.mark.parametrize("shape", [(72, 100), (61, 130)])
def test_tiles_give_the_pixels_of_one_pass_over_the_whole(shape, monkeypatch):
    net = _perturbed(conditions=2, seed=3)
    image = torch.rand(3, *shape, generator=torch.Generator().manual_seed(4))
    whole = one_pass(net, image, 1, tile=256)
    tiled = one_pass(net, image, 1, tile=32)  # 3 x 4 or 2 x 5 tiles, edges included
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)
    # The margin is what makes it exact: without context the tile seams show.
    monkeypatch.setattr(dream2dream, "receptive_margin", lambda model: 0)
    inner = image[:, :64, :96]
    seamed = one_pass(net, inner, 1, tile=32)
    assert (seamed - one_pass(net, inner, 1, tile=256)).abs().max() > 1e-3


@pytest.mark.parametrize("shape", [(8, 8), (13, 29), (64, 48)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_fast_inference_path_computes_what_the_modules_do(shape, layout):
    """Inference on the CPU (fused ReLU, one-copy padding and upsampling) gives the pixels of
    the modules' own path, which training takes, to float rounding."""
    net = _perturbed(width=4, conditions=2, seed=5)
    with torch.no_grad():
        for p in net.parameters():  # every layer away from its start
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.rand(2, 3, *shape, generator=torch.Generator().manual_seed(6))
    x = x.contiguous(memory_format=layout)
    conditions = torch.tensor([0, 1])
    with torch.no_grad():
        assert dream2dream._inference_fast(x, net.stem.weight)
        fast = net(x, conditions, clamp=False)
    with torch.enable_grad():
        assert not dream2dream._inference_fast(x, net.stem.weight)
        reference = net(x, conditions, clamp=False).detach()
    assert (reference - x).abs().mean() > 1e-2  # a residual worth comparing
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)


def test_a_refused_fused_op_falls_back_to_the_modules_once(monkeypatch):
    net = _perturbed(width=4, conditions=2, seed=5)
    x = torch.rand(1, 3, 16, 20, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = net(x, torch.tensor([1]))

    def refuse(*args, **kwargs):
        raise RuntimeError("no such oneDNN primitive")

    monkeypatch.setattr(dream2dream, "_conv_fast", refuse)
    monkeypatch.setattr(dream2dream, "_FAST_REFUSED", [])
    with torch.no_grad():
        torch.testing.assert_close(net(x, torch.tensor([1])), expected, atol=1e-5, rtol=1e-5)
        assert dream2dream._FAST_REFUSED == ["no such oneDNN primitive"]
        net(x, torch.tensor([1]))  # not tried again
    assert len(dream2dream._FAST_REFUSED) == 1


def test_out_of_memory_on_the_fused_path_is_raised_and_keeps_the_path(monkeypatch):
    """Out of memory is load, not a oneDNN refusal: it reaches the caller (the handler then
    retries photo by photo), and the fused path stays on for the next call."""
    net = _perturbed(width=4, conditions=2, seed=5)
    x = torch.rand(1, 3, 16, 20, generator=torch.Generator().manual_seed(7))

    def no_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1")

    monkeypatch.setattr(dream2dream, "_conv_fast", no_memory)
    monkeypatch.setattr(dream2dream, "_FAST_REFUSED", [])
    with torch.no_grad(), pytest.raises(RuntimeError, match="can't allocate memory"):
        net(x, torch.tensor([1]))
    assert dream2dream._FAST_REFUSED == []


def test_bad_inputs_and_conditions_are_refused():
    net = _perturbed(conditions=2)
    with pytest.raises(InvalidArgument, match="at least 8 px"):
        one_pass(net, torch.rand(3, 4, 40))
    with pytest.raises(InvalidArgument, match="condition 2"):
        one_pass(net, torch.rand(3, 16, 16), 2)
    with pytest.raises(InvalidArgument, match="eval mode"):
        one_pass(net.train(), torch.rand(3, 16, 16))


def test_condition_by_name_or_index():
    names = ["abc", "def"]
    assert condition_index(None, names) == 0
    assert [condition_index(c, names) for c in ("def", "1", 1, " 0 ", "abc")] == [1, 1, 1, 0, 0]
    for bad in ("xyz", 2, -1, "2", "²", "9" * 5000, "-"):
        with pytest.raises(InvalidArgument, match="0=abc, 1=def"):
            condition_index(bad, names)


def test_cost_is_the_sum_of_the_convolutions():
    w, b = 4, 3
    net = Dream2Dream(width=w, conditions=1, blocks=b)
    full, half, quarter = 512 * 512, 256 * 256, 128 * 128
    expected = 9 * (full * 3 * w + half * w * 2 * w + quarter * 2 * w * 4 * w
                    + b * 2 * quarter * (4 * w) ** 2 + half * 4 * w * 2 * w + full * 2 * w * w
                    + full * w * 3)
    assert conv_macs(net) == expected
    cost = gmac(Dream2Dream(width=DEFAULT_WIDTH))
    assert 5 < cost < 12  # the default: ~8 GMAC at 512 px


def test_export_round_trips_to_the_same_pixels():
    net = _perturbed(conditions=2)
    model, names = from_export(export_state(net, ["x", "y"], step=3))
    image = torch.rand(3, 17, 23)
    assert names == ["x", "y"]
    assert torch.equal(one_pass(model, image, 1), one_pass(net, image, 1))
    with pytest.raises(InvalidArgument, match="dream2dream export"):
        from_export({"format": 99})


# --- the perceptual distance --------------------------------------------------------------------


def test_perceptual_distance_is_zero_for_equal_images_and_uses_the_stages():
    distance = PerceptualDistance("efficientnet_lite2", device="cpu")
    assert distance.layers == tuple(stage_layers(distance.net.spec))
    assert distance.layers[-1] == "block_20" and "block_10" in distance.layers
    cat = sample_image("chelsea", size=48)[:, :, :48]
    same = distance(cat[None], cat[None])
    other = distance(cat[None], fake_dream(cat, 1.0)[None])
    assert same.item() < 1e-3 < other.item() <= 2


# --- training ------------------------------------------------------------------------------------


def _config(store, **overrides) -> TrainConfig:
    fields = dict(job_id="d2d", artifacts=store.url, dataset="da", datasets=("da", "db"),
                  model="dream2dream", steps=4, batch=4, width=4, checkpoint_every=2,
                  lr=3e-3, crop=16, deterministic=True, preview_seeds=3, eval_every=-1)
    return TrainConfig(**{**fields, **overrides})


@pytest.mark.parametrize("overrides, match", [
    ({"datasets": ("db", "da")}, "^datasets: the first must be dataset"),
    ({"datasets": ("da", "da")}, "^datasets: a data set is named twice"),
    ({"datasets": ("da", "a/b")}, "^datasets: "),
    ({"crop": 4}, "^crop: "),
    ({"model": "dcgan64", "crop": 0}, "^datasets: a dcgan64 trains on one data set"),
    ({"model": "dcgan64", "datasets": (), "crop": 16}, "^crop: only dream2dream"),
    ({"loss": "johnson"}, "^loss: 'johnson' is not one of paired, pix2pix, objective"),
    ({"model": "dcgan64", "datasets": (), "crop": 0, "loss": "pix2pix"},
     "^loss: only dream2dream"),
])
def test_config_refuses_bad_data_set_lists_and_crops(store, overrides, match):
    with pytest.raises(InvalidArgument, match=match):
        _config(store, **overrides).validate()


def test_config_round_trips_through_json(store):
    config = _config(store).validate()
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.dataset_ids == ["da", "db"]


def test_a_two_condition_job_checkpoints_previews_evaluates_and_records(store):
    events = []
    assert run(_config(store, eval_every=0), store, emit=events.append) == "done"
    json.dumps(events, allow_nan=False)
    kinds = [e["event"] for e in events]
    assert kinds.count("checkpoint") == 2 and kinds.count("preview") == 2
    assert kinds[-2:] == ["evaluation", "done"]
    progress = [e for e in events if e["event"] == "progress"]
    assert all(e["d_loss"] == 0 and e["g_loss"] > 0 and "perceptual_loss" in e for e in progress)
    metrics = events[-2]["metrics"]
    for name in ("l1_output_dream", "l1_photo_dream", "perceptual_output_dream",
                 "perceptual_photo_dream", "perceptual_ratio", "perceptual_ratio/0",
                 "perceptual_ratio/1", "style_output_dream", "style_photo_dream", "style_ratio"):
        assert math.isfinite(metrics[name]), name
    assert metrics["pairs"] == 4 and metrics["holdout"] == 1
    # the preview: 3 rows (conditions take turns) of photo | dream | output
    preview = load_image(store.get("jobs/d2d/previews/step-00000004.png"))
    assert preview.shape == (3, 2 + 3 * (SIZE + 2), 2 + 3 * (SIZE + 2))
    record = read_model(store, "d2d")
    assert record["kind"] == "dream2dream" and record["finished"] and record["size"] == SIZE
    assert record["datasets"] == ["da", "db"] and record["crop"] == 16
    assert record["loss"] == "paired"
    assert [(c["index"], c["name"], c["dream_config"]) for c in record["conditions"]] == [
        (0, "da", {"frequency": 1.0}), (1, "db", {"frequency": -1.0})]
    model, info = load_dream2dream(store, record["checkpoint"], "cpu")
    assert model.conditions == 2 and info["step"] == 4
    with pytest.raises(InvalidArgument, match="export it"):
        load_generator(store, record["checkpoint"], "cpu")


@pytest.mark.parametrize("loss", ["paired", "pix2pix"])
def test_a_stopped_job_resumes_to_the_weights_of_one_never_stopped(store, loss):
    config = functools.partial(_config, store, loss=loss, crop=24)
    run(config(job_id="straight"), store)
    calls = iter(range(100))
    assert run(config(job_id="stopped"), store,
               should_stop=lambda: next(calls) >= 3) == "stopped"
    assert load_latest(store, "stopped")["step"] == 3
    assert run(config(job_id="stopped"), store) == "done"
    a, b = load_latest(store, "straight"), load_latest(store, "stopped")
    keys = ("G", "G_ema", "D") if loss == "pix2pix" else ("G", "G_ema")
    assert ("D" in a) == (loss == "pix2pix") and a["loss"] == loss
    for key in keys:
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name}"
    assert a["rank_rng"]["crop"][0].equal(b["rank_rng"]["crop"][0])
    with pytest.raises(InvalidArgument, match="^datasets: job 'stopped' was started"):
        run(config(job_id="stopped", steps=6, datasets=("da",)), store)
    other = "paired" if loss == "pix2pix" else "pix2pix"
    with pytest.raises(InvalidArgument, match=f"^loss: job 'stopped' was started with "
                                              f"loss='{loss}', not '{other}'"):
        run(config(job_id="stopped", steps=6, loss=other), store)


def test_pix2pix_trains_a_patch_discriminator_beside_the_network(store):
    events = []
    assert run(_config(store, loss="pix2pix", crop=24, steps=3, eval_every=-1), store,
               emit=events.append) == "done"
    progress = [e for e in events if e["event"] == "progress"]
    # D's least-squares loss is reported and the network's loss holds the adversarial term
    assert progress and all(e["d_loss"] > 0 and -1 <= e["d_real_sign"] <= 1 for e in progress)
    for e in progress:
        paired = PIXEL_WEIGHT * e["pixel_loss"] + PERCEPTUAL_WEIGHT * e["perceptual_loss"]
        assert e["g_loss"] > paired
    assert read_model(store, "d2d")["loss"] == "pix2pix"
    state = load_latest(store, "d2d")
    assert state["loss"] == "pix2pix" and any(k.startswith("net.") for k in state["D"])
    with pytest.raises(InvalidArgument, match="^crop: pix2pix's patch discriminator needs"):
        run(_config(store, job_id="small", loss="pix2pix", crop=16), store)


def test_the_objective_loss_grows_the_dream_objective_without_the_dreams(tmp_path):
    """Johnson et al.'s training: the network learns to raise its condition's dream objective
    (gain 1 for the photo) although the data set's dreams are replaced by the photos."""
    from dreamsuite.engine import DreamConfig, Maplist, parse_layer_spec
    from dreamsuite.gan.dream_objective import DreamObjectiveGain

    store = open_store(tmp_path.as_uri())
    config = DreamConfig(maplist=Maplist([parse_layer_spec("block_3")])).to_dict()
    g = torch.Generator().manual_seed(0)
    photos = [torch.rand(3, 32, 32, generator=g) for _ in range(3)]
    # the "dreams" are the photos: nothing to learn from the pairs
    write_dataset(store, "obj", {"train": [(f"p{i}", x, x) for i, x in enumerate(photos[:2])],
                                 "holdout": [("h", photos[2], photos[2])]}, 32,
                  dream_config=config)
    gain = DreamObjectiveGain([config])
    photo = photos[2][None]
    assert float(gain(photo, photo, torch.zeros(1, dtype=torch.long))) == pytest.approx(1.0)
    events = []
    run(TrainConfig(job_id="obj", artifacts=store.url, dataset="obj", model="dream2dream",
                    loss="objective", steps=12, batch=2, width=4, crop=32, lr=1e-2,
                    checkpoint_every=12, eval_every=-1, deterministic=True), store,
        emit=events.append)
    model, info = load_dream2dream(store, read_model(store, "obj")["checkpoint"], "cpu")
    assert info["loss"] == "objective"
    # the raw network (not its slow EMA) after 12 steps dreams: the objective went up
    state = load_latest(store, "obj")
    net = Dream2Dream(width=4, conditions=1)
    net.load_state_dict(state["G"])
    out = one_pass(net.eval(), photos[2])[None]
    assert float(gain(photo, out, torch.zeros(1, dtype=torch.long))) > 1.05
    # a data set whose dream config is no dream config cannot train on its objective
    with pytest.raises(InvalidArgument, match="^loss: the objective loss needs"):
        DreamObjectiveGain([{"frequency": 1.0}])


def test_the_cli_offers_the_trainers_losses():
    from dreamsuite.cli import build_parser

    parser = build_parser()
    train = parser.parse_args(["gan", "train", "da", "--model", "dream2dream", "--loss",
                               "pix2pix"])
    assert train.loss == "pix2pix"
    actions = {a.dest: a for a in _subparser(parser, "gan", "train")._actions}
    assert tuple(actions["loss"].choices) == LOSSES


def _subparser(parser, *names):
    import argparse

    for name in names:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def test_the_grpc_request_carries_the_loss():
    from dreamsuite.v1 import gan_pb2
    from services.gan.convert import train_config

    request = gan_pb2.StartTrainingRequest(dataset="da", model="dream2dream", loss="pix2pix")
    assert train_config(request)["loss"] == "pix2pix"
    assert "loss" not in train_config(gan_pb2.StartTrainingRequest(dataset="da"))


@pytest.mark.slow
def test_one_pair_is_learned_in_50_steps():
    photo = sample_image("chelsea", size=32)[:, :, :32]
    dream = fake_dream(photo, 1.0)
    u8 = lambda x: x.mul(255).round().to(torch.uint8)[None]  # noqa: E731
    pairs = PairSet(u8(photo), u8(dream), torch.zeros(1, dtype=torch.long))
    torch.manual_seed(0)
    trainer = PairTrainer(get_model_kind("dream2dream"), pairs, [{"name": "one"}], width=8,
                          batch=2, lr=3e-3, ema_decay=0.9, crop=32, seed=0,
                          device=torch.device("cpu"))
    losses = []
    for _ in range(50):
        trainer.train_step()
        losses.append(trainer.pop_stats()["g_loss"])
    assert sum(losses[-5:]) < 0.75 * sum(losses[:5])
    metrics = evaluate_pairs(trainer.G_ema, pairs)
    assert metrics["l1_output_dream"] < metrics["l1_photo_dream"]
    assert metrics["perceptual_output_dream"] < metrics["perceptual_photo_dream"]


@pytest.mark.slow
def test_the_seed_floor_is_zero_for_the_same_seed_and_positive_for_another():
    """The optimisation scored like a one-pass network: dreaming a pair's photo again with its
    own seed gives its dream (ratio 0, up to 8-bit rounding); another seed gives another."""
    from dreamsuite.engine import DreamConfig, dream
    from dreamsuite.gan.paired import seed_floor

    config = DreamConfig(octaves=1, steps=3, seed=5, jitter=8)
    u8 = lambda x: x.mul(255).round().to(torch.uint8)  # noqa: E731
    photos = [u8(sample_image(name, size=32)[:, :32, :32]).float() / 255
              for name in ("chelsea", "coffee", "astronaut")]  # 8-bit, as stored
    dreams = [dream(p, config, device="cpu").image.clamp(0, 1) for p in photos]
    pairs = PairSet(torch.stack([u8(p) for p in photos]), torch.stack([u8(d) for d in dreams]),
                    torch.zeros(3, dtype=torch.long))
    seen = []
    same = seed_floor(pairs, [config.to_dict()], count=2, seed_offset=0, device="cpu",
                      progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 2), (2, 2)] and same["pairs"] == 2
    assert same["l1_ratio"] < 0.02 and same["perceptual_ratio"] < 0.05
    assert same["style_ratio"] < 0.05
    other = seed_floor(pairs, [config.to_dict()], count=3, device="cpu")
    assert other["pairs"] == 3
    assert 0.1 < other["perceptual_ratio"] < 2 and other["l1_ratio"] > 0.1
    assert 0 < other["style_ratio"] < 2
    with pytest.raises(InvalidArgument, match="cannot be dreamed again"):
        seed_floor(pairs, [{"frequency": 1.0}], device="cpu")
