"""dreamsuite.backbones: the registry, real embedded weights, layers, extractors, weights lookup.

The per-backbone tests are parametrised over every registered backbone (random weights, input
of the backbone's minimum size), so a new backbone is tested for free.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dreamsuite.backbones import (
    WEIGHTS_ENV,
    fuse_batchnorm,
    get_backbone,
    get_backbone_spec,
    list_backbones,
    weights_status,
)
from dreamsuite.errors import InvalidArgument, UnknownName, WeightsMissing
from dreamsuite.images import resize, sample_image

ALL = list_backbones()
TORCHVISION = [name for name in ALL if get_backbone_spec(name).weights_file is not None]


def _tiny_input(name: str, seed: int = 0) -> torch.Tensor:
    """A random ``[1, 3, s, s]`` image of the backbone's minimum size ``s``."""
    size = get_backbone_spec(name).min_size
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, size, size, generator=gen)


def _record_calls(modules: dict[str, nn.Module]) -> tuple[list[str], list]:
    """Forward hooks that log each call of a module by name; returns (calls, handles)."""
    calls: list[str] = []
    handles = [
        module.register_forward_hook(lambda *_, name=name: calls.append(name))
        for name, module in modules.items()
    ]
    return calls, handles


def _randomise_batchnorm(model: nn.Module, seed: int) -> int:
    """Give every BatchNorm2d non-trivial statistics and affine terms; returns how many."""
    gen = torch.Generator().manual_seed(seed)
    count = 0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
                module.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
                module.weight.copy_(torch.randn(c, generator=gen))
                module.bias.copy_(torch.randn(c, generator=gen) * 0.5)
                count += 1
    return count


# --- the real embedded weights ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "classes"),
    [("chelsea", range(281, 286)), ("coffee", [967])],
    ids=["chelsea-is-a-cat", "coffee-is-espresso"],
)
def test_embedded_weights_classify_sample_photos(lite0, sample, classes):
    image = resize(sample_image(sample), (224, 224)).clamp(0, 1)
    logits = lite0.classify(image)
    assert logits.shape == (1, 1000)
    assert int(logits.argmax()) in classes


def test_embedded_backbone_is_the_default_and_reports_embedded_weights():
    assert ALL[0] == "efficientnet_lite0"
    assert weights_status(get_backbone_spec("efficientnet_lite0")) == "embedded"


# --- every registered backbone ----------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_layer_channel_counts_match_real_activations(name):
    backbone = get_backbone(name, weights="random", device="cpu")
    layers = backbone.spec.layers
    names = [info.name for info in layers]
    assert len(set(names)) == len(names), "layer names must be unique"
    assert [info.index for info in layers] == list(range(len(layers)))
    assert backbone.spec.default_layer in names

    acts = backbone.activations(_tiny_input(name), names)
    assert set(acts) == set(names)
    sides = []
    for info in layers:
        act = acts[info.name]
        assert act.dim() == 4 and act.shape[0] == 1
        assert act.shape[1] == info.channels, info.name
        assert torch.isfinite(act).all(), info.name
        sides.append(act.shape[-1])
    # From input to output the resolution only shrinks, and the minimum size reaches the end.
    assert sides == sorted(sides, reverse=True)
    assert sides[-1] >= 1


@pytest.mark.parametrize("name", ALL)
def test_each_layer_is_the_same_asked_alone_or_with_deeper_layers(name):
    # A stored output must survive the later stages (in-place ReLUs would overwrite it).
    backbone = get_backbone(name, weights="random", device="cpu")
    names = [info.name for info in backbone.spec.layers]
    image = _tiny_input(name, seed=2)
    together = backbone.activations(image, names)
    for layer in names:
        alone = backbone.activations(image, [layer])[layer]
        torch.testing.assert_close(together[layer], alone, msg=layer)


@pytest.mark.parametrize("name", ALL)
def test_layers_are_listed_in_the_order_the_network_runs_them(name):
    backbone = get_backbone(name, weights="random", device="cpu")
    stages = dict(backbone._stages)
    in_model = {id(m) for m in backbone.model.modules()}
    # Wrapper stages (EfficientNet's stem and head) are not called by the model's own forward.
    hooked = {n: m for n, m in stages.items() if id(m) in in_model}
    assert len(hooked) >= len(stages) - 2
    calls, handles = _record_calls(hooked)
    try:
        backbone.classify(_tiny_input(name))
    finally:
        for handle in handles:
            handle.remove()
    listed = [info.name for info in backbone.spec.layers if info.name in hooked]
    assert list(dict.fromkeys(calls)) == listed


@pytest.mark.parametrize("name", ALL)
def test_extractor_stops_at_the_deepest_requested_layer(name):
    backbone = get_backbone(name, weights="random", device="cpu")
    layers = backbone.spec.layers
    shallow, deep = layers[1], layers[len(layers) // 2]
    extractor = backbone.extractor([deep.name, shallow.name])
    assert len(extractor.stages) == deep.index + 1

    calls, handles = _record_calls(dict(zip(extractor.names, extractor.stages, strict=True)))
    all_calls, all_handles = _record_calls(dict(backbone._stages))
    try:
        with torch.no_grad():
            out = extractor(backbone.prepare(_tiny_input(name)))
    finally:
        for handle in handles + all_handles:
            handle.remove()
    assert set(out) == {shallow.name, deep.name}
    assert calls == [info.name for info in layers[: deep.index + 1]]
    ran = set(all_calls)
    assert not ran & {info.name for info in layers[deep.index + 1:]}, "ran past the deepest layer"
    # The extractor's activations are the ones the full activation pass gives.
    full = backbone.activations(_tiny_input(name), [deep.name])
    torch.testing.assert_close(out[deep.name].float(), full[deep.name])


@pytest.mark.parametrize("name", ALL)
def test_fuse_batchnorm_leaves_outputs_unchanged(name):
    spec = get_backbone_spec(name)
    torch.manual_seed(0)
    model = spec.build().eval()
    had_norms = _randomise_batchnorm(model, seed=1)
    reference = copy.deepcopy(model)
    fused = fuse_batchnorm(model)
    if had_norms:
        left = [m for m in fused.modules() if isinstance(m, nn.BatchNorm2d)]
        assert not left, f"{len(left)} of {had_norms} BatchNorm2d were not folded"

    x = (_tiny_input(name) - 0.5) / 0.25
    with torch.no_grad():
        _assert_close_relative(fused(x), reference(x), "logits")
        want, got = x, x
        for (layer, ref_stage), (_, fused_stage) in zip(
            spec.stages(reference), spec.stages(fused), strict=True
        ):
            want, got = ref_stage(want), fused_stage(got)
            _assert_close_relative(got, want, layer)


def _assert_close_relative(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    scale = want.abs().max().clamp_min(1e-6)
    assert float((got - want).abs().max() / scale) < 1e-4, what


@pytest.mark.parametrize("name", ALL)
def test_unknown_layer_names_the_valid_layers(name):
    backbone = get_backbone(name, weights="random", device="cpu")
    with pytest.raises(UnknownName) as info:
        backbone.extractor(["no_such_layer"])
    message = str(info.value)
    assert "no_such_layer" in message
    for layer in backbone.spec.layers:
        assert layer.name in message


@pytest.mark.parametrize("name", ALL)
def test_unknown_channel_is_refused(name):
    spec = get_backbone_spec(name)
    last = spec.layers[-1]
    spec.check_channels(last.name, [0, last.channels - 1])  # the valid extremes pass
    for bad in (last.channels, -1):
        with pytest.raises(UnknownName) as info:
            spec.check_channels(last.name, [0, bad])
        assert str(bad) in str(info.value)
        assert f"0..{last.channels - 1}" in str(info.value)


# --- layer aliases ----------------------------------------------------------------------------

#: Keras' InceptionV3 block names and their channel counts (keras.applications.InceptionV3).
KERAS_INCEPTION_V3 = {
    "mixed0": 256, "mixed1": 288, "mixed2": 288, "mixed3": 768, "mixed4": 768, "mixed5": 768,
    "mixed6": 768, "mixed7": 768, "mixed8": 1280, "mixed9": 2048, "mixed10": 2048,
}  # fmt: skip


def test_inception_v3_answers_to_keras_names_with_keras_channel_counts():
    spec = get_backbone_spec("inception_v3")
    assert list(spec.aliases) == list(KERAS_INCEPTION_V3)
    assert spec.layer("mixed3") is spec.layer("mixed_6a")
    assert spec.canonical_layer("mixed3") == "mixed_6a"
    assert spec.canonical_layer("mixed_6a") == "mixed_6a"
    assert {alias: spec.layer(alias).channels for alias in spec.aliases} == KERAS_INCEPTION_V3
    # In the network's order: mixed0 is the first Mixed block, mixed10 the last layer.
    indices = [spec.layer(alias).index for alias in spec.aliases]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    assert spec.layer("mixed10").name == spec.layers[-1].name
    assert spec.layer("mixed_6a").aliases == ("mixed3",)


@pytest.mark.parametrize("name", ALL)
def test_aliases_name_a_layer_and_shadow_none(name):
    spec = get_backbone_spec(name)
    names = {info.name for info in spec.layers}
    for alias, target in spec.aliases.items():
        assert target in names and alias not in names, (alias, target)
        assert alias in spec.layer(target).aliases


def test_unknown_layer_lists_the_aliases_too():
    spec = get_backbone_spec("inception_v3")
    with pytest.raises(UnknownName) as info:
        spec.layer("mixed11")
    message = str(info.value)
    assert "mixed_7c" in message and "mixed3=mixed_6a" in message


def test_an_alias_picks_the_same_activations_as_the_name():
    backbone = get_backbone("inception_v3", weights="random", device="cpu")
    image = _tiny_input("inception_v3")
    by_alias = backbone.activations(image, ["mixed3"])
    assert set(by_alias) == {"mixed_6a"}  # keyed by the friendly name
    torch.testing.assert_close(by_alias["mixed_6a"],
                               backbone.activations(image, ["mixed_6a"])["mixed_6a"])


def test_unknown_backbone_lists_the_registered_ones():
    with pytest.raises(UnknownName) as info:
        get_backbone("resnet9000", weights="random")
    for name in ALL:
        assert name in str(info.value)


def test_weights_must_be_named_pretrained_or_random():
    with pytest.raises(InvalidArgument, match="pretrained"):
        get_backbone("mobilenet_v2", weights="imagenet")


# --- pretrained weights of the torchvision backbones ------------------------------------------


@pytest.mark.parametrize("name", TORCHVISION)
def test_missing_pretrained_weights_say_which_file_and_how(name, isolated_weights):
    spec = get_backbone_spec(name)
    assert weights_status(spec) == "missing"
    with pytest.raises(WeightsMissing) as info:
        get_backbone(name, device="cpu")
    message = str(info.value)
    assert spec.weights_file in message
    assert WEIGHTS_ENV in message
    assert str(isolated_weights / spec.weights_file) in message
    assert "random" in message  # the explicit way out


def test_torchvision_weights_are_never_silently_random(isolated_weights):
    assert TORCHVISION, "the paper's torchvision backbones are registered"
    for name in TORCHVISION:
        with pytest.raises(WeightsMissing):
            get_backbone(name, weights="pretrained", device="cpu")


def test_weights_file_in_the_weights_dir_is_found_and_used(isolated_weights):
    spec = get_backbone_spec("mobilenet_v2")
    torch.manual_seed(1234)  # not the seed random weights use
    source = spec.build().eval()
    _randomise_batchnorm(source, seed=5)
    torch.save(source.state_dict(), isolated_weights / spec.weights_file)

    assert weights_status(spec) == "file"
    backbone = get_backbone("mobilenet_v2", device="cpu")
    assert backbone.weights == "pretrained"

    image = _tiny_input("mobilenet_v2", seed=3)
    layer = spec.default_layer
    got = backbone.activations(image, [layer])[layer]
    x = (image - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        for stage_name, stage in spec.stages(source):
            x = stage(x)
            if stage_name == layer:
                break
    scale = x.abs().max()
    assert (got - x).abs().max() / scale < 1e-4
    random = get_backbone("mobilenet_v2", weights="random", device="cpu")
    other = random.activations(image, [layer])[layer]
    assert (other - x).abs().max() / scale > 1e-2, "random weights would match too: test is void"


def test_unreadable_weights_file_is_a_clear_error(isolated_weights):
    spec = get_backbone_spec("googlenet")
    (isolated_weights / spec.weights_file).write_bytes(b"not a state dict")
    assert weights_status(spec) == "file"
    with pytest.raises(WeightsMissing) as info:
        get_backbone("googlenet", device="cpu")
    assert spec.weights_file in str(info.value) and "cannot be read" in str(info.value)


def test_weights_file_in_the_torch_hub_cache_is_found(isolated_weights, tmp_path):
    spec = get_backbone_spec("googlenet")
    checkpoints = tmp_path / "torch_home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / spec.weights_file).write_bytes(b"")
    assert weights_status(spec) == "file"


def test_another_weights_dir_in_the_same_process_loads_its_own_weights(
        isolated_weights, tmp_path, monkeypatch):
    spec = get_backbone_spec("mobilenet_v2")
    image = _tiny_input("mobilenet_v2", seed=3)
    layer = spec.default_layer
    outputs = []
    for seed in (11, 12):
        folder = tmp_path / f"weights-{seed}"
        folder.mkdir()
        torch.manual_seed(seed)
        torch.save(spec.build().state_dict(), folder / spec.weights_file)
        monkeypatch.setenv(WEIGHTS_ENV, str(folder))
        outputs.append(get_backbone("mobilenet_v2", device="cpu").activations(image, [layer])[layer])
    assert not torch.allclose(outputs[0], outputs[1]), "the second folder's weights were ignored"
