"""The dream engine: octave pyramid, jitter/roll, tiling, normalised gradient ascent.

``dream(image, config)`` takes a ``[3, H, W]`` image in ``[0, 1]`` and returns a
:class:`DreamResult` with the dreamed ``[3, H, W]`` image. A progress callback sees every step
(and the image at the end of each octave); a cancellation check stops the work within one step.
Optionally the step is conditioned (:mod:`dreamsuite.engine.clean`) and the objective changes
with the octave and, through guide masks, with the position (:mod:`dreamsuite.engine.shaping`).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from dreamsuite.backbones import Backbone, BackboneSpec, get_backbone
from dreamsuite.cpus import keep_freed_memory
from dreamsuite.engine.clean import precondition
from dreamsuite.engine.config import (
    CheckedConfig,
    DreamConfig,
    check_config,
    check_guide_shaping,
    check_guide_weights,
    field_errors,
)
from dreamsuite.engine.guide import (
    GUIDE_MAX_SIDE,
    check_image_side,
    guide_features,
    guide_weights,
    guided_maplist,
)
from dreamsuite.engine.objectives import Maplist, Objective, Sum, from_maplist, guide_match, guided
from dreamsuite.engine.octaves import (
    plan_octaves,
    roll_copy,
    smooth,
    tile_slices,
    total_variation,
    upsample,
)
from dreamsuite.engine.provenance import make_provenance
from dreamsuite.engine.shaping import Place, Shaped, is_shaped, prepare_masks, shaped_objective
from dreamsuite.errors import Cancelled, InvalidArgument
from dreamsuite.images import max_pixels_limit

__all__ = ["DreamProgress", "DreamResult", "DreamRun", "GradientRequest", "dream",
           "prepare_dream", "build_objective", "drive", "gradient"]

log = logging.getLogger(__name__)

#: ``should_cancel()``: true once the caller no longer wants the result.
CancelCheck = Callable[[], bool]


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


def build_objective(
    backbone: Backbone, checked: CheckedConfig, guides: Sequence[torch.Tensor] = (),
    guide_weights_override: Mapping[str, torch.Tensor] | None = None,
) -> tuple[Objective, Maplist]:
    """The objective to maximise and the maplist that records it.

    With guides in ``weights`` mode, each layer's maps are weighted by the guide weights
    (computed here, or ``guide_weights_override`` checked by :func:`check_guide_weights`, e.g.
    from the guide service); the recorded maplist carries those weights for provenance."""
    config, maplist = checked.config, checked.maplist
    if not guides and guide_weights_override is None:
        return from_maplist(maplist), maplist
    layer_weights = {t.layer: t.weight for t in maplist.terms}
    if config.guide_mode == "match":
        parts = [weight * guide_match(layer, guide_features(backbone, guides, layer))
                 for layer, weight in layer_weights.items()]
        return Sum(parts), maplist
    weights = (dict(guide_weights_override) if guide_weights_override is not None
               else guide_weights(backbone, guides, list(layer_weights)))
    weights = {layer: weights[layer] for layer in layer_weights}
    return guided(weights, layer_weights), guided_maplist(weights, layer_weights)


@dataclass(eq=False)
class GradientRequest:
    """One forward+backward the octave loop needs: ``pixels`` (``[1, 3, h, w]``, channels_last,
    detached) of a whole octave or of one tile, for the dream ``run``. The answer sent back
    into the loop is ``(gradient of run.value at pixels, value)``."""

    pixels: torch.Tensor
    run: DreamRun


#: A generator of gradient requests that returns its result once the work is done.
Steps = Generator[GradientRequest, tuple[torch.Tensor, float], Any]


def gradient(request: GradientRequest) -> tuple[torch.Tensor, float]:
    """Answer one request on its own (the batch of one)."""
    run = request.run
    x = request.pixels.requires_grad_()
    value = run.value(run.features(run.extractor, x), x)
    (grad,) = torch.autograd.grad(value, x)
    return grad, float(value.detach())


def _place(run: DreamRun | None, place: Place) -> None:
    """Tell ``run`` where the pixels of the request about to be yielded lie: a run has one
    request out at a time, and :meth:`DreamRun.value` is only called for it, so run state
    serves a batched pass too (it calls ``run.value`` per sample)."""
    if run is not None:
        run.place = place


class _Stepper:
    """The ascent step as a generator of gradient requests, tile by tile (memory bounded by the
    tile), so one caller can answer the requests of several dreams with one batched pass."""

    def __init__(self, config: DreamConfig, should_cancel: CancelCheck | None = None):
        self.should_cancel = should_cancel
        self.config = config
        self.conditioned = bool(config.laplacian or config.decorrelate or config.fourier)

    def gradient(self, image: torch.Tensor, run: DreamRun, octave: int,
                 masks: torch.Tensor | None) -> Steps:
        tiles = tile_slices(tuple(image.shape[-2:]), self.config.tile)
        if len(tiles) == 1:
            x = image.detach().contiguous(memory_format=torch.channels_last)
            _place(run, Place(octave, masks))
            return (yield GradientRequest(x, run))
        grad = torch.empty_like(image)
        total = 0.0
        for ys, xs in tiles:
            # Big images take many tiles per step: a cancelled or expired call stops here too.
            if self.should_cancel is not None and self.should_cancel():
                raise Cancelled("cancelled between tiles")
            x = image[..., ys, xs].contiguous(memory_format=torch.channels_last)
            _place(run, Place(octave, None if masks is None else masks[..., ys, xs]))
            grad[..., ys, xs], value = yield GradientRequest(x, run)
            total += value / len(tiles)
        return grad, total

    def step(self, image: torch.Tensor, rng: random.Random, step: int, run: DreamRun,
             octave: int = 0, masks: torch.Tensor | None = None) -> Steps:
        """One ascent step on ``[1, 3, H, W]``: roll, gradient, unroll, condition, normalise,
        clamp; returns ``(image, value)``. ``octave`` indexes the config's schedule; ``masks``
        (``[1, G, H, W]``) are rolled and tiled with the image."""
        h, w = image.shape[-2:]
        tiled = max(h, w) > self.config.tile
        # When tiling, a whole-image roll of up to a tile moves the seams every step. Otherwise
        # jitter is capped at a quarter of the octave, so small octaves are not wrapped wholesale.
        reach = self.config.tile if tiled else min(self.config.jitter, min(h, w) // 4)
        dy, dx = (rng.randint(-reach, reach), rng.randint(-reach, reach)) if reach else (0, 0)
        # Rolled straight into the layout the pass takes (channels_last, when one request
        # covers the image; tiles are cut from it and converted each), and the gradient rolled
        # back straight into the layout the rest of the step reads: one copy each way.
        layout = torch.contiguous_format if tiled else torch.channels_last
        rolled = roll_copy(image, (dy, dx), layout) if reach else image
        if reach and masks is not None:
            masks = roll_copy(masks, (dy, dx))
        grad, value = yield from self.gradient(rolled, run, octave, masks)
        del rolled  # a whole image: big ones are tiled to bound memory, so hold no extra copy
        if reach:
            grad = roll_copy(grad, (-dy, -dx))
        grad = smooth(grad, self.config.smooth)
        if self.conditioned:
            grad = precondition(grad, laplacian=self.config.laplacian,
                                decorrelate=self.config.decorrelate, fourier=self.config.fourier)
        # image + step_size * grad / mean|grad|, without a copy of grad's magnitudes
        wide = torch.float64 if grad.dtype == torch.float64 else torch.float32
        scale = torch.linalg.vector_norm(grad, 1, dtype=wide) / grad.numel() + 1e-8
        image = torch.add(image, grad, alpha=self.config.step_size / float(scale)).clamp_(0, 1)
        if self.config.blur_every and (step + 1) % self.config.blur_every == 0:
            image = smooth(image, self.config.blur_sigma)
        return image, value


class DreamRun:
    """A checked, planned dream: its backbone, objective and octave sizes, and the loop as a
    generator (:meth:`steps`) that asks for gradients instead of computing them, so that
    :func:`dreamsuite.engine.batch.dream_together` can step several dreams as one batch.
    :meth:`run` answers the requests one by one: that is :func:`dream`."""

    def __init__(self, image: torch.Tensor, checked: CheckedConfig, backbone: Backbone,
                 objective: Objective, maplist: Maplist, sizes: list[tuple[int, int]],
                 work_size: tuple[int, int], guides: Sequence[torch.Tensor],
                 warnings: list[str], *, shaped: Shaped | None = None,
                 masks: torch.Tensor | None = None,
                 guide_masks: Sequence[torch.Tensor | None] = ()):
        self.image = image
        self.checked = checked
        self.config = checked.config
        self.backbone = backbone
        self.objective = objective
        self.maplist = maplist
        self.sizes = sizes
        self.work_size = work_size
        self.guides = guides
        self.warnings = warnings
        self.tile, _ = _effective_tile(self.config.tile, backbone)
        self.extractor = backbone.extractor(objective.layers)
        self.autocast = backbone.device.type == "cuda"
        # Local and scale-dependent objectives: the objective at a place, the guide masks at
        # the working size ([1, G, H, W]), and where the pending request's pixels lie.
        self.shaped = shaped
        self.masks = masks
        self.guide_masks = list(guide_masks)
        self.first_octave = self.config.octaves - len(sizes)  # dropped octaves come first
        self.place: Place | None = None

    def features(self, extractor: Callable[[torch.Tensor], dict[str, torch.Tensor]],
                 pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``extractor(pixels)`` under this dream's autocast (float16 on CUDA)."""
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.autocast):
            return extractor(pixels)

    def value(self, acts: Mapping[str, torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
        """The objective of activations ``acts`` of ``pixels`` (one image), minus total
        variation. A shaped objective is evaluated at :attr:`place` (where the loop's pending
        request lies; else the last octave, masks over the whole of ``pixels``)."""
        objective = self.objective if self.shaped is None else self.shaped(
            self.place or self._whole(tuple(pixels.shape[-2:])))
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.autocast):
            value = objective(acts)
        if self.config.tv:
            value = value - self.config.tv * total_variation(pixels)
        return value

    def _whole(self, size: tuple[int, int]) -> Place:
        """The last octave, guide masks over a whole image of ``size``."""
        masks = None if self.masks is None else upsample(self.masks, size)
        return Place(self.config.octaves - 1, masks)

    def evaluate(self, image: torch.Tensor) -> float:
        """The objective (no total variation) of a whole ``[3, H, W]`` image as the last octave
        weighs it: no jitter, no tiles. Measures what a dream gained."""
        x = image.detach().unsqueeze(0).float().to(self.backbone.device)
        x = x.contiguous(memory_format=torch.channels_last)
        objective = self.objective if self.shaped is None else self.shaped(
            self._whole(tuple(x.shape[-2:])))
        with torch.no_grad():
            acts = self.features(self.extractor, x)
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.autocast):
                return float(objective(acts))

    def steps(self, progress: Callable[[DreamProgress], None] | None = None,
              should_cancel: CancelCheck | None = None) -> Steps:
        """The optimisation as a generator of :class:`GradientRequest`; returns the
        :class:`DreamResult`. The loop draws no torch random numbers (jitter comes from its
        own seeded ``random.Random``), so interleaving several runs changes nothing."""
        config = dataclasses.replace(self.config, tile=self.tile)
        stepper = _Stepper(config, should_cancel)
        out, losses = yield from _run_octaves(self, stepper, progress, should_cancel)
        provenance = make_provenance(self.config, self.maplist, self.image, self.guides,
                                     self.backbone.device, out, guide_masks=self.guide_masks)
        return DreamResult(out, losses, provenance, self.warnings)

    def run(self, progress: Callable[[DreamProgress], None] | None = None,
            should_cancel: CancelCheck | None = None) -> DreamResult:
        """The whole dream, each gradient computed on its own."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            return drive(self.steps(progress, should_cancel), gradient)


def drive(steps: Steps, answer: Callable[[GradientRequest], tuple[torch.Tensor, float]]):
    """Run the generator ``steps`` to its end, answering each request with ``answer``."""
    try:
        request = next(steps)
        while True:
            request = steps.send(answer(request))
    except StopIteration as done:
        return done.value


def prepare_dream(
    image: torch.Tensor,
    config: DreamConfig = DreamConfig(),
    *,
    guides: Sequence[torch.Tensor] = (),
    guide_weights_override: Mapping[str, torch.Tensor] | None = None,
    guide_masks: Sequence[torch.Tensor | None] = (),
    device: str | torch.device | None = None,
    max_pixels: int | None = None,
) -> DreamRun:
    """Check and plan a dream (see :func:`dream` for the arguments and errors) without running
    it: loads the backbone and builds the objective."""
    checked = check_config(config)
    keep_freed_memory()  # a dream allocates and frees tens of MB a step: keep them (once)
    if image.dim() != 3 or image.shape[0] != 3:
        raise InvalidArgument(f"image must be [3, H, W], not {list(image.shape)}")
    spec = checked.spec
    plan = plan_octaves(tuple(image.shape[-2:]), config.octaves, config.octave_scale,
                        spec.min_size, max_pixels=max_pixels_limit(max_pixels))
    _check_guides(spec, guides)
    check_guide_shaping(config, len(guides), len(guide_masks))
    if guide_weights_override is not None:
        guide_weights_override = check_guide_weights(spec, guide_weights_override,
                                                     checked.maplist.layers)
    backbone = get_backbone(config.backbone, weights=config.weights, device=device)
    masks = prepare_masks(guide_masks, tuple(image.shape[-2:]), plan.work_size, backbone.device)
    shaped = (shaped_objective(backbone, checked, guides, guide_masks, guide_weights_override)
              if is_shaped(checked, guide_masks) else None)
    objective, maplist = build_objective(backbone, checked, guides, guide_weights_override)
    _, tile_warnings = _effective_tile(config.tile, backbone)
    warnings = plan.warnings + tile_warnings
    for message in warnings:
        log.warning(message)
    if not plan.sizes:
        raise InvalidArgument("no octave is large enough for the backbone; use fewer octaves")
    return DreamRun(image, checked, backbone, objective, maplist, plan.sizes, plan.work_size,
                    guides, warnings, shaped=shaped, masks=masks, guide_masks=guide_masks)


def dream(
    image: torch.Tensor,
    config: DreamConfig = DreamConfig(),
    *,
    guides: Sequence[torch.Tensor] = (),
    guide_weights_override: Mapping[str, torch.Tensor] | None = None,
    guide_masks: Sequence[torch.Tensor | None] = (),
    progress: Callable[[DreamProgress], None] | None = None,
    should_cancel: CancelCheck | None = None,
    device: str | torch.device | None = None,
    max_pixels: int | None = None,
) -> DreamResult:
    """Dream ``image`` (``[3, H, W]`` in ``[0, 1]``) and return the dreamed ``[3, H, W]`` image.

    Raises :class:`InvalidArgument` / :class:`UnknownName` for a bad config, or when the image
    would exceed ``max_pixels`` (default ``$DREAMSUITE_MAX_PIXELS``) once scaled up to the
    backbone's minimum input, and :class:`Cancelled` when ``should_cancel()`` turns true
    (checked before every step and between tiles). Guides must be at least the backbone's
    minimum input on each side once downscaled to ``GUIDE_MAX_SIDE``. ``guide_masks`` (one per
    guide, or none; None for a guide that covers the whole image) are ``[H, W]`` images in
    ``[0, 1]`` of the input's aspect ratio: each guide grows its patterns where its mask is
    (see :mod:`dreamsuite.engine.shaping`).
    """
    run = prepare_dream(image, config, guides=guides,
                        guide_weights_override=guide_weights_override,
                        guide_masks=guide_masks, device=device, max_pixels=max_pixels)
    return run.run(progress, should_cancel)


def _check_guides(spec: BackboneSpec, guides: Sequence[torch.Tensor]) -> None:
    """Guides are measured at most ``GUIDE_MAX_SIDE`` px, never scaled up: each must keep the
    backbone's minimum input (a smaller one breaks backbones with unpadded convolutions)."""
    for i, guide in enumerate(guides):
        with field_errors(f"guides[{i}]"):
            check_image_side(spec, guide, max_side=GUIDE_MAX_SIDE)


def _effective_tile(tile: int, backbone: Backbone) -> tuple[int, list[str]]:
    """The tile size to use, never cutting tiles below the backbone's minimum input: tiles are
    more than half the tile size, so twice the minimum is enough."""
    effective = max(tile, 2 * backbone.spec.min_size)
    if effective == tile:
        return tile, []
    return effective, [f"tile {tile} px would cut tiles below {backbone.name}'s minimum input "
                       f"{backbone.spec.min_size} px; using tile {effective} px"]


def _run_octaves(run: DreamRun, stepper: _Stepper, progress, should_cancel) -> Steps:
    config = run.config
    device = run.backbone.device
    image = run.image
    original = tuple(image.shape[-2:])
    base = upsample(image.unsqueeze(0).float().to(device), run.work_size)
    rng = random.Random(config.seed)
    started = time.perf_counter()
    detail = None
    losses = []
    for octave, size in enumerate(run.sizes):
        masks = None if run.masks is None else upsample(run.masks, size)
        octave_base = upsample(base, size)
        current = octave_base if detail is None else (octave_base + upsample(detail, size))
        current = current.clamp(0, 1)
        value = 0.0
        for step in range(config.steps):
            if should_cancel is not None and should_cancel():
                raise Cancelled(f"cancelled at octave {octave + 1}, step {step + 1}")
            current, value = yield from stepper.step(current, rng, step, run,
                                                     run.first_octave + octave, masks)
            if progress is not None:
                last = step == config.steps - 1
                progress(DreamProgress(
                    octave, len(run.sizes), step, config.steps, value, size,
                    time.perf_counter() - started, current[0].detach().cpu() if last else None,
                ))
        losses.append(value)
        detail = current - octave_base
        del octave_base
    out = upsample(current, original) if tuple(current.shape[-2:]) != original else current
    return out[0].detach().clamp(0, 1).cpu(), losses
