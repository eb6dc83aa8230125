"""A loaded, frozen backbone and its truncated feature extractors."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from dreamsuite.backbones.fused import fast_stages
from dreamsuite.backbones.registry import (
    BackboneSpec,
    get_backbone_spec,
    load_state_dict,
    resolve_weights_file,
    validate_weights_choice,
)
from dreamsuite.device import select_device

__all__ = ["Backbone", "FeatureExtractor", "get_backbone", "fuse_batchnorm"]


def fuse_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d that directly follows a Conv2d (as registered siblings) into it.

    Valid for frozen networks in eval mode; the backbones here register conv then norm in the
    order their forward applies them. Returns ``module``, changed in place.
    """
    for child in list(module.children()):
        fuse_batchnorm(child)
    names = list(module._modules)
    for first, second in zip(names, names[1:], strict=False):
        conv, bn = module._modules[first], module._modules[second]
        if (
            isinstance(conv, nn.Conv2d)
            and isinstance(bn, nn.BatchNorm2d)
            and bn.num_features == conv.out_channels
        ):
            fused = fuse_conv_bn_eval(conv, bn)
            fused.__class__ = conv.__class__  # keep custom forwards (e.g. "same" padding)
            module._modules[first] = fused
            module._modules[second] = nn.Identity()
    return module


class Normalize(nn.Module):
    """``(x - mean) / std`` for ``[N, 3, H, W]`` inputs in ``[0, 1]``.

    When all channels share one mean and one std (EfficientNet-Lite) they are applied as
    scalars: the same float32 arithmetic, about 3x faster on channels_last inputs than
    broadcasting 3-channel tensors over the innermost dimension."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        uniform = len(set(map(float, self.mean.flatten()))) == 1 \
            and len(set(map(float, self.std.flatten()))) == 1
        self._scalars = (float(self.mean.flatten()[0]), float(self.std.flatten()[0])) \
            if uniform else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._scalars is not None and x.dtype == self.mean.dtype:
            mean, std = self._scalars
            return (x - mean) / std
        return (x - self.mean) / self.std


class FeatureExtractor(nn.Module):
    """Runs the backbone only up to its deepest requested layer.

    ``forward(x)`` takes ``[N, 3, H, W]`` images in ``[0, 1]`` and returns ``{layer: [N, C, h, w]}``.
    """

    def __init__(self, normalize: Normalize, stages: list[tuple[str, nn.Module]], wanted: set[str]):
        super().__init__()
        self.normalize = normalize
        self.names = [name for name, _ in stages]
        self.stages = nn.ModuleList(stage for _, stage in stages)
        self.wanted = frozenset(wanted)
        # A wanted output that feeds an in-place stage (VGG's ReLUs) is copied first, so the
        # in-place speed-up stays everywhere else.
        self._copy_after = frozenset(
            name for name, nxt in zip(self.names, self.stages[1:], strict=False)
            if name in self.wanted and getattr(nxt, "inplace", False)
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.normalize(x)
        out = {}
        for name, stage in zip(self.names, self.stages, strict=True):
            x = stage(x)
            if name in self.wanted:
                out[name] = x
                if name in self._copy_after:
                    x = x.clone()
        return out


class Backbone:
    """A frozen network on one device, with its spec.

    Thread-safe for inference: parameters never change after loading.
    """

    def __init__(self, spec: BackboneSpec, model: nn.Module, device: torch.device, weights: str):
        self.spec = spec
        self.model = model
        self.device = device
        self.weights = weights
        self.normalize = Normalize(spec.mean, spec.std).to(device)
        self._stages = spec.stages(model)
        # Extractors hold no state of their own (frozen weights, no hooks): built once per
        # set of layers, as every batched pass and dream asks for one.
        self._extractors: dict[frozenset[str], FeatureExtractor] = {}

    @property
    def name(self) -> str:
        return self.spec.name

    def extractor(self, layers: Iterable[str]) -> FeatureExtractor:
        """A module that computes ``layers`` and nothing after the deepest of them.

        Its stages are the network's own, run the fast way (:func:`fast_stages`: fused
        convolution + activation steps, in-place gradients, no padded copies), which gives the
        same activations and input gradients, for any batch size."""
        wanted = frozenset(self.spec.layer(name).name for name in layers)
        if not wanted:
            raise ValueError("at least one layer is needed")
        extractor = self._extractors.get(wanted)
        if extractor is None:
            last = max(self.spec.layer(name).index for name in wanted)
            stages = fast_stages(self._stages[: last + 1], wanted)
            extractor = FeatureExtractor(self.normalize, stages, set(wanted))
            if len(self._extractors) >= 64:  # a bound for callers that ask for many sets
                self._extractors.clear()
            self._extractors[wanted] = extractor
        return extractor

    @torch.no_grad()
    def activations(self, images: torch.Tensor, layers: Iterable[str]) -> dict[str, torch.Tensor]:
        """Activations of ``images`` (``[N, 3, H, W]`` or ``[3, H, W]``, in ``[0, 1]``)."""
        if images.dim() == 3:
            images = images.unsqueeze(0)
        x = self.prepare(images)
        return {k: v.float() for k, v in self.extractor(layers)(x).items()}

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``[N, 1000]`` for ``images`` in ``[0, 1]``."""
        if images.dim() == 3:
            images = images.unsqueeze(0)
        logits = self.model(self.normalize(self.prepare(images)))
        return logits.float()

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Move a batch to this backbone's device and memory layout."""
        return images.to(self.device, torch.float32).contiguous(memory_format=torch.channels_last)


_CACHE: dict[tuple[str, str, str, str], Backbone] = {}
_CACHE_LOCK = threading.Lock()


def get_backbone(
    name: str | None = None, *, weights: str = "pretrained", device: str | torch.device | None = None
) -> Backbone:
    """Load (once per process) the backbone ``name`` (default
    :data:`~dreamsuite.backbones.DEFAULT_BACKBONE`) with ``weights`` (``pretrained`` or
    ``random``) on ``device`` (default: CUDA when present, else CPU).

    Raises :class:`~dreamsuite.errors.UnknownName` for an unknown name and
    :class:`~dreamsuite.errors.WeightsMissing` when pretrained weights are absent.
    """
    spec = get_backbone_spec(name)
    validate_weights_choice(weights)
    dev = select_device(device)
    # The weights file is part of the key: a different $DREAMSUITE_WEIGHTS_DIR loads anew.
    source = str(resolve_weights_file(spec)) if weights == "pretrained" else ""
    key = (spec.name, weights, str(dev), source)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = _load(spec, weights, dev)
        return _CACHE[key]


def _load(spec: BackboneSpec, weights: str, device: torch.device) -> Backbone:
    if weights == "pretrained":
        state = load_state_dict(spec)
        model = spec.build()
        model.load_state_dict(state)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = spec.build()
    model.eval().requires_grad_(False)
    fuse_batchnorm(model)
    # channels_last is faster for convolutions on CPU (oneDNN) and on CUDA tensor cores alike.
    model = model.to(device).to(memory_format=torch.channels_last)
    return Backbone(spec, model, device, weights)
