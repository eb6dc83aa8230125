"""Guided Dreams (the paper's method) and neuron selection.

Guide weights: for a guide image, the per-map mean activation of a layer, normalised to unit L1
norm, becomes that map's weight in the dream loss, so the dream grows what the network saw in
the guide. Several guides average; each layer may carry its own weight.

Neuron selection (Lucid style): rank a layer's maps by mean activation over a batch of images
and make a maplist that maximises the top-k and minimises the bottom-k.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from dreamsuite.backbones import Backbone, BackboneSpec
from dreamsuite.engine.config import (
    MAX_SELECTION_IMAGES,
    check_count,
    check_layer_names,
    check_range,
    field_errors,
)
from dreamsuite.engine.objectives import LayerTerm, Maplist
from dreamsuite.errors import InvalidArgument
from dreamsuite.images import resize

__all__ = [
    "GUIDE_MAX_SIDE",
    "prepare_guide",
    "check_image_side",
    "map_means",
    "normalise",
    "combine_guide_means",
    "guide_weights",
    "guide_features",
    "guided_maplist",
    "Selection",
    "check_selection",
    "select_neurons",
    "selection_from_means",
]

#: Guides larger than this (longest side, pixels) are downscaled first: the weights describe
#: which patterns a guide holds, and that needs no more detail than this.
GUIDE_MAX_SIDE = 512


def prepare_guide(image: torch.Tensor, max_side: int = GUIDE_MAX_SIDE) -> torch.Tensor:
    """Downscale a ``[3, H, W]`` guide so its longest side is at most ``max_side``."""
    size = _downscaled(tuple(image.shape[-2:]), max_side)
    if size == tuple(image.shape[-2:]):
        return image
    return resize(image, size).clamp(0, 1)


def _downscaled(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``size = (H, W)`` scaled down so that its longer side is at most ``max_side``."""
    h, w = size
    scale = max_side / max(h, w)
    if scale >= 1:
        return h, w
    return max(1, round(h * scale)), max(1, round(w * scale))


def check_image_side(spec: BackboneSpec, image: torch.Tensor, *, max_side: int = 0) -> None:
    """Refuse a ``[3, H, W]`` image whose shorter side is below the backbone's minimum input
    once downscaled to ``max_side`` (0: as it is): guides and selection images are measured,
    not dreamed, so they are not scaled up."""
    size = tuple(image.shape[-2:])
    h, w = _downscaled(size, max_side) if max_side else size
    if min(h, w) < spec.min_size:
        downscaled = f", {w}x{h} once downscaled to {max_side} px" if (h, w) != size else ""
        raise InvalidArgument(f"image is {size[1]}x{size[0]}{downscaled}; {spec.name} needs "
                              f"at least {spec.min_size} pixels on each side")


def map_means(backbone: Backbone, image: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Per-map mean activation ``{layer: [C]}`` of one ``[3, H, W]`` image (on the CPU), keyed
    by the names given (aliases included)."""
    acts = backbone.activations(image, layers)
    return {name: acts[backbone.spec.canonical_layer(name)].mean(dim=(0, 2, 3)).cpu()
            for name in layers}


def normalise(values: torch.Tensor) -> torch.Tensor:
    """``values / sum(|values|)``; all-zero stays zero."""
    total = values.abs().sum()
    return values / total if total > 0 else values.clone()


def combine_guide_means(
    per_guide: Sequence[Mapping[str, torch.Tensor]], layers: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Guide weights ``{layer: [C]}`` from each guide's per-map means: normalise each guide,
    average, normalise again. The one place this arithmetic lives (engine and guide service)."""
    if not per_guide:
        raise InvalidArgument("at least one guide image is needed")
    weights = {}
    for layer in layers:
        total = torch.zeros_like(per_guide[0][layer])
        for means in per_guide:
            total += normalise(means[layer])
        weights[layer] = normalise(total / len(per_guide))
    return weights


def guide_weights(
    backbone: Backbone, guides: Sequence[torch.Tensor], layers: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Normalised per-map weights ``{layer: [C]}`` averaged over ``guides`` (``[3, H, W]`` each),
    keyed by friendly layer names (aliases resolved).

    These are exactly the weights the engine puts in the dream loss (before layer weights)."""
    if not guides:
        raise InvalidArgument("at least one guide image is needed")
    layers = list(dict.fromkeys(backbone.spec.canonical_layer(layer) for layer in layers))
    per_guide = [map_means(backbone, prepare_guide(guide), layers) for guide in guides]
    return combine_guide_means(per_guide, layers)


def guide_features(backbone: Backbone, guides: Sequence[torch.Tensor], layer: str) -> torch.Tensor:
    """Guide features ``[C, M]`` for Google's matching objective (all guides' positions)."""
    if not guides:
        raise InvalidArgument("at least one guide image is needed")
    layer = backbone.spec.canonical_layer(layer)
    cols = []
    for guide in guides:
        act = backbone.activations(prepare_guide(guide), [layer])[layer][0]
        cols.append(act.flatten(1).cpu())
    return torch.cat(cols, dim=1)


def guided_maplist(weights: Mapping[str, torch.Tensor], layer_weights: Mapping[str, float]) -> Maplist:
    """A maplist that weights every map of each layer by its guide weight."""
    return Maplist(tuple(
        LayerTerm(layer, float(layer_weights.get(layer, 1.0)),
                  {c: float(v) for c, v in enumerate(w.tolist())})
        for layer, w in weights.items()
    ))


@dataclass(frozen=True)
class Selection:
    """Result of neuron selection: per-layer mean activations and the chosen maps."""

    means: dict[str, torch.Tensor]
    top: dict[str, list[int]]
    bottom: dict[str, list[int]]

    def maplist(self) -> Maplist:
        """Maximise the top maps (weight +1) and minimise the bottom maps (weight -1)."""
        terms = []
        for layer in self.means:
            channels = {c: 1.0 for c in self.top[layer]}
            channels.update({c: -1.0 for c in self.bottom[layer]})
            if channels:
                terms.append(LayerTerm(layer, 1.0, channels))
        return Maplist(tuple(terms))


def check_selection(spec: BackboneSpec, layers: Sequence[str], *, top_k: int,
                    bottom_k: int) -> list[str]:
    """The one check of a neuron selection: layers of ``spec`` (see
    :func:`~dreamsuite.engine.config.check_layer_names`), counts that fit every layer. Returns
    the layers by their friendly names, without repeats."""
    layers = check_layer_names(spec, layers)
    fewest = min(spec.layer(layer).channels for layer in layers)
    check_range(top_k, "top_k", 0, fewest)
    check_range(bottom_k, "bottom_k", 0, fewest)
    if top_k + bottom_k == 0:
        raise InvalidArgument("top_k and bottom_k are both zero: select at least one map")
    for layer in layers:
        channels = spec.layer(layer).channels
        if top_k + bottom_k > channels:
            raise InvalidArgument(f"top_k + bottom_k = {top_k + bottom_k} is more than layer "
                                  f"{layer!r} has: it has {channels} maps")
    return layers


def select_neurons(
    backbone: Backbone,
    images: Sequence[torch.Tensor],
    layers: Sequence[str],
    *,
    top_k: int = 0,
    bottom_k: int = 0,
) -> Selection:
    """Rank each layer's maps by mean activation over ``images`` and pick top/bottom k (layers
    keyed by their friendly names, aliases resolved)."""
    if not images:
        raise InvalidArgument("images: neuron selection needs at least one image")
    check_count(len(images), "images", MAX_SELECTION_IMAGES, "images")
    layers = check_selection(backbone.spec, layers, top_k=top_k, bottom_k=bottom_k)
    for i, image in enumerate(images):
        with field_errors(f"images[{i}]"):
            check_image_side(backbone.spec, image)
    per_image = [map_means(backbone, image, layers) for image in images]
    return selection_from_means(per_image, layers, top_k=top_k, bottom_k=bottom_k)


def selection_from_means(
    per_image: Sequence[Mapping[str, torch.Tensor]], layers: Sequence[str], *, top_k: int,
    bottom_k: int,
) -> Selection:
    """Rank maps by their mean activation over the images (each image's per-map means) and pick
    the top/bottom k. The one place this ranking lives (engine and guide service)."""
    means, top, bottom = {}, {}, {}
    for layer in layers:
        m = torch.stack([image_means[layer] for image_means in per_image]).mean(dim=0)
        if top_k + bottom_k > m.numel():
            raise InvalidArgument(
                f"layer {layer!r} has {m.numel()} maps; top_k + bottom_k = {top_k + bottom_k}"
            )
        order = torch.argsort(m, descending=True, stable=True).tolist()
        means[layer] = m
        top[layer] = order[:top_k]
        bottom[layer] = order[len(order) - bottom_k:] if bottom_k else []
    return Selection(means, top, bottom)
