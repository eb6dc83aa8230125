"""A batch's samples come out of the extractors bit for bit as they do alone, on every backbone:
the convolutions oneDNN would round differently in a batch run sample by sample."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from dreamsuite.backbones import get_backbone, invariant

CONV_BACKWARD = torch.ops.aten.convolution_backward.default

# (in, out, side): 1x1 convolutions whose backward to the input oneDNN blocks by the whole
# batch at small sides on common x86 CPUs (EfficientNet-Lite0's expand convolutions at 4-8 px).
CANDIDATES = [(112, 672, 8), (80, 480, 4), (80, 480, 8), (112, 672, 4), (112, 480, 4)]


def _backward_args(cin: int, cout: int, side: int, batch: int, seed: int) -> tuple:
    gen = torch.Generator().manual_seed(seed)
    grad = torch.randn(batch, cout, side, side, generator=gen)
    grad = grad.contiguous(memory_format=torch.channels_last)
    x = torch.empty(batch, cin, side, side).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(cout, cin, 1, 1, generator=gen).contiguous(
        memory_format=torch.channels_last)
    return (grad, x, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
            [True, False, False])


def _each_alone(func, args: tuple, batch: int) -> torch.Tensor:
    return torch.cat([func(args[0][i:i + 1], args[1][i:i + 1], *args[2:])[0]
                      for i in range(batch)])


def test_call_gives_each_sample_its_result_alone_where_the_batch_would_round_differently():
    varying = []
    for cin, cout, side in CANDIDATES:
        args = _backward_args(cin, cout, side, 3, seed=cin + side)
        if not torch.equal(CONV_BACKWARD(*args)[0], _each_alone(CONV_BACKWARD, args, 3)):
            varying.append((cin, cout, side))
    if not varying:
        pytest.skip("this CPU's oneDNN rounds none of the candidates differently in a batch")
    for cin, cout, side in varying:
        args = _backward_args(cin, cout, side, 3, seed=cin + side + 1)  # other data
        with invariant.exact_batches():
            got = invariant.call(CONV_BACKWARD, *args)[0]
        assert torch.equal(got, _each_alone(CONV_BACKWARD, args, 3))
        assert not torch.equal(invariant.call(CONV_BACKWARD, *args)[0], got)  # outside: one call
        assert any(key[0] is CONV_BACKWARD and key[2][0] == (3, cout, side, side)
                   for key in invariant.split_signatures())


@pytest.mark.parametrize("varies", [False, True])
def test_a_batch_stays_one_call_unless_its_check_found_it_rounding_differently(
        monkeypatch, varies):
    calls = []
    real = torch.ops.aten.convolution.default

    def counting(*args):
        calls.append(args[0].shape[0])
        return real(*args)

    monkeypatch.setitem(invariant._OPS, counting, ((0,), False))
    monkeypatch.setattr(invariant, "_varies", lambda *args: varies)
    x = torch.randn(4, 8, 16, 16 + varies).contiguous(memory_format=torch.channels_last)
    args = (x, torch.randn(8, 1, 3, 3), None, [1, 1], [1, 1], [1, 1], False, [0, 0], 8)
    with invariant.exact_batches():
        out = invariant.call(counting, *args)
    assert calls == ([1, 1, 1, 1] if varies else [4])
    assert torch.equal(out, real(*args))
    assert out.is_contiguous(memory_format=torch.channels_last)  # the batch's own layout
    calls.clear()
    with invariant.exact_batches():
        invariant.call(counting, *args)  # checked once: the next call does the same
    assert calls == ([1, 1, 1, 1] if varies else [4])
    calls.clear()
    invariant.call(counting, *args)  # outside exact_batches: one call
    assert calls == [4]


def test_checking_a_signature_leaves_the_callers_random_stream_alone(monkeypatch):
    checked = []
    monkeypatch.setattr(invariant, "_split", OrderedDict())  # nothing checked yet
    monkeypatch.setattr(invariant, "_noise", {})  # nor its noise made
    real_varies = invariant._varies
    monkeypatch.setattr(invariant, "_varies", lambda *a: checked.append(1) or real_varies(*a))
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    args = _backward_args(24, 40, 6, 2, seed=3)
    with invariant.exact_batches():
        invariant.call(CONV_BACKWARD, *args)
    assert checked == [1]
    assert torch.equal(torch.rand(3), expected)


def test_a_backward_that_wants_the_weights_gradient_is_not_split():
    args = list(_backward_args(112, 672, 8, 3, seed=1))
    args[-1] = [True, True, False]
    with invariant.exact_batches():
        got = invariant.call(CONV_BACKWARD, *args)
    want = CONV_BACKWARD(*args)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize(("name", "layer", "side"), [
    ("efficientnet_lite0", "block_10", 64),
    ("efficientnet_lite0", "block_10", 128),
    ("vgg16", "relu4_3", 48),
    ("inception_v3", "mixed_5d", 96),
    ("googlenet", "inception4c", 96),
    ("mobilenet_v2", "block_11", 64),
])
def test_each_sample_of_a_batched_pass_is_its_pass_alone(name, layer, side):
    _assert_batch_is_its_passes_alone(name, layer, torch.rand(
        3, 3, side, side, generator=torch.Generator().manual_seed(side)))


def _assert_batch_is_its_passes_alone(name: str, layer: str, images: torch.Tensor) -> None:
    """Activations and input gradients of ``images`` as one batch (within exact_batches)
    equal, bit for bit, those of each image alone."""
    backbone = get_backbone(name, weights="pretrained" if name == "efficientnet_lite0"
                            else "random", device="cpu")
    extractor = backbone.extractor([layer])

    def pass_(x):
        x = backbone.prepare(x).requires_grad_()
        acts = extractor(x)[layer]
        total = torch.stack([(acts[i:i + 1] ** 2).mean() for i in range(len(x))]).sum()
        return acts.detach(), torch.autograd.grad(total, x)[0]

    with invariant.exact_batches():
        acts, grads = pass_(images)
    for i in range(len(images)):
        own_acts, own_grad = pass_(images[i:i + 1])
        assert torch.equal(acts[i:i + 1], own_acts)
        assert torch.equal(grads[i:i + 1], own_grad)


def test_a_signature_is_checked_again_at_another_thread_count(monkeypatch):
    """oneDNN's kernels depend on the thread count (at 1 thread none of the 1x1 backwards that
    vary at 2 do), so a check made at one count says nothing about another."""
    checks = []
    monkeypatch.setattr(invariant, "_split", OrderedDict())
    monkeypatch.setattr(invariant, "_varies", lambda *a: checks.append(1) or False)
    args = _backward_args(24, 40, 6, 2, seed=3)
    before = torch.get_num_threads()
    try:
        with invariant.exact_batches():
            torch.set_num_threads(1)
            invariant.call(CONV_BACKWARD, *args)
            invariant.call(CONV_BACKWARD, *args)
            torch.set_num_threads(2)
            invariant.call(CONV_BACKWARD, *args)
    finally:
        torch.set_num_threads(before)
    assert checks == [1, 1]


def test_a_check_that_fails_runs_the_op_sample_by_sample(monkeypatch, caplog):
    def no_memory(*args):
        raise RuntimeError("out of memory (injected)")

    monkeypatch.setattr(invariant, "_split", OrderedDict())
    monkeypatch.setattr(invariant, "_varies", no_memory)
    args = _backward_args(24, 40, 6, 3, seed=4)
    with invariant.exact_batches():
        got = invariant.call(CONV_BACKWARD, *args)[0]
    assert torch.equal(got, _each_alone(CONV_BACKWARD, args, 3))
    assert invariant.split_signatures()
    assert "running it sample by sample" in caplog.text


@pytest.mark.parametrize("make", [
    lambda: torch.randn(2, 8, 5, 5).contiguous(memory_format=torch.channels_last),
    lambda: torch.randn(2, 8, 6, 6)[:, :, 1:, 1:],  # gaps
    lambda: torch.ones(1).expand(3, 8, 4, 4),  # one element seen everywhere
])
def test_probe_data_keeps_the_shape_and_strides_of_any_tensor(make):
    a = make()
    data = invariant._random(a)
    assert data.shape == a.shape and data.stride() == a.stride()
    assert data.isfinite().all()


@pytest.mark.parametrize(("name", "layer", "side"), [
    ("efficientnet_lite0", "block_10", 64),
    ("inception_v3", "mixed_5b", 80),
])
def test_every_convolution_run_sample_by_sample_gives_the_passes_alone(
        monkeypatch, name, layer, side):
    """The sample-by-sample path itself, on any CPU: every batched convolution split."""
    monkeypatch.setattr(invariant, "_split", OrderedDict())
    monkeypatch.setattr(invariant, "_varies", lambda *a: True)
    _assert_batch_is_its_passes_alone(name, layer, torch.rand(
        2, 3, side, side, generator=torch.Generator().manual_seed(1)))
    assert len(invariant.split_signatures()) > 5


def test_fast_convolutions_leave_the_backbones_own_modules_alone():
    backbone = get_backbone("inception_v3", weights="random", device="cpu")
    from torch import nn

    extractor = backbone.extractor(["mixed_5b"])
    assert backbone.extractor(["mixed_5b"]) is extractor  # built once per set of layers
    assert type(backbone.model.Mixed_5b.branch1x1.conv) is nn.Conv2d
    stages = dict(zip(extractor.names, extractor.stages, strict=True))
    copied = stages["mixed_5b"].branch1x1.conv
    assert copied.conv is backbone.model.Mixed_5b.branch1x1.conv  # the same weights
