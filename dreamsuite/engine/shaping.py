"""Local and scale-dependent dreams: objectives whose weights change with the octave and, for
Guided Dreams, with the position in the image.

- Per octave: each maplist layer (``DreamConfig.layer_octave_weights``) and each guide
  (``DreamConfig.guide_octave_weights``) carries one multiplier per octave of the schedule, so
  a guide can shape the coarse octaves and another the fine ones.
- Per region: each guide may carry a mask (``[H, W]`` in ``[0, 1]`` over the input image). The
  guide's weighted channel means are then taken over the activation weighted by its mask,
  resized to the layer's grid: the masked part grows that guide's patterns, the rest another
  guide's (or nothing). A guide without a mask covers the whole image.

The objective of a gradient request depends on where its pixels lie: :class:`Place` (the
octave, and the guide masks rolled and cut exactly like the request's pixels). A
:data:`Shaped` objective maps a place to the :class:`~dreamsuite.engine.objectives.Objective`
to evaluate there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dreamsuite.backbones import Backbone
from dreamsuite.engine.config import CheckedConfig
from dreamsuite.engine.guide import guide_features, guide_weights
from dreamsuite.engine.objectives import (
    LayerTerm,
    Maplist,
    Objective,
    Sum,
    from_maplist,
    guide_match,
    guided,
)
from dreamsuite.engine.octaves import upsample
from dreamsuite.errors import InvalidArgument

__all__ = ["Place", "Shaped", "shaped_objective", "regional_channels", "prepare_masks",
           "is_shaped"]


@dataclass(frozen=True)
class Place:
    """Where the pixels of one gradient request lie: ``octave`` indexes the config's schedule
    (0: its smallest octave, dropped ones included) and ``masks`` (``[1, G, h, w]``, or None
    without masks) are the guide masks over exactly those pixels."""

    octave: int
    masks: torch.Tensor | None = None


#: The objective to evaluate at a place.
Shaped = Callable[[Place], Objective]


def is_shaped(checked: CheckedConfig, masks: Sequence[torch.Tensor | None]) -> bool:
    """Whether a dream's objective depends on the octave or the position."""
    config = checked.config
    return bool(config.layer_octave_weights or config.guide_octave_weights
                or any(m is not None for m in masks))


def regional_channels(layer: str, weights: torch.Tensor, scales: torch.Tensor,
                      masks: torch.Tensor | None) -> Objective:
    """``sum_g scales[g] * sum_c weights[g, c] * mean_p(mask_g[p] * acts[layer][:, c, p])``:
    ``weights`` is ``[G, C]``, ``scales`` ``[G]``, ``masks`` ``[1, G, h, w]`` over the pixels
    (area-averaged onto the layer's grid) or None (every guide everywhere). The mean runs over
    all positions, so a position's pull is its mask value whatever the tile it lies in."""
    weights, scales = weights.detach().float(), scales.detach().float()

    def fn(a: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = a[layer].float()
        w = scales.to(x.device)[:, None] * weights.to(x.device)  # [G, C]
        if masks is None:
            return (x.mean(dim=(0, 2, 3)) * w.sum(0)).sum()
        m = F.adaptive_avg_pool2d(masks.to(x.device, x.dtype), tuple(x.shape[-2:]))[0]
        per_position = torch.einsum("gc,ghw->chw", w, m)  # [C, h', w']
        return (x * per_position).sum() / (x.shape[0] * x.shape[2] * x.shape[3])

    return Objective(fn, [layer], f"{layer}:regional[{weights.shape[0]}x{weights.shape[1]}]")


def _per_octave(weights: Sequence[float] | None, octaves: int) -> list[float]:
    return list(weights) if weights else [1.0] * octaves


def shaped_objective(
    backbone: Backbone, checked: CheckedConfig, guides: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor | None],
    guide_weights_override: Mapping[str, torch.Tensor] | None = None,
) -> Shaped:
    """The objective at each place for a dream whose weights change with the octave or the
    position (see :func:`is_shaped`; guide masks and guide octave weights were checked by
    :func:`~dreamsuite.engine.config.check_guide_shaping`). Per-guide weights and masks need
    each guide's own weights, so they are computed from ``guides`` (an averaged
    ``guide_weights_override`` cannot give them); otherwise the override, when given, is the
    guided objective's weights."""
    config, maplist = checked.config, checked.maplist
    layer_scales = {layer: _per_octave((config.layer_octave_weights or {}).get(layer),
                                       config.octaves) for layer in maplist.layers}
    if guides and (config.guide_octave_weights or any(m is not None for m in masks)):
        return _regional(backbone, maplist, guides, config.guide_octave_weights,
                         layer_scales, config.octaves)
    build = _builder(backbone, checked, guides, guide_weights_override)
    objectives = [build({layer: s[octave] for layer, s in layer_scales.items()})
                  for octave in range(config.octaves)]
    return lambda place: objectives[place.octave]


def _builder(
    backbone: Backbone, checked: CheckedConfig, guides: Sequence[torch.Tensor],
    override: Mapping[str, torch.Tensor] | None,
) -> Callable[[Mapping[str, float]], Objective]:
    """The dream's objective (as :func:`~dreamsuite.engine.dream.build_objective` makes it) as
    a function of per-layer multipliers."""
    config, maplist = checked.config, checked.maplist
    if not guides and override is None:
        return lambda scale: from_maplist(Maplist(tuple(
            LayerTerm(t.layer, t.weight * scale[t.layer], t.channels) for t in maplist.terms)))
    layer_weights = {t.layer: t.weight for t in maplist.terms}
    if config.guide_mode == "match":
        features = {layer: guide_features(backbone, guides, layer) for layer in layer_weights}
        return lambda scale: Sum([w * scale[layer] * guide_match(layer, features[layer])
                                  for layer, w in layer_weights.items()])
    weights = (dict(override) if override is not None
               else guide_weights(backbone, guides, list(layer_weights)))
    return lambda scale: guided(weights, {layer: w * scale[layer]
                                          for layer, w in layer_weights.items()})


def _regional(backbone: Backbone, maplist: Maplist, guides: Sequence[torch.Tensor],
              guide_octave_weights: Sequence[Sequence[float]],
              layer_scales: Mapping[str, list[float]], octaves: int) -> Shaped:
    layer_weights = {t.layer: t.weight for t in maplist.terms}
    layers = list(layer_weights)
    # Each guide its own normalised weights (one guide's weights are its normalised means).
    per_guide = [guide_weights(backbone, [guide], layers) for guide in guides]
    stacked = {layer: torch.stack([w[layer] for w in per_guide]) for layer in layers}
    entries = list(guide_octave_weights) or [()] * len(guides)
    guide_scales = torch.tensor([_per_octave(w, octaves) for w in entries])  # [G, octaves]

    def at(place: Place) -> Objective:
        scales = guide_scales[:, place.octave]
        return Sum([layer_weights[layer] * layer_scales[layer][place.octave]
                    * regional_channels(layer, stacked[layer], scales, place.masks)
                    for layer in layers])

    return at


def prepare_masks(masks: Sequence[torch.Tensor | None], size: tuple[int, int],
                  work_size: tuple[int, int], device: torch.device) -> torch.Tensor | None:
    """Guide masks over an input of ``size = (H, W)`` as one ``[1, G, h, w]`` tensor at the
    dream's working size (None without masks). Each mask is ``[H', W']``, ``[1, H', W']`` or
    ``[3, H', W']`` (channels averaged) in ``[0, 1]``, of the input's aspect ratio; None covers
    the whole image."""
    if not any(m is not None for m in masks):
        return None
    out = []
    for i, mask in enumerate(masks):
        if mask is None:
            out.append(torch.ones(1, 1, *work_size, device=device))
            continue
        m = mask.detach().float()
        if m.dim() == 3:
            m = m.mean(dim=0)
        if m.dim() != 2:
            raise InvalidArgument(f"guide_masks[{i}] must be [H, W], [1, H, W] or [3, H, W], "
                                  f"not {list(mask.shape)}")
        if abs(m.shape[0] / m.shape[1] - size[0] / size[1]) > 0.02 * size[0] / size[1]:
            raise InvalidArgument(f"guide_masks[{i}] is {m.shape[1]}x{m.shape[0]}, the image "
                                  f"{size[1]}x{size[0]}; give a mask of the image's aspect "
                                  "ratio")
        if not torch.isfinite(m).all():
            raise InvalidArgument(f"guide_masks[{i}] has non-finite values")
        m = upsample(m.clamp(0, 1)[None, None].to(device), work_size)
        out.append(m)
    return torch.cat(out, dim=1)
