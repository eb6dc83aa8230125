"""Convolution + activation as one step, for the frozen backbones' forward+backward.

On the CPU (no autocast, frozen weights) :func:`conv_act` runs the convolution with the
activation as a oneDNN post-op in fp32 (one pass over the output instead of two; float64, the
tests' exact reference, and oneDNN switched off take two steps), and its backward applies the
activation's mask to the incoming gradient in place when nothing else holds that gradient,
then computes only the input's gradient. The arithmetic is that of ``act(conv2d(x))`` and its
autograd backward, so outputs and input gradients are the same; elsewhere (CUDA, autocast,
other dtypes, weights that want gradients) it is exactly ``act(conv2d(x))`` with the
activation in place on the convolution's fresh output.

On a batch, each sample's output and input gradient are bit for bit those of the same image
alone: the convolutions go through :func:`dreamsuite.backbones.invariant.call`, which runs
sample by sample the few that oneDNN would round differently in a batch.

Activations: ``"relu"``, ``"relu6"`` (ReLU6, i.e. ``hardtanh(0, 6)``) or ``"none"``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from dreamsuite.backbones import invariant

__all__ = ["ConvReLU", "FastConv", "conv_act", "fast_stages", "fuse_conv_relu_stages",
           "with_fast_convs"]

# activation -> (oneDNN post-op, its scalars)
_POST_OPS = {"relu": ("relu", []), "relu6": ("hardtanh", [0.0, 6.0])}
_ACTIVATIONS = ("none", *_POST_OPS)


def _activate_(y: torch.Tensor, act: str) -> torch.Tensor:
    if act == "relu":
        return y.relu_()
    if act == "relu6":
        return F.hardtanh_(y, 0.0, 6.0)
    return y


def _storage_use_count(t: torch.Tensor) -> int:
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


try:  # what a tensor that alone owns its storage reports (the check itself holds a reference)
    _SOLE_OWNER = _storage_use_count(torch.empty(1))
except Exception:  # a torch without these internals: never write gradients in place  # noqa: BLE001
    _SOLE_OWNER = -1


def _sole_owner(grad: torch.Tensor, like: torch.Tensor) -> bool:
    """Whether the gradient handed to a backward can be overwritten: dense, of ``like``'s shape
    and dtype, no view, and no other reference to it or its storage (the autograd engine
    hands one tensor to several nodes after an addition; the caller may hold grad_outputs)."""
    if _SOLE_OWNER < 0 or grad._base is not None or grad.requires_grad:
        return False
    if grad.shape != like.shape or grad.dtype != like.dtype:
        return False
    if not (grad.is_contiguous() or grad.is_contiguous(memory_format=torch.channels_last)):
        return False
    try:
        return grad._use_count() == 1 and _storage_use_count(grad) == _SOLE_OWNER
    except Exception:  # noqa: BLE001
        return False


def _masked(grad: torch.Tensor, y: torch.Tensor, act: str) -> torch.Tensor:
    """The gradient through ``act`` from its output ``y``: zero where ``y`` is clamped.

    Equal to the autograd formulas (ReLU: ``y > 0``; ReLU6/hardtanh: ``0 < y < 6``, which is
    ``0 < x < 6`` as ``y = clamp(x, 0, 6)``)."""
    if act == "none":
        return grad
    inplace = _sole_owner(grad, y)
    if act == "relu":
        if inplace:
            return torch.ops.aten.threshold_backward.grad_input(grad, y, 0, grad_input=grad)
        return torch.ops.aten.threshold_backward(grad, y, 0)
    if inplace:
        return torch.ops.aten.hardtanh_backward.grad_input(grad, y, 0.0, 6.0, grad_input=grad)
    return torch.ops.aten.hardtanh_backward(grad, y, 0.0, 6.0)


class _ConvAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, act):
        if act != "none" and x.dtype == torch.float32 and _onednn():
            post_op, scalars = _POST_OPS[act]
            y = invariant.call(torch.ops.mkldnn._convolution_pointwise.default,
                               x, weight, bias, padding, stride, dilation, groups, post_op,
                               scalars, "")
        else:  # no activation (the very op of F.conv2d), float64 (the tests' exact reference)
            # or oneDNN off: two steps, same backward
            y = _activate_(invariant.call(torch.ops.aten.convolution.default, x, weight, bias,
                                          stride, padding, dilation, False, [0, 0], groups), act)
        ctx.conv = (stride, padding, dilation, groups)
        ctx.act = act
        ctx.save_for_backward(x, weight, y if act != "none" else None)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        if not ctx.needs_input_grad[0]:
            return (None,) * 8
        x, weight, y = ctx.saved_tensors
        if y is not None:
            grad = _masked(grad, y, ctx.act)
        stride, padding, dilation, groups = ctx.conv
        grad_x = invariant.call(torch.ops.aten.convolution_backward.default,
                                grad, x, weight, None, stride, padding, dilation, False,
                                [0, 0], groups, [True, False, False])[0]
        return grad_x, None, None, None, None, None, None, None


def _onednn() -> bool:
    return torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled


def _fast(x: torch.Tensor, conv: nn.Conv2d) -> bool:
    w = conv.weight
    return (
        x.device.type == "cpu" and w.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64) and w.dtype == x.dtype
        and x.dim() == 4 and not w.requires_grad
        and (conv.bias is None or not conv.bias.requires_grad)
        and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
        and not torch.is_autocast_enabled("cpu")
    )


def conv_act(conv: nn.Conv2d, x: torch.Tensor, act: str = "relu", *,
             padding: tuple[int, int] | None = None) -> torch.Tensor:
    """``act(conv(x))``, with ``padding`` (symmetric, per side) instead of the conv's own when
    given. Any batch size; the convolution must be the frozen network's (no weight grads)."""
    if act not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; choose one of {', '.join(_ACTIVATIONS)}")
    pad = list(conv.padding if padding is None else padding)
    # Without an activation there is nothing to fuse: one image takes autograd's own
    # convolution (the same ops), a batch this step for its batch-invariant ops.
    if (act != "none" or x.shape[0] > 1) and _fast(x, conv):
        try:
            return _ConvAct.apply(x, conv.weight, conv.bias, list(conv.stride), pad,
                                  list(conv.dilation), conv.groups, act)
        except RuntimeError:  # a shape or build oneDNN refuses: the plain path below
            pass
    if padding is None:
        y = conv(x)
    else:
        y = F.conv2d(x, conv.weight, conv.bias, conv.stride, pad, conv.dilation, conv.groups)
    return _activate_(y, act)


class ConvReLU(nn.Module):
    """A ``Conv2d`` stage and the ``ReLU`` stage after it, run as :func:`conv_act`."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_act(self.conv, x, "relu")


class FastConv(nn.Module):
    """A frozen ``Conv2d`` run as :func:`conv_act` without an activation: one image takes
    autograd's own convolution; a batch on the CPU takes the once-differentiable step whose
    samples come out as they do alone (no ``create_graph`` through it, which no dream
    needs)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_act(self.conv, x, "none")


def with_fast_convs(module: nn.Module) -> nn.Module:
    """``module`` with each plain ``nn.Conv2d`` in it run as :class:`FastConv`: a copy of the
    modules on the way to a convolution (sharing their parameters), the rest shared as is;
    ``module`` itself is unchanged."""
    if type(module) is nn.Conv2d:
        return FastConv(module)
    children = {name: with_fast_convs(child) for name, child in module.named_children()}
    if all(children[name] is child for name, child in module.named_children()):
        return module
    clone = copy.copy(module)
    clone._modules = dict(module._modules) | children
    return clone


def fuse_conv_relu_stages(stages: list[tuple[str, nn.Module]],
                          keep: frozenset[str] | set[str]) -> list[tuple[str, nn.Module]]:
    """Stages with each ``Conv2d`` stage that a ``ReLU`` stage follows run as one
    :class:`ConvReLU` (the ReLU's stage becomes an identity, so the names and the output of
    every stage are unchanged) unless the convolution's own output is in ``keep``."""
    out = list(stages)
    for i in range(len(out) - 1):
        (name, conv), (relu_name, relu) = out[i], out[i + 1]
        if (type(conv) is nn.Conv2d and type(relu) is nn.ReLU and name not in keep):
            out[i] = (name, ConvReLU(conv))
            out[i + 1] = (relu_name, nn.Identity())
    return out


def fast_stages(stages: list[tuple[str, nn.Module]],
                keep: frozenset[str] | set[str]) -> list[tuple[str, nn.Module]]:
    """The stages of a frozen, BatchNorm-folded network for a dream's forward+backward: each
    stage that offers a ``fast()`` version (EfficientNet-Lite's) is replaced by it, and
    ``Conv2d`` + ``ReLU`` stage pairs (VGG's) are fused (:func:`fuse_conv_relu_stages`), and
    the convolutions of the other stages (Inception's, GoogLeNet's) run as :class:`FastConv`.
    Every stage's output, and so the input gradient, stays the same, and a batch's samples
    come out bit for bit as they do alone."""
    out, done = [], set()
    for name, stage in stages:
        fast = getattr(stage, "fast", None)
        faster = fast() if callable(fast) else stage
        if faster is not stage:
            done.add(name)
        out.append((name, faster))
    return [(name, stage if name in done or isinstance(stage, ConvReLU)
             else with_fast_convs(stage))
            for name, stage in fuse_conv_relu_stages(out, keep)]
