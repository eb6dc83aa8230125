"""Content reconstruction and neural style transfer (Gatys et al.), the paper's background
methods.

- :func:`reconstruct`: from seeded white noise, match the activations of a layer of an image
  (``mode="content"``: deeper layers keep the objects and lose the pixels) or only their Gram
  matrices (``mode="style"``); one image per requested layer.
- :func:`stylize`: a content image in the style of one or more style images (blend weights):
  content loss on one layer, Gram losses on several, total variation; L-BFGS (default) or Adam,
  coarse to fine over a pyramid, colour preservation, style scale.

Classic Gatys is weak on networks with peaky activations (ResNets, EfficientNets): Wang et al.
(CVPR 2021, "Rethinking and Improving the Robustness of Image Style Transfer") smooth the
activations with a softmax before the Gram matrices. ``transform="softmax"`` does that (over
each image's whole activation tensor of a layer, in units of its standard deviation times a
temperature, times its size so values stay near 1).

``transform="pyramid"`` (the default) keeps the softmax-smoothed Grams and optimises the image as
a Laplacian pyramid instead of as pixels (:class:`_Pyramid`: the finest level at full size plus
coarser levels, each half the one above, upsampled and added). A pixel-space L-BFGS step is
dominated by the finest frequencies, so 100 iterations mostly add high-frequency patterns that
lower the loss on the optimised network only; over the pyramid, colours and large strokes move
as fast as detail, and the result's style distance on a network never optimised against
(EfficientNet-Lite2, ``dreamsuite bench style``) falls by about half at the same content
distance as plain Gatys.

Large images are tiled: each tile is computed with a ``halo`` of context and only its core's
activations count, and Gram matrices are accumulated over the whole image (global statistics,
never per tile): a first pass sums them, a second computes each tile's exact share of the
gradient (the Gram loss is linearised at the global Gram, which is exact for the gradient). The
softmax's temperature (the activations' standard deviation) and normaliser are global too: a
pass before the first gathers the moments, the first sums the normaliser with the Grams.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from dreamsuite.backbones import Backbone, get_backbone, get_backbone_spec
from dreamsuite.engine.clean import up_adjoint
from dreamsuite.engine.config import canonical_layer_keys
from dreamsuite.engine.octaves import total_variation, upsample
from dreamsuite.errors import Cancelled, InvalidArgument

__all__ = [
    "StyleConfig",
    "StyleProgress",
    "ReconstructConfig",
    "gram",
    "features_transform",
    "image_grams",
    "stylize",
    "reconstruct",
    "check_stylize",
    "check_reconstruct",
    "style_distance",
    "content_distance",
    "preserve_color",
    "DEFAULT_STYLE_LAYERS",
]

#: Style and content layers per backbone family (shallow to deep).
DEFAULT_STYLE_LAYERS = {
    "efficientnet": ("stem", "block_1", "block_3", "block_5", "block_9"),
    "vgg16": ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
}
DEFAULT_CONTENT_LAYER = {"efficientnet": "block_5", "vgg16": "relu4_2"}
TRANSFORMS = ("gram", "softmax", "pyramid")
#: Transforms whose Grams see softmax-smoothed activations.
SOFTMAX_TRANSFORMS = ("softmax", "pyramid")
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "style", "noise")

CancelCheck = Callable[[], bool]


@dataclass(frozen=True)
class StyleProgress:
    """One report of an optimisation: scale index and count, iterations done, loss."""

    scale: int
    scales: int
    iteration: int
    iterations: int
    loss: float
    size: tuple[int, int]
    image: torch.Tensor | None = None  # set at the end of each scale


@dataclass(frozen=True)
class StyleConfig:
    backbone: str = "efficientnet_lite0"
    weights: str = "pretrained"
    style_layers: Mapping[str, float] | None = None  # None: the family's defaults, weight 1
    content_layer: str | None = None
    content_weight: float = 1.0
    style_weight: float = 1e3
    tv_weight: float = 0.0
    transform: str = "pyramid"
    temperature: float = 2.0
    init: str = "content"
    optimizer: str = "lbfgs"
    iterations: int = 100
    learning_rate: float = 0.02  # Adam only
    scales: int = 1  # coarse to fine, each half the next
    style_scale: float = 1.0
    preserve_color: bool = False
    tile: int = 0  # 0: never tile
    halo: int = 96
    seed: int = 0

    def family(self) -> str:
        return "vgg16" if self.backbone.startswith("vgg") else "efficientnet"

    def resolved_style_layers(self) -> dict[str, float]:
        if self.style_layers is not None:
            return dict(self.style_layers)
        return {layer: 1.0 for layer in DEFAULT_STYLE_LAYERS[self.family()]}

    def resolved_content_layer(self) -> str:
        return self.content_layer or DEFAULT_CONTENT_LAYER[self.family()]


def _check(config: StyleConfig) -> None:
    if config.transform not in TRANSFORMS:
        raise InvalidArgument(f"transform must be one of {TRANSFORMS}")
    if config.optimizer not in OPTIMIZERS:
        raise InvalidArgument(f"optimizer must be one of {OPTIMIZERS}")
    if config.init not in INITS:
        raise InvalidArgument(f"init must be one of {INITS}")
    if not 1 <= config.iterations <= 10_000:
        raise InvalidArgument("iterations must be between 1 and 10000")
    if not 1 <= config.scales <= 6:
        raise InvalidArgument("scales must be between 1 and 6")
    for name in ("content_weight", "style_weight", "tv_weight"):
        value = getattr(config, name)
        if not (math.isfinite(value) and value >= 0):
            raise InvalidArgument(f"{name} must be a finite number >= 0")
    if not (math.isfinite(config.temperature) and config.temperature > 0):
        raise InvalidArgument("temperature must be > 0")
    if not 0.1 <= config.style_scale <= 4:
        raise InvalidArgument("style_scale must be between 0.1 and 4")
    if config.tile and config.tile < 64:
        raise InvalidArgument("tile must be 0 (off) or at least 64")
    if not config.resolved_style_layers() and config.style_weight:
        raise InvalidArgument("style_layers is empty")


def check_stylize(config: StyleConfig) -> None:
    """What a style transfer can be refused for before it takes a turn on a device (no image,
    no weights loaded): its numbers, its backbone and the layers it names."""
    _check(config)
    spec = get_backbone_spec(config.backbone)
    for layer in canonical_layer_keys(spec, config.resolved_style_layers(), "style_layers"):
        spec.layer(layer)
    if config.content_weight:
        spec.canonical_layer(config.resolved_content_layer())


def _reconstruct_style(config: ReconstructConfig) -> StyleConfig:
    return StyleConfig(
        backbone=config.backbone, weights=config.weights, optimizer=config.optimizer,
        iterations=config.iterations, learning_rate=config.learning_rate,
        transform=config.transform, temperature=config.temperature, seed=config.seed)


def check_reconstruct(config: ReconstructConfig, layers: Sequence[str]) -> None:
    """What a reconstruction can be refused for before it takes a turn on a device."""
    if config.mode not in ("content", "style"):
        raise InvalidArgument("mode must be content or style")
    if not layers:
        raise InvalidArgument("layers: give at least one layer")
    _check(_reconstruct_style(config))
    spec = get_backbone_spec(config.backbone)
    for layer in layers:
        spec.layer(layer)


# -- statistics -----------------------------------------------------------------------------


def _in_memory_order(feats: torch.Tensor) -> torch.Tensor:
    """``[N, C, h, w]`` as ``[N, h, w, C]`` when channels-last in memory (the backbones'
    activations; a view), else unchanged: so flattening needs no copy."""
    if feats.dim() == 4 and feats.is_contiguous(memory_format=torch.channels_last):
        return feats.permute(0, 2, 3, 1)
    return feats


def features_transform(feats: torch.Tensor, transform: str, temperature: float) -> torch.Tensor:
    """``[N, C, h, w]`` activations as the Gram matrices see them: unchanged (``gram``), or a
    softmax over each image's whole tensor (``softmax``, ``pyramid``; times its size, so values
    stay near 1). The softmax runs in the activations' memory order and keeps their layout."""
    if transform not in SOFTMAX_TRANSFORMS:
        return feats
    ordered = _in_memory_order(feats)
    flat = ordered.reshape(feats.shape[0], -1).float()
    scale = temperature * flat.std(dim=1, keepdim=True).clamp_min(1e-6).detach()
    soft = torch.softmax(flat / scale, dim=1) * flat.shape[1]
    if ordered is feats:
        return soft.view_as(feats)
    return soft.view(ordered.shape).permute(0, 3, 1, 2)


def _positions(feats: torch.Tensor) -> torch.Tensor:
    """``[N, C, h, w]`` as ``[N, h * w, C]`` (a view for channels-last or contiguous ones)."""
    ordered = _in_memory_order(feats)
    if ordered is feats:
        return feats.flatten(2).transpose(1, 2).float()
    return ordered.flatten(1, 2).float()


def gram(feats: torch.Tensor) -> torch.Tensor:
    """``[N, C, C]`` Gram matrices of ``[N, C, h, w]`` activations, over positions (mean)."""
    flat = _positions(feats)
    return flat.transpose(1, 2) @ flat / flat.shape[1]


def _sum_gram(feats: torch.Tensor) -> torch.Tensor:
    flat = _positions(feats)
    return flat.transpose(1, 2) @ flat


#: Tile edges and window starts are multiples of this (the deepest stride of the backbones),
#: so a tile's activations sit on the same grid as the whole image's.
ALIGN = 32


def _stride(pixels: int, feats: int) -> int:
    """The layer's stride: a power of two (``feats = ceil(pixels / stride)``)."""
    return 2 ** round(math.log2(max(1.0, pixels / feats)))


def _core(feats: torch.Tensor, window: tuple[slice, slice], core: tuple[slice, slice],
          size: tuple[int, int]) -> torch.Tensor:
    """The part of a window's activations that belongs to its core region."""
    (wy, wx), (cy, cx) = window, core
    sy = _stride(wy.stop - wy.start, feats.shape[-2])
    sx = _stride(wx.stop - wx.start, feats.shape[-1])
    y0, x0 = (cy.start - wy.start) // sy, (cx.start - wx.start) // sx
    y1 = y0 + -(-(cy.stop - cy.start) // sy)
    x1 = x0 + -(-(cx.stop - cx.start) // sx)
    return feats[..., y0:y1, x0:x1]


def _edges(length: int, tile: int) -> list[tuple[int, int]]:
    count = max(1, math.ceil(length / tile))
    cuts = [min(length, ALIGN * round(i * length / count / ALIGN)) for i in range(count + 1)]
    cuts[-1] = length
    cuts = sorted(set(cuts))
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def _windows(size: tuple[int, int], tile: int, halo: int):
    """(window, core) pairs: cores tile the image on the :data:`ALIGN` grid, windows add
    ``halo`` px of context (rounded up to the grid)."""
    h, w = size
    if not tile or max(h, w) <= tile:
        whole = (slice(0, h), slice(0, w))
        return [(whole, whole)]
    halo = ALIGN * math.ceil(halo / ALIGN)
    out = []
    for y0, y1 in _edges(h, tile):
        for x0, x1 in _edges(w, tile):
            window = (slice(max(0, y0 - halo), min(h, y1 + halo)),
                      slice(max(0, x0 - halo), min(w, x1 + halo)))
            out.append((window, (slice(y0, y1), slice(x0, x1))))
    return out


@dataclass(frozen=True)
class _Softmax:
    """A layer's global softmax parameters: ``exp(feats / scale - shift)`` are the smoothed
    activations up to the normaliser (their sum over the whole image); ``scale`` is the
    temperature times the activations' standard deviation, ``shift`` their maximum / scale."""

    scale: float
    shift: float

    def exp(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.exp(feats.float() / self.scale - self.shift)


def _softmax_params(net: _Net, image: torch.Tensor, layers: Sequence[str], temperature: float,
                    windows, size) -> dict[str, _Softmax]:
    """Each layer's :class:`_Softmax` from the whole image's core activations (float64 moments,
    the unbiased standard deviation as ``torch.std``)."""
    moments: dict[str, list[float]] = {layer: [0.0, 0.0, 0.0, -math.inf] for layer in layers}
    with torch.no_grad():
        for window, core in windows:
            acts = net(image[..., window[0], window[1]])
            for layer in layers:
                feats = _core(acts[layer], window, core, size).double()
                m = moments[layer]
                m[0] += feats.numel()
                m[1] += float(feats.sum())
                m[2] += float((feats * feats).sum())
                m[3] = max(m[3], float(feats.max()))
    out = {}
    for layer, (n, total, squares, peak) in moments.items():
        variance = max(0.0, (squares - total * total / n) / max(1.0, n - 1))
        scale = temperature * max(math.sqrt(variance), 1e-6)
        out[layer] = _Softmax(scale, peak / scale)
    return out


def _finish_gram(sums: torch.Tensor, count: int, normaliser: torch.Tensor | None,
                 channels: int) -> torch.Tensor:
    """The Gram matrix from its sum over ``count`` positions: of the activations, or (given
    the softmax normaliser) of ``size * softmax``, the exponentials' sums rescaled."""
    if normaliser is None:
        return sums / count
    return sums * ((channels * count) / normaliser) ** 2 / count


class _Net:
    """The backbone's features of the layers a loss needs, on ``[1, 3, H, W]`` pixels.

    On CUDA under fp16 autocast, unless ``optimizer`` is ``lbfgs``: L-BFGS builds its curvature
    from differences of successive gradients and its line search compares nearby losses, and
    fp16's rounding in both would steer it (the CPU is fp32 either way)."""

    def __init__(self, backbone: Backbone, layers: Sequence[str], optimizer: str = "adam"):
        self.backbone = backbone
        self.layers = list(dict.fromkeys(layers))
        self.extractor = backbone.extractor(self.layers)
        self.autocast = backbone.device.type == "cuda" and optimizer != "lbfgs"

    def __call__(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        x = pixels.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.autocast):
            acts = self.extractor(x)
        return {k: v.float() for k, v in acts.items()}


def image_grams(net: _Net, image: torch.Tensor, layers: Sequence[str], transform: str,
                temperature: float, tile: int = 0, halo: int = 32) -> dict[str, torch.Tensor]:
    """Gram matrices (``[C, C]``) of ``image`` (``[1, 3, H, W]``) over the whole image, tiled
    when larger than ``tile`` (each tile's core activations computed with ``halo`` context)."""
    size = tuple(image.shape[-2:])
    windows = _windows(size, tile, halo)
    params = (_softmax_params(net, image, layers, temperature, windows, size)
              if transform in SOFTMAX_TRANSFORMS else None)
    sums, counts, normalisers = _gram_sums(net, image, layers, params, windows, size)
    return {layer: _finish_gram(sums[layer], counts[layer], normalisers.get(layer),
                                sums[layer].shape[-1]) for layer in layers}


def _style_loss(grams: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor],
                weights: Mapping[str, float]) -> torch.Tensor:
    total = 0.0
    for layer, weight in weights.items():
        g, t = grams[layer], targets[layer]
        total = total + weight * ((g - t) ** 2).sum() / (g.shape[-1] ** 2)
    return total  # type: ignore[return-value]


def style_distance(backbone: Backbone, image: torch.Tensor, style: torch.Tensor,
                   layers: Sequence[str] | None = None, transform: str = "gram") -> float:
    """The Gram (style) loss between ``image`` and ``style`` (``[3, H, W]`` each) on
    ``backbone``, weight 1 per layer: for measuring on a network not optimised against."""
    layers = list(layers or _family_layers(backbone.name))
    net = _Net(backbone, layers)
    a = image_grams(net, backbone.prepare(image[None]), layers, transform, 1.0)
    b = image_grams(net, backbone.prepare(style[None]), layers, transform, 1.0)
    return float(_style_loss(a, b, {layer: 1.0 for layer in layers}))


def content_distance(backbone: Backbone, image: torch.Tensor, content: torch.Tensor,
                     layer: str | None = None) -> float:
    """Mean squared activation difference at ``layer`` between two same-size images."""
    layer = layer or DEFAULT_CONTENT_LAYER[_family(backbone.name)]
    net = _Net(backbone, [layer])
    with torch.no_grad():
        a = net(backbone.prepare(image[None]))[layer]
        b = net(backbone.prepare(content[None]))[layer]
    return float(((a - b) ** 2).mean())


def _family(name: str) -> str:
    return "vgg16" if name.startswith("vgg") else "efficientnet"


def _family_layers(name: str) -> tuple[str, ...]:
    return DEFAULT_STYLE_LAYERS[_family(name)]


def preserve_color(result: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """``result``'s luminance with ``content``'s chroma (YIQ), both ``[3, H, W]``: the style
    changes the texture, not the colours (Gatys et al. 2016, luminance-only transfer)."""
    y_r, _, _ = _yiq(result)
    _, i_c, q_c = _yiq(content)
    return _rgb(y_r, i_c, q_c).clamp(0, 1)


_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263],
                     [0.211456, -0.522591, 0.311135]])


def _yiq(image: torch.Tensor):
    yiq = torch.einsum("ij,jhw->ihw", _YIQ.to(image), image)
    return yiq[0], yiq[1], yiq[2]


def _rgb(y, i, q):
    return torch.einsum("ij,jhw->ihw", torch.linalg.inv(_YIQ).to(y), torch.stack([y, i, q]))


# -- optimisation ---------------------------------------------------------------------------


@dataclass
class _Loss:
    """Loss and gradient of ``[1, 3, H, W]`` pixels: Gram losses against ``style_targets``,
    activation loss against ``content_targets`` (per window), total variation."""

    net: _Net
    transform: str
    temperature: float
    style_weights: dict[str, float]
    style_targets: dict[str, torch.Tensor]
    content_layer: str | None
    content_targets: list[torch.Tensor] = field(default_factory=list)  # per window
    style_weight: float = 1.0
    content_weight: float = 1.0
    tv_weight: float = 0.0
    tile: int = 0
    halo: int = 32

    def prepare_content(self, content: torch.Tensor) -> None:
        if self.content_layer is None:
            return
        size = tuple(content.shape[-2:])
        with torch.no_grad():
            self.content_targets = [
                _core(self.net(content[..., w[0], w[1]])[self.content_layer], w, c, size)
                for w, c in _windows(size, self.tile, self.halo)]

    def __call__(self, x: torch.Tensor) -> tuple[float, torch.Tensor]:
        windows = _windows(tuple(x.shape[-2:]), self.tile, self.halo)
        if len(windows) == 1:
            return self._whole(x)
        return self._tiled(x, windows)

    def _terms(self, acts, grams, x_window, window, core, size, index):
        loss = 0.0
        if self.style_weights and self.style_weight:
            loss = loss + self.style_weight * _style_loss(grams, self.style_targets,
                                                          self.style_weights)
        if self.content_layer is not None and self.content_weight:
            feats = _core(acts[self.content_layer], window, core, size)
            loss = loss + self.content_weight * F.mse_loss(feats, self.content_targets[index])
        return loss

    def _whole(self, x: torch.Tensor) -> tuple[float, torch.Tensor]:
        x = x.detach().requires_grad_()
        acts = self.net(x)
        size = tuple(x.shape[-2:])
        whole = (slice(0, size[0]), slice(0, size[1]))
        grams = {layer: gram(features_transform(acts[layer], self.transform,
                                                self.temperature))[0]
                 for layer in self.style_weights}
        loss = self._terms(acts, grams, x, whole, whole, size, 0)
        if self.tv_weight:
            loss = loss + self.tv_weight * total_variation(x)
        (grad,) = torch.autograd.grad(loss, x)
        return float(loss.detach()), grad

    def _tiled(self, x: torch.Tensor, windows) -> tuple[float, torch.Tensor]:
        size = tuple(x.shape[-2:])
        x = x.detach()
        layers = list(self.style_weights) if self.style_weight else []
        # Pass 1: the global Gram matrices, and the style loss's gradient with respect to each
        # layer's Gram sum (the Gram is that sum over the image's positions).
        # With the softmax, a pass before gathers its global temperature and shift, and the
        # loss is also linearised in each layer's normaliser (the exponentials' global sum).
        total = 0.0
        d_sums: dict[str, torch.Tensor] = {}
        d_norms: dict[str, torch.Tensor] = {}
        params = None
        if layers:
            if self.transform in SOFTMAX_TRANSFORMS:
                params = _softmax_params(self.net, x, layers, self.temperature, windows, size)
            sums, counts, normalisers = _gram_sums(self.net, x, layers, params, windows, size)
            leaves = {k: sums[k].requires_grad_() for k in layers}
            norm_leaves = {k: normalisers[k].requires_grad_() for k in normalisers}
            grams = {k: _finish_gram(leaves[k], counts[k], norm_leaves.get(k),
                                     sums[k].shape[-1]) for k in layers}
            style = self.style_weight * _style_loss(grams, self.style_targets, self.style_weights)
            wrt = [leaves[k] for k in layers] + [norm_leaves[k] for k in norm_leaves]
            derivatives = torch.autograd.grad(style, wrt)
            d_sums = dict(zip(layers, derivatives[:len(layers)], strict=True))
            d_norms = dict(zip(norm_leaves, derivatives[len(layers):], strict=True))
            total += float(style.detach())
        content_elements = sum(t.numel() for t in self.content_targets)
        grad = torch.zeros_like(x)
        # Pass 2: per window, its exact share of the gradient (the loss linearised in the Gram
        # sums, which is exact for the first derivative).
        for index, (window, core) in enumerate(windows):
            piece = x[..., window[0], window[1]].clone().requires_grad_()
            acts = self.net(piece)
            share = torch.zeros((), device=x.device)
            for layer in layers:
                feats = _core(acts[layer], window, core, size)
                if params is not None:
                    feats = params[layer].exp(feats)
                    share = share + d_norms[layer] * feats.sum()
                share = share + (d_sums[layer] * _sum_gram(feats)[0]).sum()
            if self.content_layer is not None and self.content_weight:
                feats = _core(acts[self.content_layer], window, core, size)
                content = self.content_weight * ((feats - self.content_targets[index]) ** 2
                                                 ).sum() / content_elements
                total += float(content.detach())
                share = share + content
            if share.requires_grad:
                (piece_grad,) = torch.autograd.grad(share, piece)
                grad[..., window[0], window[1]] += piece_grad
        if self.tv_weight:
            whole = x.clone().requires_grad_()
            tv = self.tv_weight * total_variation(whole)
            grad += torch.autograd.grad(tv, whole)[0]
            total += float(tv)
        return total, grad


def _gram_sums(net: _Net, image: torch.Tensor, layers: Sequence[str],
               params: Mapping[str, _Softmax] | None, windows, size) -> tuple[dict, dict, dict]:
    """Per layer over the windows' cores: the Gram sum (of the activations, or with ``params``
    of their softmax exponentials), the count of positions, and (softmax only) the normaliser:
    the exponentials' sum."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    normalisers: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for window, core in windows:
            acts = net(image[..., window[0], window[1]])
            for layer in layers:
                feats = _core(acts[layer], window, core, size)
                if params is not None:
                    feats = params[layer].exp(feats)
                    normalisers[layer] = normalisers.get(layer, 0) + feats.sum().double()
                sums[layer] = sums.get(layer, 0) + _sum_gram(feats)[0]
                counts[layer] = counts.get(layer, 0) + feats.shape[-2] * feats.shape[-1]
    return sums, counts, {k: v.float() for k, v in normalisers.items()}


#: The coarsest level of the :class:`_Pyramid` has a shorter side of at least this many pixels.
PYRAMID_MIN_SIDE = 16


def pyramid_levels(size: tuple[int, int]) -> int:
    """Levels of the image pyramid for ``size``: halving down to :data:`PYRAMID_MIN_SIDE` px
    (5 for a 256 px image), at least 1 (the pixels themselves)."""
    return 1 + max(0, int(math.floor(math.log2(max(1, min(size)) / PYRAMID_MIN_SIDE))))


class _Pyramid:
    """The image being optimised as a Laplacian pyramid: ``levels[0]`` at full size plus each
    coarser level (half the size of the one above) bilinearly upsampled to full size. The
    coarse levels start at zero and ``levels[0]`` at the initial image. A level's gradient is
    the adjoint of its upsampling applied to the pixel gradient, so a coarse level sums the
    gradient of every pixel it covers: low frequencies move as fast as fine detail. With one
    level it is the pixels themselves."""

    def __init__(self, x0: torch.Tensor, levels: int = 1):
        self.size = tuple(x0.shape[-2:])
        h, w = self.size
        finest = x0.detach().contiguous().clone().requires_grad_()
        self.levels = [finest] + [
            x0.new_zeros(*x0.shape[:-2], max(1, round(h / 2 ** i)), max(1, round(w / 2 ** i)))
            .requires_grad_() for i in range(1, levels)]

    def image(self) -> torch.Tensor:
        """The pixels (the finest level itself when there is only one)."""
        if len(self.levels) == 1:
            return self.levels[0]
        with torch.no_grad():
            return self._synthesise(self.levels)

    def _synthesise(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        x = levels[0]
        for level in levels[1:]:
            x = x + upsample(level, self.size)
        return x

    def project(self) -> torch.Tensor:
        """Pixels into [0, 1], by moving the finest level (pixels: clamping them); returns the
        pixels."""
        with torch.no_grad():
            if len(self.levels) == 1:
                return self.levels[0].clamp_(0, 1)
            x = self._synthesise(self.levels)
            clamped = x.clamp(0, 1)
            self.levels[0].sub_(x - clamped)
            return clamped

    def set_grads(self, grad: torch.Tensor) -> None:
        """Each level's gradient from the pixel gradient ``grad``: the adjoint of its bilinear
        upsampling (:func:`~dreamsuite.engine.clean.up_adjoint`, without the forward autograd
        would record)."""
        grad = grad.contiguous()
        self.levels[0].grad = grad
        for level in self.levels[1:]:
            level.grad = up_adjoint(grad, tuple(level.shape[-2:]))


def _optimise(x0: torch.Tensor, loss_fn: Callable[[torch.Tensor], tuple[float, torch.Tensor]],
              config: StyleConfig, report: Callable[[int, float], None],
              should_cancel: CancelCheck | None) -> torch.Tensor:
    """Minimise ``loss_fn`` over pixels in [0, 1] from ``x0``; ``config.iterations`` L-BFGS
    iterations (or Adam steps), over the pixels or (``transform="pyramid"``) the levels of a
    :class:`_Pyramid`."""
    levels = pyramid_levels(tuple(x0.shape[-2:])) if config.transform == "pyramid" else 1
    pyramid = _Pyramid(x0, levels)
    done = [0]
    last = [math.inf]

    def closure() -> torch.Tensor:
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"cancelled after {done[0]} iterations")
        value, grad = loss_fn(pyramid.project())
        pyramid.set_grads(grad)
        last[0] = value
        return torch.tensor(value)

    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(pyramid.levels, lr=config.learning_rate)
        for i in range(config.iterations):
            optimizer.zero_grad()
            closure()
            optimizer.step()
            done[0] = i + 1
            report(done[0], last[0])
    else:
        # Over the pyramid, a coarse level's gradient sums those of every pixel it covers, so
        # L-BFGS's unit first step overshoots: without a line search the loss can jump several
        # times above its start and never come back (every pixel clamped). The strong Wolfe
        # search keeps each step a descent, at about 1.1 evaluations per iteration.
        optimizer = torch.optim.LBFGS(pyramid.levels, max_iter=config.iterations,
                                      history_size=50, tolerance_grad=0.0,
                                      tolerance_change=0.0,
                                      line_search_fn="strong_wolfe" if levels > 1 else None)

        def counted() -> torch.Tensor:
            value = closure()
            state = optimizer.state[optimizer._params[0]]
            done[0] = state.get("n_iter", 0)
            report(done[0], last[0])
            return value

        optimizer.step(counted)
    return pyramid.project().detach()


def _sizes(size: tuple[int, int], scales: int, min_side: int) -> list[tuple[int, int]]:
    """Pyramid sizes, coarse to fine, each half the next, never below ``min_side``."""
    h, w = size
    out = []
    for i in range(scales - 1, -1, -1):
        f = 2 ** i
        if min(h, w) / f >= min_side or i == 0:
            out.append((max(1, round(h / f)), max(1, round(w / f))))
    return out


def _noise(size: tuple[int, int], seed: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, *size, generator=generator).to(device)


def stylize(
    content: torch.Tensor,
    styles: Sequence[tuple[torch.Tensor, float]],
    config: StyleConfig = StyleConfig(),
    *,
    progress: Callable[[StyleProgress], None] | None = None,
    should_cancel: CancelCheck | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """``content`` (``[3, H, W]`` in [0, 1]) in the style of ``styles`` (``(image, weight)``
    pairs, weights blend their Gram matrices); returns ``[3, H, W]``."""
    _check(config)
    if not styles:
        raise InvalidArgument("styles: give at least one style image")
    weights = [w for _, w in styles]
    if any(not (math.isfinite(w) and w >= 0) for w in weights) or sum(weights) <= 0:
        raise InvalidArgument("style weights must be finite, >= 0 and not all 0")
    backbone = get_backbone(config.backbone, weights=config.weights, device=device)
    # Layers by their friendly names (the activations' keys); UnknownName lists the valid ones.
    style_weights = canonical_layer_keys(backbone.spec, config.resolved_style_layers(),
                                         "style_layers")
    for layer in style_weights:
        backbone.spec.layer(layer)
    content_layer = (backbone.spec.canonical_layer(config.resolved_content_layer())
                     if config.content_weight else None)
    net = _Net(backbone, [*style_weights, *([content_layer] if content_layer else [])],
               config.optimizer)
    sizes = _sizes(tuple(content.shape[-2:]), config.scales, 2 * backbone.spec.min_size)
    total_weight = sum(weights)
    x = None
    result = None
    for index, size in enumerate(sizes):
        target = upsample(backbone.prepare(content[None]), size)
        style_targets: dict[str, torch.Tensor] = {}
        for image, weight in styles:
            side = max(backbone.spec.min_size, round(config.style_scale * min(size)))
            style = backbone.prepare(image[None])
            scale = side / min(style.shape[-2:])
            style = upsample(style, (max(side, round(style.shape[-2] * scale)),
                                     max(side, round(style.shape[-1] * scale))))
            grams = image_grams(net, style, list(style_weights), config.transform,
                                config.temperature, config.tile, config.halo)
            for layer, g in grams.items():
                style_targets[layer] = style_targets.get(layer, 0) + g * (weight / total_weight)
        loss = _Loss(net, config.transform, config.temperature, style_weights, style_targets,
                     content_layer, style_weight=config.style_weight,
                     content_weight=config.content_weight, tv_weight=config.tv_weight,
                     tile=config.tile, halo=config.halo)
        loss.prepare_content(target)
        if x is None:
            if config.init == "content":
                x = target
            elif config.init == "style":
                x = upsample(backbone.prepare(styles[0][0][None]), size)
            else:
                x = _noise(size, config.seed, backbone.device)
        else:
            x = upsample(x, size)

        def report(iteration: int, value: float, index=index, size=size) -> None:
            if progress is not None:
                progress(StyleProgress(index, len(sizes), iteration, config.iterations, value,
                                       size))

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            x = _optimise(x, loss, config, report, should_cancel)
        result = x[0].cpu()
        if progress is not None:
            progress(StyleProgress(index, len(sizes), config.iterations, config.iterations,
                                   float(loss(x)[0]), size, result))
    assert result is not None
    if config.preserve_color:
        result = preserve_color(result, content)
    return result


@dataclass(frozen=True)
class ReconstructConfig:
    backbone: str = "efficientnet_lite0"
    weights: str = "pretrained"
    mode: str = "content"  # content: match activations; style: match Gram matrices only
    iterations: int = 200
    optimizer: str = "lbfgs"
    learning_rate: float = 0.05
    transform: str = "gram"
    temperature: float = 1.0
    seed: int = 0


def reconstruct(
    image: torch.Tensor,
    layers: Sequence[str],
    config: ReconstructConfig = ReconstructConfig(),
    *,
    all_at_once: bool = False,
    progress: Callable[[StyleProgress], None] | None = None,
    should_cancel: CancelCheck | None = None,
    device: str | torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """From seeded white noise, match ``image``'s activations (``mode="content"``) or Gram
    matrices (``mode="style"``) at each layer in turn (or all at once, key ``"all"``); returns
    ``{layer: [3, H, W]}``, shallow to deep as given."""
    check_reconstruct(config, layers)
    style_config = _reconstruct_style(config)
    backbone = get_backbone(config.backbone, weights=config.weights, device=device)
    names = [backbone.spec.layer(layer).name for layer in layers]
    groups = {"all": names} if all_at_once else {name: [name] for name in names}
    target = backbone.prepare(image[None])
    size = tuple(target.shape[-2:])
    out = {}
    for index, (key, group) in enumerate(groups.items()):
        net = _Net(backbone, group, config.optimizer)
        if config.mode == "content":
            loss = _Loss(net, "gram", 1.0, {}, {}, None)
            targets = {}
            with torch.no_grad():
                acts = net(target)
            targets = {layer: acts[layer] for layer in group}

            def fn(x: torch.Tensor, net=net, targets=targets, group=group):
                x = x.detach().requires_grad_()
                acts = net(x)
                value = sum(F.mse_loss(acts[k], targets[k]) / targets[k].pow(2).mean()
                            .clamp_min(1e-8) for k in group)
                (grad,) = torch.autograd.grad(value, x)
                return float(value.detach()), grad
        else:
            grams = image_grams(net, target, group, config.transform, config.temperature)
            loss = _Loss(net, config.transform, config.temperature, dict.fromkeys(group, 1.0),
                         grams, None)
            fn = loss

        def report(iteration: int, value: float, index=index) -> None:
            if progress is not None:
                progress(StyleProgress(index, len(groups), iteration, config.iterations, value,
                                       size))

        x0 = _noise(size, config.seed, backbone.device)
        out[key] = _optimise(x0, fn, style_config, report, should_cancel)[0].cpu()
        if progress is not None:
            progress(StyleProgress(index, len(groups), config.iterations, config.iterations,
                                   0.0, size, out[key]))
    return out
