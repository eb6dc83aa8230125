"""The fused, in-place fast paths of the extractors compute the reference network's maths.

The dream engine only needs ``d objective / d pixels``: these tests compare the optimised
extractor's input gradient (channels_last, BatchNorm folded, fused conv + activation, in-place
gradients, cropped instead of padded convolutions) with the plain reference network's
(``spec.build()``'s own forwards, BatchNorm unfused, ``(x - mean) / std``), so a speed-up
that changes the maths fails here. That comparison runs in float64, where rounding is ~1e-12
and rtol 1e-4 cannot be missed by accident: in float32 a different summation order alone (the
layout) flips an occasional ReLU whose input is within rounding of 0, which moves a deep
layer's input gradient by up to ~1e-3 whatever the code. float32 itself, with oneDNN's fused
kernels, is compared with the same backbone's unfused stages.
"""

from __future__ import annotations

from functools import cache

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dreamsuite.backbones import Backbone, get_backbone, get_backbone_spec, list_backbones
from dreamsuite.backbones.efficientnet_lite import FastMBConv, FastStem, SameConv2d, _crop
from dreamsuite.backbones.fused import ConvReLU, FastConv, conv_act, fast_stages
from dreamsuite.backbones.loaded import FeatureExtractor, Normalize, _load
from dreamsuite.backbones.registry import load_state_dict

ALL = list_backbones()
#: (backbone, weights, batch): every backbone once, the benchmarked two with a batch as well.
CASES = [(name, "random", 1) for name in ALL] + [
    ("efficientnet_lite0", "pretrained", 1),
    ("efficientnet_lite0", "pretrained", 2),
    ("vgg16", "random", 2),
]
IDS = [f"{name}-{weights}-batch{batch}" for name, weights, batch in CASES]


@cache
def _reference(name: str, weights: str) -> nn.Module:
    """The plain network with the weights ``get_backbone`` loads (same seed for random ones),
    in float64 and channels_last (layout changes no maths, and NCHW float64 depthwise
    convolutions are slow on the CPU)."""
    spec = get_backbone_spec(name)
    if weights == "pretrained":
        model = spec.build()
        model.load_state_dict(load_state_dict(spec))
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = spec.build()
    return model.eval().requires_grad_(False).double().to(memory_format=torch.channels_last)


@cache
def _float64_backbone(name: str, weights: str) -> Backbone:
    """A private copy of what ``get_backbone`` loads (folded, channels_last), in float64."""
    backbone = _load(get_backbone_spec(name), weights, torch.device("cpu"))
    backbone.model.double()
    backbone.normalize.double()
    return backbone


def _objective(acts: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per image a different weight, so a mixed-up batch would show."""
    total = 0
    for act in acts.values():
        per_image = act.pow(2).mean((1, 2, 3))
        total = total + (per_image * torch.arange(1, len(per_image) + 1)).sum()
    return total


def _reference_gradient(name: str, weights: str, layers: list[str], x: torch.Tensor):
    spec = get_backbone_spec(name)
    stages = spec.stages(_reference(name, weights))
    last = max(spec.layer(layer).index for layer in layers)
    x = x.double().contiguous(memory_format=torch.channels_last).requires_grad_()
    mean = torch.tensor(spec.mean, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=x.dtype).view(1, 3, 1, 1)
    h = (x - mean) / std
    acts = {}
    for layer, stage in stages[: last + 1]:
        h = stage(h)
        if layer in layers:
            acts[layer] = h.clone()  # VGG's in-place ReLUs would overwrite a stored conv output
    return torch.autograd.grad(_objective(acts), x)[0], acts


def _assert_close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    got, want = got.detach(), want.detach()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()),
                               msg=lambda m: f"{what}: {m}")


def _layer_sets(name: str) -> list[list[str]]:
    spec = get_backbone_spec(name)
    names = [info.name for info in spec.layers]
    sets = [[names[1], spec.default_layer]]
    if name == "vgg16":  # a wanted convolution keeps its pre-ReLU output (no fusion there)
        sets.append(["conv3_1", "relu4_3", "pool2"])
    return sets


def _images(name: str, batch: int) -> list[torch.Tensor]:
    """Small even and odd-by-even sizes: TensorFlow's "same" padding is uneven on even sides
    (40 px meets even sides at every EfficientNet stride, 43x48 odd and even ones)."""
    side = max(get_backbone_spec(name).min_size, 40)
    gen = torch.Generator().manual_seed(batch)
    return [torch.rand(batch, 3, *size, generator=gen)
            for size in [(side, side), (side + 3, side + 8)]]


@pytest.mark.parametrize(("name", "weights", "batch"), CASES, ids=IDS)
def test_input_gradient_is_the_reference_networks(name, weights, batch):
    backbone = _float64_backbone(name, weights)
    for image in _images(name, batch):
        for layers in _layer_sets(name):
            want, want_acts = _reference_gradient(name, weights, layers, image)
            x = image.double().contiguous(memory_format=torch.channels_last).requires_grad_()
            acts = backbone.extractor(layers)(x)
            where = f"{name} {layers} at {list(image.shape)}"
            for layer in layers:
                _assert_close(acts[layer], want_acts[layer], f"{where}: {layer}")
            (got,) = torch.autograd.grad(_objective(acts), x)
            _assert_close(got, want, f"{where}: d/dx")


@pytest.mark.parametrize(("name", "weights"),
                         [("vgg16", "random"), ("efficientnet_lite0", "pretrained")])
@pytest.mark.parametrize("batch", [1, 2])
def test_float32_fast_stages_match_the_unfused_stages(name, weights, batch):
    """oneDNN's fused kernels round like the separate steps (same layout, same weights)."""
    backbone = get_backbone(name, weights=weights, device="cpu")
    for image in _images(name, batch):
        for layers in _layer_sets(name):
            last = max(backbone.spec.layer(layer).index for layer in layers)
            plain = FeatureExtractor(backbone.normalize, backbone._stages[: last + 1], set(layers))
            grads, outs = [], []
            for extractor in (backbone.extractor(layers), plain):
                x = backbone.prepare(image).requires_grad_()
                acts = extractor(x)
                outs.append(acts)
                grads.append(torch.autograd.grad(_objective(acts), x)[0])
            where = f"{name} {layers} at {list(image.shape)}"
            for layer in layers:
                _assert_close(outs[0][layer], outs[1][layer], f"{where}: {layer}")
            _assert_close(grads[0], grads[1], f"{where}: d/dx")


def test_the_standard_workloads_run_the_fused_stages():
    vgg = get_backbone("vgg16", weights="random", device="cpu").extractor(["relu4_3"])
    assert sum(isinstance(stage, ConvReLU) for stage in vgg.stages) == 10
    assert not any(isinstance(stage, nn.ReLU) for stage in vgg.stages)
    lite = get_backbone("efficientnet_lite0", device="cpu").extractor(["block_10"])
    assert isinstance(lite.stages[0], FastStem)
    assert all(isinstance(stage, FastMBConv) for stage in lite.stages[1:])


def test_a_wanted_convolution_is_not_fused_with_its_relu():
    stages = get_backbone("vgg16", weights="random", device="cpu")._stages[:9]
    fast = dict(fast_stages(stages, {"conv2_1"}))
    assert isinstance(fast["conv2_1"], FastConv) and type(fast["relu2_1"]) is nn.ReLU
    assert fast["conv2_1"].conv is stages[5][1]
    assert isinstance(fast["conv2_2"], ConvReLU) and isinstance(fast["relu2_2"], nn.Identity)


# --- conv_act ----------------------------------------------------------------------------------


def _conv(cin: int, cout: int, kernel: int, stride: int, groups: int, layout) -> nn.Conv2d:
    torch.manual_seed(cin * 100 + cout + kernel + stride + groups)
    conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups)
    return conv.requires_grad_(False).to(memory_format=layout)


def _plain(conv: nn.Conv2d, x: torch.Tensor, act: str) -> torch.Tensor:
    y = conv(x)
    return {"relu": F.relu, "relu6": F.relu6, "none": lambda t: t}[act](y)


@pytest.mark.parametrize("act", ["relu", "relu6", "none"])
@pytest.mark.parametrize(("cin", "cout", "kernel", "stride", "groups"),
                         [(3, 16, 3, 1, 1), (8, 8, 5, 2, 8), (8, 16, 1, 1, 1)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last],
                         ids=["nchw", "nhwc"])
@pytest.mark.parametrize("batch", [1, 3])
def test_conv_act_is_act_of_conv_with_the_same_input_gradient(act, cin, cout, kernel, stride,
                                                              groups, layout, batch):
    conv = _conv(cin, cout, kernel, stride, groups, layout)
    x0 = (torch.randn(batch, cin, 13, 14) * 3).contiguous(memory_format=layout)
    g = torch.randn_like(_plain(conv, x0, act))
    x = x0.clone().requires_grad_()
    y = conv_act(conv, x, act)
    (got,) = torch.autograd.grad(y, x, g)
    x = x0.clone().requires_grad_()
    want_y = _plain(conv, x, act)
    (want,) = torch.autograd.grad(want_y, x, g)
    torch.testing.assert_close(y, want_y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act", ["relu", "relu6"])
def test_gradients_that_others_hold_are_never_overwritten(act):
    conv = _conv(4, 6, 3, 1, 1, torch.channels_last)
    gen = torch.Generator().manual_seed(0)
    x0 = (torch.randn(2, 4, 9, 9, generator=gen) * 4).contiguous(memory_format=torch.channels_last)
    w0 = torch.randn(2, 6, 9, 9, generator=gen)
    g0 = torch.randn(2, 6, 9, 9, generator=gen).contiguous(memory_format=torch.channels_last)

    def grads(fn):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        # The sum hands one gradient tensor to both y's node and w's; the caller holds g.
        out = fn(conv, x, act) + w
        g = g0.clone()
        kept = g.clone()
        gx, gw = torch.autograd.grad(out, (x, w), g)
        assert torch.equal(g, kept), "the caller's grad_outputs were modified"
        return gx, gw

    for got, want in zip(grads(conv_act), grads(_plain), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_an_output_used_twice_gets_both_gradients():
    conv = _conv(4, 6, 3, 1, 1, torch.channels_last)
    x0 = torch.randn(1, 4, 9, 9).contiguous(memory_format=torch.channels_last)
    grads = []
    for fn in (conv_act, _plain):
        x = x0.clone().requires_grad_()
        y = fn(conv, x, "relu")
        grads.append(torch.autograd.grad(y.pow(2).sum() + (y * 3).sum(), x)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:TF32 acceleration")
def test_conv_act_falls_back_to_plain_ops_when_it_must():
    conv = _conv(4, 6, 3, 1, 1, torch.channels_last)
    x = torch.randn(1, 4, 9, 9)
    want = F.relu(conv(x))
    with torch.backends.mkldnn.flags(enabled=False):
        torch.testing.assert_close(conv_act(conv, x, "relu"), want)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = conv_act(conv, x, "relu")
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got, F.relu(conv(x)))
    conv.weight.requires_grad_(True)  # weights that want gradients get them
    conv_act(conv, x, "relu").sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    with torch.no_grad():
        torch.testing.assert_close(conv_act(conv, x, "relu"), want)
    with pytest.raises(ValueError, match="unknown activation"):
        conv_act(conv, x, "gelu")


@pytest.mark.parametrize("size", [(8, 8), (9, 9), (10, 7), (16, 17)])
@pytest.mark.parametrize(("cin", "cout", "kernel"), [(3, 32, 3), (16, 16, 3), (16, 16, 5)])
def test_same_padding_without_padding_the_input_is_tensorflows(size, cin, cout, kernel):
    torch.manual_seed(0)
    conv = SameConv2d(cin, cout, kernel, 2, groups=cin if cin == cout else 1)
    conv.requires_grad_(False).to(memory_format=torch.channels_last)
    x = torch.randn(2, cin, *size).contiguous(memory_format=torch.channels_last)
    want = F.relu6(conv(x))  # pads the input unevenly, as TensorFlow does
    y, window = conv.forward_window(x, "relu6")
    got = _crop(y, window)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_normalize_with_one_mean_and_std_is_bitwise_the_tensor_formula():
    norm = Normalize((127 / 255,) * 3, (128 / 255,) * 3)
    x = torch.rand(2, 3, 17, 19).contiguous(memory_format=torch.channels_last)
    assert torch.equal(norm(x), (x - norm.mean) / norm.std)
    per_channel = Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert torch.equal(per_channel(x), (x - per_channel.mean) / per_channel.std)
