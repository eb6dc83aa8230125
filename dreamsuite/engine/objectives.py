"""Dream objectives: small named factories that compose with ``+``, ``-`` and ``*``.

Every objective maps activations ``{layer: [N, C, h, w]}`` to a scalar to *maximise*::

    obj = 0.5 * channel("block_10", 12) - channel("block_8", 3) + layer_l2("block_6")

A :class:`Maplist` is the serialisable form (layers, channels, signed weights) that the CLI,
the wire contract and PNG provenance carry; :func:`from_maplist` turns it into an objective.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dreamsuite.errors import InvalidArgument

__all__ = [
    "Objective",
    "LayerTerm",
    "Maplist",
    "channel",
    "layer_l2",
    "weighted_channels",
    "guide_match",
    "from_maplist",
    "guided",
    "Sum",
    "parse_layer_spec",
    "load_maplist",
]

Activations = Mapping[str, torch.Tensor]


class Objective:
    """A scalar function of activations, to be maximised, that needs ``layers``.

    Sums stay flat (a list of parts evaluated in a loop), so an objective of thousands of terms
    never nests thousands of calls."""

    def __init__(self, fn: Callable[[Activations], torch.Tensor], layers: Iterable[str], name: str):
        self.fn = fn
        self.layers = frozenset(layers)
        self.name = name

    def __call__(self, acts: Activations) -> torch.Tensor:
        return self.fn(acts)

    @property
    def parts(self) -> tuple[Objective, ...]:
        """The summands of this objective (itself, unless it is a sum)."""
        return (self,)

    def __add__(self, other: Objective) -> Objective:
        return Sum((*self.parts, *other.parts))

    def __neg__(self) -> Objective:
        return -1.0 * self

    def __sub__(self, other: Objective) -> Objective:
        return self + (-other)

    def __mul__(self, factor: float) -> Objective:
        factor = float(factor)
        return Objective(lambda a: factor * self(a), self.layers, f"{factor:g} * ({self.name})")

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"Objective({self.name})"


class Sum(Objective):
    """The sum of ``parts``, evaluated in a loop."""

    def __init__(self, parts: Iterable[Objective]):
        self._parts = tuple(parts)
        if not self._parts:
            raise InvalidArgument("the objective is empty: give at least one layer")
        layers = frozenset().union(*(p.layers for p in self._parts))
        name = " + ".join(p.name for p in self._parts[:8])
        if len(self._parts) > 8:
            name += f" + ... ({len(self._parts)} terms)"
        super().__init__(self._total, layers, name)

    @property
    def parts(self) -> tuple[Objective, ...]:
        return self._parts

    def _total(self, acts: Activations) -> torch.Tensor:
        total = self._parts[0](acts)
        for part in self._parts[1:]:
            total = total + part(acts)
        return total


def channel(layer: str, index: int) -> Objective:
    """Mean activation of one map: ``acts[layer][:, index].mean()``."""
    return Objective(lambda a: a[layer][:, index].float().mean(), [layer], f"{layer}:{index}")


def layer_l2(layer: str) -> Objective:
    """Classic Deep Dream: mean squared activation of the whole layer (grows what is there)."""
    return Objective(lambda a: a[layer].float().pow(2).mean(), [layer], f"{layer}")


def weighted_channels(layer: str, weights: torch.Tensor) -> Objective:
    """``sum_c weights[c] * mean(acts[layer][:, c])``; ``weights`` has shape ``[C]``."""
    weights = weights.detach().float()

    def fn(a: Activations) -> torch.Tensor:
        means = a[layer].float().mean(dim=(0, 2, 3))
        return (means * weights.to(means.device)).sum()

    return Objective(fn, [layer], f"{layer}:weighted[{weights.numel()}]")


def guide_match(layer: str, guide: torch.Tensor) -> Objective:
    """Google's guided objective: each dream position is pulled towards the guide feature it
    already matches best. ``guide`` is ``[C, M]`` (guide features as columns)."""
    guide = guide.detach().float()

    def fn(a: Activations) -> torch.Tensor:
        x = a[layer].float()
        feats = x.flatten(2).transpose(1, 2)  # [N, P, C]
        g = guide.to(x.device)
        # Which guide feature matches best is decided in float32: under the dream's fp16
        # autocast, the product would round close matches to ties and pick the wrong one.
        with torch.autocast(x.device.type, enabled=False):
            best = (feats.detach() @ g).argmax(dim=-1)  # [N, P]
        return (feats * g.t()[best]).sum(-1).mean()

    return Objective(fn, [layer], f"{layer}:match")


@dataclass(frozen=True)
class LayerTerm:
    """One maplist entry: a layer, its weight, and optionally channels with signed weights.

    ``channels=None`` means the whole layer (classic L2 objective)."""

    layer: str
    weight: float = 1.0
    channels: Mapping[int, float] | None = None

    def to_dict(self) -> dict:
        out: dict = {"layer": self.layer, "weight": self.weight}
        if self.channels is not None:
            out["channels"] = {str(k): v for k, v in self.channels.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> LayerTerm:
        if not isinstance(data, Mapping) or "layer" not in data:
            raise InvalidArgument(f"maplist entry {data!r} needs a 'layer'")
        channels = data.get("channels")
        try:
            if channels is not None:
                if isinstance(channels, list):
                    channels = {int(c): 1.0 for c in channels}
                channels = {int(k): _finite(float(v), f"channel {k} weight")
                            for k, v in channels.items()}
            weight = _finite(float(data.get("weight", 1.0)), "layer weight")
        except (TypeError, ValueError, AttributeError) as exc:
            raise InvalidArgument(
                f"bad maplist entry {data!r} ({exc}); channels are a list of indices or "
                "{index: weight}, weights are finite numbers"
            ) from None
        return cls(str(data["layer"]), weight, channels)


@dataclass(frozen=True)
class Maplist:
    """Layers with channels and signed weights; positive weights grow a map, negative shrink it."""

    terms: tuple[LayerTerm, ...] = field(default_factory=tuple)

    @property
    def layers(self) -> list[str]:
        return list(dict.fromkeys(t.layer for t in self.terms))

    def to_dict(self) -> dict:
        return {"layers": [t.to_dict() for t in self.terms]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping) -> Maplist:
        entries = data.get("layers") if isinstance(data, Mapping) else None
        if not isinstance(entries, list):
            raise InvalidArgument("a maplist is {\"layers\": [{\"layer\": ..., \"channels\": ...}]}")
        return cls(tuple(LayerTerm.from_dict(e) for e in entries))

    def __add__(self, other: Maplist) -> Maplist:
        return Maplist(self.terms + other.terms)


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise InvalidArgument(f"{what} must be a finite number, not {value}")
    return value


def parse_layer_spec(spec: str) -> LayerTerm:
    """Parse ``layer``, ``layer=0.5``, ``layer:3,17`` or ``layer:3=1.0,17=-0.5``."""
    head, colon, tail = spec.partition(":")
    name, _, weight = head.partition("=")
    if not name:
        raise InvalidArgument(f"layer spec {spec!r} has no layer name")
    if colon and not tail:
        raise InvalidArgument(f"layer spec {spec!r} has a ':' but no channels after it")
    try:
        layer_weight = _finite(float(weight), "layer weight") if weight else 1.0
        channels = None
        if tail:
            channels = {}
            for item in tail.split(","):
                idx, _, w = item.partition("=")
                channels[int(idx)] = _finite(float(w), f"channel {idx} weight") if w else 1.0
    except ValueError as exc:
        raise InvalidArgument(
            f"bad layer spec {spec!r} ({exc}); use layer, layer:3,17 or layer:3=1.0,17=-0.5"
        ) from None
    return LayerTerm(name, layer_weight, channels)


def load_maplist(path: str | Path) -> Maplist:
    """Read a maplist JSON file written by ``dreamsuite select`` or by hand."""
    try:
        return Maplist.from_dict(json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"cannot read maplist {str(path)!r}: {exc}") from None


def from_maplist(maplist: Maplist) -> Objective:
    """The objective a maplist describes: per term, L2 of the whole layer or the weighted
    channel means, times the term's weight (a flat sum, however many terms)."""
    parts = []
    for term in maplist.terms:
        if term.channels is None:
            part = layer_l2(term.layer)
        else:
            idx = list(term.channels)
            w = torch.tensor([term.channels[c] for c in idx])
            part = _indexed_channels(term.layer, idx, w)
        parts.append(term.weight * part)
    return Sum(parts)


def guided(weights: Mapping[str, torch.Tensor], layer_weights: Mapping[str, float]) -> Objective:
    """The paper's guided objective straight from guide weights ``{layer: [C]}``: per layer,
    ``layer_weight * sum_c w[c] * mean(acts[layer][:, c])``."""
    return Sum(float(layer_weights.get(layer, 1.0)) * weighted_channels(layer, w)
               for layer, w in weights.items())


def _indexed_channels(layer: str, index: list[int], weights: torch.Tensor) -> Objective:
    def fn(a: Activations) -> torch.Tensor:
        x = a[layer]
        means = x[:, index].float().mean(dim=(0, 2, 3))
        return (means * weights.to(means.device)).sum()

    return Objective(fn, [layer], f"{layer}:{','.join(map(str, index))}")
