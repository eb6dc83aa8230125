"""Dreams in one pass: an image-to-image network trained on (photo, its dream) pairs.

:class:`Dream2Dream` is a small, fully convolutional residual encoder/decoder: a 3x3 stem, two
stride-2 convolutions down to 1/4 of the input side, ``blocks`` residual blocks there, two
nearest-neighbour upsamplings with a 3x3 convolution each (skip connections from the encoder
added back) and a 3x3 convolution to three channels. It predicts a *residual*: the output is
``photo + residual``, clamped to ``[0, 1]``, so a network that has learned nothing returns the
photo, and it only has to learn what the dream changes.

Several dream configs live in one network: each is a *condition* (an index), and a per-condition
embedding modulates every residual block (FiLM: ``h * (1 + gamma_c) + beta_c`` after the
block's first convolution; ``gamma`` and ``beta`` start at 0, so a new condition starts as the
shared network). The condition is chosen per image.

It works at any input size: the input is reflect-padded to a multiple of 4 and the output
cropped back. Every operation works on each image of a batch alone (no batch statistics), so an
image gives the same output alone or in any batch.

>>> net = Dream2Dream(width=16, conditions=2)
>>> out = one_pass(net.eval(), photo, condition=1)      # [3, H, W] in [0, 1], photo's size
>>> gmac(net)                                           # the cost at 512 x 512, in GMAC

:func:`one_pass` is exactly what the TorchServe handler (``handlers/dream2dream_handler.py``)
computes for one request, so tests compare the two.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dreamsuite.device import out_of_memory
from dreamsuite.errors import InvalidArgument, shorten

__all__ = [
    "DEFAULT_WIDTH",
    "DEFAULT_BLOCKS",
    "MULTIPLE",
    "MIN_SIDE",
    "Dream2Dream",
    "build_dream2dream",
    "condition_index",
    "one_pass",
    "one_pass_batch",
    "conv_macs",
    "gmac",
    "EXPORT_FORMAT",
    "export_state",
    "from_export",
]

log = logging.getLogger(__name__)

#: Channels of the full-resolution stage (x2 at 1/2, x4 at 1/4 of the side).
DEFAULT_WIDTH = 16
#: Residual blocks at 1/4 of the side.
DEFAULT_BLOCKS = 4
#: Input sides are padded to a multiple of this (two stride-2 stages).
MULTIPLE = 4
#: Smallest input side (the reflect padding of the 1/4 stage needs 2 pixels there).
MIN_SIDE = 8
#: Images with a side over this are dreamed in tiles of this side (plus a margin that covers
#: the network's receptive field), so memory stays bounded at any size; same pixels.
TILE_SIDE = 1024


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    # Reflect padding: no dark frame at the borders, and no seam when images are tiled.
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, padding_mode="reflect")


class _Block(nn.Module):
    """``x + conv(relu(film(conv(x))))``: a residual block modulated per condition."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = _conv(channels, channels)
        self.conv2 = _conv(channels, channels)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        h = h * (1 + gamma) + beta
        return x + self.conv2(F.relu(h))


class Dream2Dream(nn.Module):
    """``forward(photos [N, 3, H, W] in [0, 1], conditions [N] long)`` -> dreams, same shape,
    in ``[0, 1]``. See the module docstring."""

    def __init__(self, width: int = DEFAULT_WIDTH, conditions: int = 1,
                 blocks: int = DEFAULT_BLOCKS):
        super().__init__()
        if conditions < 1 or blocks < 1 or width < 1:
            raise ValueError("width, conditions and blocks must be at least 1")
        self.width, self.conditions, self.blocks = width, conditions, blocks
        w1, w2, w4 = width, 2 * width, 4 * width
        self.stem = _conv(3, w1)
        self.down1 = _conv(w1, w2, stride=2)
        self.down2 = _conv(w2, w4, stride=2)
        self.body = nn.ModuleList(_Block(w4) for _ in range(blocks))
        self.up1 = _conv(w4, w2)
        self.up2 = _conv(w2, w1)
        self.tail = _conv(w1, 3)
        # FiLM parameters per condition and block: [gamma | beta], zero at the start.
        self.film = nn.Embedding(conditions, blocks * 2 * w4)
        nn.init.zeros_(self.film.weight)
        # The residual starts at zero: an untrained network returns the photo.
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def residual(self, x: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        """The predicted change of ``x`` (sides a multiple of :data:`MULTIPLE`)."""
        if _inference_fast(x, self.stem.weight) and not _FAST_REFUSED:
            try:
                return self._residual_fast(x, conditions)
            except RuntimeError as exc:  # a oneDNN build that refuses the fused op: once
                if out_of_memory(exc):  # load, not a refusal: the fast path stays
                    raise
                _FAST_REFUSED.append(str(exc))
                log.warning("dream2dream: the fused CPU path failed (%s); using the modules' "
                            "path from now on", shorten(str(exc), 300))
        s1 = F.relu(self.stem(x))
        s2 = F.relu(self.down1(s1))
        h = F.relu(self.down2(s2))
        film = self.film(conditions).view(len(x), self.blocks, 2, -1, 1, 1).to(h.dtype)
        for i, block in enumerate(self.body):
            h = block(h, film[:, i, 0], film[:, i, 1])
        h = F.relu(self.up1(F.interpolate(h, scale_factor=2.0, mode="nearest"))) + s2
        h = F.relu(self.up2(F.interpolate(h, scale_factor=2.0, mode="nearest"))) + s1
        return self.tail(h)

    def _residual_fast(self, x: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        """:meth:`residual` for inference on the CPU, the same arithmetic in fewer passes over
        memory: each convolution's reflect padding is written in one copy (not
        ``reflection_pad2d``, the slowest step here), ReLU is the convolution's oneDNN post-op,
        and each nearest-neighbour upsampling and the reflect padding after it are one copy
        (:func:`_up2_padded`)."""
        s1 = _conv_fast(self.stem, _reflect1(x), relu=True)
        s2 = _conv_fast(self.down1, _reflect1(s1), relu=True)
        h = _conv_fast(self.down2, _reflect1(s2), relu=True)
        film = self.film(conditions).view(len(x), self.blocks, 2, -1, 1, 1).to(h.dtype)
        for i, block in enumerate(self.body):
            inner = _conv_fast(block.conv1, _reflect1(h))
            inner = torch.addcmul(film[:, i, 1], inner, 1 + film[:, i, 0]).relu_()
            h = h + _conv_fast(block.conv2, _reflect1(inner))
        h = _conv_fast(self.up1, _up2_padded(h), relu=True)[..., 1:-1, 1:-1] + s2
        h = _conv_fast(self.up2, _up2_padded(h), relu=True)[..., 1:-1, 1:-1] + s1
        return _conv_fast(self.tail, _reflect1(h))

    def forward(self, x: torch.Tensor, conditions: torch.Tensor,
                clamp: bool = True) -> torch.Tensor:
        """``x + residual`` at ``x``'s size, clamped to ``[0, 1]`` unless ``clamp`` is False
        (training: a pixel beyond the range still gets a gradient back into it)."""
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % MULTIPLE, (-w) % MULTIPLE
        padded = x
        if pad_h or pad_w:
            mode = "reflect" if h > pad_h and w > pad_w else "replicate"
            padded = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        out = (padded + self.residual(padded, conditions).to(padded.dtype))[..., :h, :w]
        return out.clamp(0, 1) if clamp else out


#: Set when the fused CPU path once raised (a private oneDNN op a torch build may lack).
_FAST_REFUSED: list[str] = []


def _inference_fast(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :meth:`Dream2Dream._residual_fast` applies: no autograd, float32 on the CPU with
    oneDNN (training, CUDA and other dtypes take the modules' own path)."""
    return (not torch.is_grad_enabled() and x.device.type == "cpu"
            and x.dtype == torch.float32 and weight.dtype == torch.float32
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            and min(x.shape[-2:]) >= 2)


def _layout(x: torch.Tensor) -> torch.memory_format:
    channels_last = x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


def _reflect1(x: torch.Tensor) -> torch.Tensor:
    """``F.pad(x, (1, 1, 1, 1), mode="reflect")`` (sides >= 2) as one copy into the padded
    tensor plus its border rows and columns, in ``x``'s memory layout."""
    n, c, h, w = x.shape
    out = torch.empty((n, c, h + 2, w + 2), dtype=x.dtype, device=x.device,
                      memory_format=_layout(x))
    out[:, :, 1:-1, 1:-1] = x
    out[:, :, 0, 1:-1] = x[:, :, 1]
    out[:, :, -1, 1:-1] = x[:, :, -2]
    out[:, :, :, 0] = out[:, :, :, 2]
    out[:, :, :, -1] = out[:, :, :, -3]
    return out


def _up2_padded(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x of ``x`` edge-padded by one pixel, ``[N, C, 2h + 4, 2w + 4]``: its
    centre ``[..., 1:-1, 1:-1]`` is the reflect-padded 2x upsampling of ``x`` (a reflected row
    of a doubled image repeats its edge row), so a valid 3x3 convolution of it, cropped by one
    pixel, is the convolution of the reflect-padded upsampling. One copy, channels last."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")  # small: a quarter of the output
    n, c, h, w = p.shape
    out = torch.empty((n, c, 2 * h, 2 * w), dtype=p.dtype, device=p.device,
                      memory_format=torch.channels_last)
    source = p.permute(0, 2, 3, 1)[:, :, None, :, None, :]  # [n, h, 1, w, 1, c]
    out.permute(0, 2, 3, 1).view(n, h, 2, w, 2, c).copy_(source.expand(n, h, 2, w, 2, c))
    return out


def _conv_fast(conv: nn.Conv2d, padded: torch.Tensor, *, relu: bool = False) -> torch.Tensor:
    """``conv`` (3x3, its reflect padding already applied to ``padded``) then ReLU, the ReLU
    as oneDNN's post-op."""
    if relu:
        return torch.ops.mkldnn._convolution_pointwise(
            padded, conv.weight, conv.bias, [0, 0], list(conv.stride), [1, 1], 1, "relu", [], "")
    return F.conv2d(padded, conv.weight, conv.bias, conv.stride)


def build_dream2dream(width: int = DEFAULT_WIDTH, conditions: int = 1) -> Dream2Dream:
    """The network with random weights from the global torch generator (seed it first)."""
    return Dream2Dream(width=width, conditions=conditions)


def condition_index(condition: int | str | None, names: Sequence[str]) -> int:
    """The index of ``condition`` among ``names``: an index, a name, a decimal index as text,
    or None for condition 0. :class:`InvalidArgument` lists the valid ones otherwise."""
    if condition is None or condition == "":
        return 0
    if isinstance(condition, bool):
        condition = str(condition)
    if isinstance(condition, str):
        if condition in names:
            return list(names).index(condition)
        text = condition.strip()
        # isdecimal: isdigit also takes "²", which int() refuses; 9 digits: more is no index
        if text.lstrip("-").isdecimal() and len(text) <= 10:
            condition = int(text)
    if isinstance(condition, int) and 0 <= condition < len(names):
        return condition
    valid = ", ".join(f"{i}={n}" for i, n in enumerate(names))
    raise InvalidArgument(f"unknown condition {shorten(condition)!r}; this model has "
                          f"{len(names)}: {shorten(valid, 400)} (give the name or the index)")


def receptive_margin(model: Dream2Dream) -> int:
    """Input pixels on each side that can reach an output pixel, rounded up to
    :data:`MULTIPLE`: the stem, the two strided convolutions, ``blocks`` x 2 convolutions at
    1/4, the two after upsampling (and its nearest-neighbour offset), the tail."""
    radius = 1 + 1 + 2 + 2 * 4 * model.blocks + 2 + 1 + 1 + 3
    return -(-radius // MULTIPLE) * MULTIPLE


def _tiled(model: Dream2Dream, x: torch.Tensor, index: torch.Tensor, tile: int) -> torch.Tensor:
    """``model(x, index)`` computed tile by tile: each tile of side ``tile`` (a multiple of
    :data:`MULTIPLE`, so every tile keeps the strided stages' grid) runs with
    :func:`receptive_margin` of context, whose output is dropped; the borders of the image are
    the image's own in every tile, so the pixels are those of one pass over the whole."""
    height, width = x.shape[-2:]
    margin = receptive_margin(model)
    out = torch.empty(x.shape, dtype=torch.float32)
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            t0, l0 = max(0, top - margin), max(0, left - margin)
            t1, l1 = min(height, top + tile + margin), min(width, left + tile + margin)
            bottom, right = min(height, top + tile), min(width, left + tile)
            piece = model(x[..., t0:t1, l0:l1].contiguous(memory_format=torch.channels_last),
                          index)
            out[..., top:bottom, left:right] = piece[
                ..., top - t0:bottom - t0, left - l0:right - l0].float().cpu()
    return out


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def one_pass_batch(model: Dream2Dream, images: torch.Tensor,
                   conditions: Sequence[int] | torch.Tensor, *,
                   tile: int = TILE_SIDE) -> torch.Tensor:
    """Dreams of ``images`` ``[N, 3, H, W]`` in ``[0, 1]`` (one size) with one condition index
    each, as float ``[N, 3, H, W]`` in ``[0, 1]`` on the CPU. ``model`` must be in eval mode;
    it runs in float32 on its own device (the handler's arithmetic), clamped. Images with a
    side over ``tile`` (a multiple of :data:`MULTIPLE`) run in tiles (:func:`_tiled`)."""
    if model.training:
        raise InvalidArgument("one_pass needs the model in eval mode")
    device = _device_of(model)
    index = torch.as_tensor(conditions, dtype=torch.long).reshape(-1).to(device)
    if images.dim() != 4 or images.shape[1] != 3 or len(index) != len(images):
        raise InvalidArgument("one_pass_batch takes [N, 3, H, W] images and N conditions")
    if min(images.shape[-2:]) < MIN_SIDE:
        raise InvalidArgument(f"the image is {images.shape[-1]}x{images.shape[-2]} px; a one-pass "
                              f"dream needs at least {MIN_SIDE} px on each side")
    if tile < 2 * MULTIPLE or tile % MULTIPLE:
        raise InvalidArgument(f"tile must be a multiple of {MULTIPLE} of at least "
                              f"{2 * MULTIPLE}, not {tile}")
    x = images.to(device, torch.float32).contiguous(memory_format=torch.channels_last)
    if max(x.shape[-2:]) > tile:
        return _tiled(model, x, index, tile)
    return model(x, index).float().cpu().contiguous()


def one_pass(model: Dream2Dream, image: torch.Tensor, condition: int = 0, *,
             tile: int = TILE_SIDE) -> torch.Tensor:
    """The one-pass dream of one ``[3, H, W]`` image in ``[0, 1]``: ``[3, H, W]`` in ``[0, 1]``
    (what the TorchServe handler answers, before PNG encoding); tiled over ``tile`` px."""
    if image.dim() != 3:
        raise InvalidArgument("one_pass takes one [3, H, W] image")
    if not 0 <= condition < model.conditions:
        raise InvalidArgument(f"condition {condition} is not in [0, {model.conditions})")
    return one_pass_batch(model, image.unsqueeze(0), [condition], tile=tile)[0]


def conv_macs(model: nn.Module, size: tuple[int, int] = (512, 512)) -> int:
    """Multiply-accumulates of every convolution (and linear layer) of one forward pass of
    ``model`` on one ``size`` image, counted by forward hooks (on the modules' own path: the
    fast inference path computes the same convolutions without calling the modules)."""
    total = 0

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, nn.Conv2d | nn.Linear)]
    device = _device_of(model)
    try:
        with torch.enable_grad():
            model(torch.zeros(1, 3, *size, device=device),
                  torch.zeros(1, dtype=torch.long, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def gmac(model: nn.Module, size: int = 512) -> float:
    """The cost of one ``size`` x ``size`` image in GMAC (10^9 multiply-accumulates)."""
    return conv_macs(model, (size, size)) / 1e9


#: Version of :func:`export_state`'s layout (the serialized file of a model archive).
EXPORT_FORMAT = 1


def export_state(model: Dream2Dream, conditions: Sequence[str], /, **info: object) -> dict:
    """What a model archive holds: the weights, the architecture and the condition names in
    index order (plus ``info``: plain values); loads with ``torch.load(weights_only=True)``."""
    if len(conditions) != model.conditions:
        raise ValueError(f"{len(conditions)} condition names for {model.conditions} conditions")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {"format": EXPORT_FORMAT, "kind": "dream2dream", "width": model.width,
            "blocks": model.blocks, "conditions": [str(c) for c in conditions],
            "state_dict": state, "info": dict(info)}


def from_export(state: dict, device: str | torch.device = "cpu") -> tuple[Dream2Dream, list[str]]:
    """The network (eval mode, channels_last, on ``device``) and its condition names from
    :func:`export_state`'s dict."""
    if not isinstance(state, dict) or state.get("format") != EXPORT_FORMAT or \
            state.get("kind") != "dream2dream":
        raise InvalidArgument(f"not a format-{EXPORT_FORMAT} dream2dream export")
    names = [str(c) for c in state["conditions"]]
    model = Dream2Dream(width=int(state["width"]), conditions=len(names),
                        blocks=int(state["blocks"]))
    model.load_state_dict(state["state_dict"])
    model = model.to(device, memory_format=torch.channels_last)
    return model.eval().requires_grad_(False), names
