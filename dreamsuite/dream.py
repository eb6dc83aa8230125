"""The dream engine: octave pyramid, jitter/roll, tiling, normalised gradient ascent.

``dream(image, config)`` takes a ``[3, H, W]`` image in ``[0, 1]`` and returns a
:class:`DreamResult` with the dreamed ``[3, H, W]`` image. A progress callback sees every step
(and the image at the end of each octave); a cancellation check stops the work within one step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

import dreamsuite
from dreamsuite.backbones import Backbone, get_backbone
from dreamsuite.errors import Cancelled, InvalidArgument
from dreamsuite.guide import guide_features, guide_weights, guided_maplist
from dreamsuite.objectives import LayerTerm, Maplist, Objective, from_maplist, guide_match
from dreamsuite.octaves import plan_octaves, smooth, tile_slices, total_variation, upsample

__all__ = ["DreamConfig", "DreamProgress", "DreamResult", "dream", "build_objective",
           "PROVENANCE_KEY"]

log = logging.getLogger(__name__)

#: PNG text chunk that holds a dream's provenance (JSON).
PROVENANCE_KEY = "dreamsuite:provenance"
GUIDE_MODES = ("weights", "match")


@dataclass(frozen=True)
class DreamConfig:
    """Everything that determines a dream besides the input image (and guides, if any)."""

    backbone: str = "efficientnet_lite0"
    weights: str = "pretrained"
    maplist: Maplist | None = None  # None: the backbone's default layer, whole
    octaves: int = 4
    octave_scale: float = 1.4
    steps: int = 10
    step_size: float = 0.02
    jitter: int = 32
    tile: int = 512
    seed: int = 0
    tv: float = 0.0
    smooth: float = 0.0  # gradient smoothing, sigma in pixels
    blur_every: int = 0  # blur the image every N steps (0: never)
    blur_sigma: float = 0.5
    guide_mode: str = "weights"

    def validate(self) -> DreamConfig:
        """Raise :class:`InvalidArgument` naming the first bad field."""
        for name in ("octave_scale", "step_size", "tv", "smooth", "blur_sigma"):
            if not math.isfinite(getattr(self, name)):
                raise InvalidArgument(f"{name} must be a finite number, not {getattr(self, name)}")
        checks = [
            (self.octaves >= 1, "octaves must be at least 1"),
            (self.octaves <= 16, "octaves must be at most 16"),
            (self.octave_scale > 1.0, "octave_scale must be greater than 1"),
            (1 <= self.steps <= 10_000, "steps must be between 1 and 10000"),
            (self.step_size > 0, "step_size must be positive"),
            (self.jitter >= 0, "jitter must be >= 0"),
            (self.tile >= 32, "tile must be at least 32 pixels"),
            (self.tv >= 0 and self.smooth >= 0 and self.blur_sigma >= 0,
             "tv, smooth and blur_sigma must be >= 0"),
            (self.blur_every >= 0, "blur_every must be >= 0"),
            (self.guide_mode in GUIDE_MODES, f"guide_mode must be one of {GUIDE_MODES}"),
            (self.weights in ("pretrained", "random"), "weights must be 'pretrained' or 'random'"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidArgument(message)
        return self

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["maplist"] = self.maplist.to_dict() if self.maplist else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> DreamConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if kwargs.get("maplist") is not None:
            kwargs["maplist"] = Maplist.from_dict(kwargs["maplist"])
        return cls(**kwargs)


@dataclass(frozen=True)
class DreamProgress:
    """One step of the optimisation. ``image`` (``[3, h, w]``) is set on an octave's last step."""

    octave: int
    octaves: int
    step: int
    steps: int
    loss: float
    size: tuple[int, int]
    elapsed: float
    image: torch.Tensor | None = None


@dataclass
class DreamResult:
    image: torch.Tensor  # [3, H, W] in [0, 1]
    losses: list[float]  # final loss of each octave
    provenance: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def sha256_of(image: torch.Tensor) -> str:
    """Digest of an image's 8-bit pixels, to record which input a dream came from."""
    data = image.detach().clamp(0, 1).mul(255).round().byte().cpu().numpy().tobytes()
    return hashlib.sha256(repr(tuple(image.shape)).encode() + data).hexdigest()


def resolve_maplist(backbone: Backbone, config: DreamConfig) -> Maplist:
    """The config's maplist, or the backbone's default layer; every name checked."""
    maplist = config.maplist or Maplist((LayerTerm(backbone.spec.default_layer),))
    if not maplist.terms:
        raise InvalidArgument("maplist is empty: give at least one layer")
    for term in maplist.terms:
        backbone.spec.layer(term.layer)
        if term.channels is not None:
            if not term.channels:
                raise InvalidArgument(f"layer {term.layer!r} lists no channels")
            backbone.spec.check_channels(term.layer, list(term.channels))
    return maplist


def build_objective(
    backbone: Backbone, config: DreamConfig, guides: Sequence[torch.Tensor] = (),
    guide_weights_override: dict[str, torch.Tensor] | None = None,
) -> tuple[Objective, Maplist]:
    """The objective to maximise and the maplist that records it.

    With guides in ``weights`` mode, the maplist's layers are re-weighted per map by the guide
    weights (or by ``guide_weights_override``, e.g. computed by the guide service)."""
    maplist = resolve_maplist(backbone, config)
    if not guides and guide_weights_override is None:
        return from_maplist(maplist), maplist
    layer_weights = {t.layer: t.weight for t in maplist.terms}
    if config.guide_mode == "match":
        total = None
        for layer, weight in layer_weights.items():
            part = weight * guide_match(layer, guide_features(backbone, guides, layer))
            total = part if total is None else total + part
        return total, maplist
    if guide_weights_override is not None:
        _check_guide_weights(backbone, guide_weights_override, layer_weights)
        weights = guide_weights_override
    else:
        weights = guide_weights(backbone, guides, list(layer_weights))
    guided = guided_maplist(weights, layer_weights)
    return from_maplist(guided), guided


def _check_guide_weights(backbone: Backbone, weights: dict[str, torch.Tensor],
                         layer_weights: dict[str, float]) -> None:
    """Precomputed guide weights must cover the maplist's layers with one weight per map."""
    for layer in layer_weights:
        if layer not in weights:
            raise InvalidArgument(f"guide weights are missing layer {layer!r}")
        expected = backbone.spec.layer(layer).channels
        got = weights[layer].numel()
        if got != expected or not torch.isfinite(weights[layer]).all():
            raise InvalidArgument(
                f"guide weights for {layer!r} must be {expected} finite numbers, not {got}"
            )


class _Stepper:
    """Gradient of the objective w.r.t. the pixels, tile by tile; memory bounded by the tile."""

    def __init__(self, backbone: Backbone, objective: Objective, config: DreamConfig):
        self.backbone = backbone
        self.extractor = backbone.extractor(objective.layers)
        self.objective = objective
        self.config = config
        self.autocast = backbone.device.type == "cuda"

    def loss(self, tile: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.autocast):
            value = self.objective(self.extractor(tile))
        if self.config.tv:
            value = value - self.config.tv * total_variation(tile)
        return value

    def gradient(self, image: torch.Tensor) -> tuple[torch.Tensor, float]:
        tiles = tile_slices(tuple(image.shape[-2:]), self.config.tile)
        if len(tiles) == 1:
            x = image.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
            value = self.loss(x)
            (grad,) = torch.autograd.grad(value, x)
            return grad, float(value.detach())
        grad = torch.empty_like(image)
        total = 0.0
        for ys, xs in tiles:
            x = image[..., ys, xs].contiguous(memory_format=torch.channels_last).requires_grad_()
            value = self.loss(x)
            (grad[..., ys, xs],) = torch.autograd.grad(value, x)
            total += float(value.detach()) / len(tiles)
        return grad, total

    def step(self, image: torch.Tensor, rng: random.Random, step: int) -> tuple[torch.Tensor, float]:
        """One ascent step on ``[1, 3, H, W]``: roll, gradient, unroll, normalise, clamp."""
        h, w = image.shape[-2:]
        tiled = max(h, w) > self.config.tile
        # When tiling, a whole-image roll of up to a tile moves the seams every step. Otherwise
        # jitter is capped at a quarter of the octave, so small octaves are not wrapped wholesale.
        reach = self.config.tile if tiled else min(self.config.jitter, min(h, w) // 4)
        dy, dx = (rng.randint(-reach, reach), rng.randint(-reach, reach)) if reach else (0, 0)
        rolled = torch.roll(image, (dy, dx), (2, 3)) if reach else image
        grad, value = self.gradient(rolled)
        if reach:
            grad = torch.roll(grad, (-dy, -dx), (2, 3))
        grad = smooth(grad, self.config.smooth)
        grad = grad / (grad.abs().mean() + 1e-8)
        image = (image + self.config.step_size * grad).clamp_(0, 1)
        if self.config.blur_every and (step + 1) % self.config.blur_every == 0:
            image = smooth(image, self.config.blur_sigma)
        return image, value


def dream(
    image: torch.Tensor,
    config: DreamConfig = DreamConfig(),
    *,
    guides: Sequence[torch.Tensor] = (),
    guide_weights_override: dict[str, torch.Tensor] | None = None,
    progress: Callable[[DreamProgress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    device: str | torch.device | None = None,
) -> DreamResult:
    """Dream ``image`` (``[3, H, W]`` in ``[0, 1]``) and return the dreamed ``[3, H, W]`` image.

    Raises :class:`InvalidArgument` / :class:`UnknownName` for a bad config and
    :class:`Cancelled` when ``should_cancel()`` turns true (checked before every step).
    """
    config.validate()
    if image.dim() != 3 or image.shape[0] != 3:
        raise InvalidArgument(f"image must be [3, H, W], not {list(image.shape)}")
    backbone = get_backbone(config.backbone, weights=config.weights, device=device)
    objective, maplist = build_objective(backbone, config, guides, guide_weights_override)
    plan = plan_octaves(tuple(image.shape[-2:]), config.octaves, config.octave_scale,
                        backbone.spec.min_size)
    tile, tile_warnings = _effective_tile(config.tile, backbone)
    warnings = plan.warnings + tile_warnings
    for message in warnings:
        log.warning(message)
    if not plan.sizes:
        raise InvalidArgument("no octave is large enough for the backbone; use fewer octaves")
    stepper = _Stepper(backbone, objective, dataclasses.replace(config, tile=tile))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        out, losses = _run_octaves(image, plan.sizes, plan.work_size, stepper, config,
                                   progress, should_cancel)
    provenance = _provenance(config, maplist, image, guides, backbone, out)
    return DreamResult(out, losses, provenance, warnings)


def _effective_tile(tile: int, backbone: Backbone) -> tuple[int, list[str]]:
    """The tile size to use, never cutting tiles below the backbone's minimum input: tiles are
    more than half the tile size, so twice the minimum is enough."""
    effective = max(tile, 2 * backbone.spec.min_size)
    if effective == tile:
        return tile, []
    return effective, [f"tile {tile} px would cut tiles below {backbone.name}'s minimum input "
                       f"{backbone.spec.min_size} px; using tile {effective} px"]


def _run_octaves(image, sizes, work_size, stepper, config, progress, should_cancel):
    device = stepper.backbone.device
    original = tuple(image.shape[-2:])
    base = upsample(image.unsqueeze(0).float().to(device), work_size)
    rng = random.Random(config.seed)
    started = time.perf_counter()
    detail = None
    losses = []
    for octave, size in enumerate(sizes):
        octave_base = upsample(base, size)
        current = octave_base if detail is None else (octave_base + upsample(detail, size))
        current = current.clamp(0, 1)
        value = 0.0
        for step in range(config.steps):
            if should_cancel is not None and should_cancel():
                raise Cancelled(f"cancelled at octave {octave + 1}, step {step + 1}")
            current, value = stepper.step(current, rng, step)
            if progress is not None:
                last = step == config.steps - 1
                progress(DreamProgress(
                    octave, len(sizes), step, config.steps, value, size,
                    time.perf_counter() - started, current[0].detach().cpu() if last else None,
                ))
        losses.append(value)
        detail = current - octave_base
        del octave_base
    out = upsample(current, original) if tuple(current.shape[-2:]) != original else current
    return out[0].detach().clamp(0, 1).cpu(), losses


def _provenance(config, maplist, image, guides, backbone, out) -> dict:
    recorded = dataclasses.replace(config, maplist=maplist)
    return {
        "dreamsuite": dreamsuite.__version__,
        "config": recorded.to_dict(),
        "guided": bool(guides),
        "input_sha256": sha256_of(image),
        "guides_sha256": [sha256_of(g) for g in guides],
        "device": str(backbone.device),
        "size": list(out.shape[-2:]),
    }


def provenance_text(provenance: dict) -> dict[str, str]:
    """PNG text chunks for a result: the provenance as JSON under :data:`PROVENANCE_KEY`."""
    return {PROVENANCE_KEY: json.dumps(provenance, sort_keys=True)}
