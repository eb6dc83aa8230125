"""What determines a dream besides its images, the documented range of every number, and the
one validation that both the engine and the services run.

:func:`check_config` is where a dream request enters the library: it checks every number
against :data:`RANGES`, every name against the backbone registry and every maplist entry, and
returns a :class:`CheckedConfig` the engine trusts. Layer aliases (Keras' ``mixed3`` for
Inception V3's ``mixed_6a``) are resolved here: past the checks every layer has its friendly
name, so the engine, the services and the provenance only ever see those. Messages start with
the field they are about (``octaves: ...``, ``maplist.layers[2].channels[7]: ...``), so the
services pass them on unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from dreamsuite.backbones import DEFAULT_BACKBONE, BackboneSpec, get_backbone_spec
from dreamsuite.engine.objectives import LayerTerm, Maplist
from dreamsuite.engine.octaves import plan_octaves
from dreamsuite.errors import InvalidArgument, NotFound, shorten

__all__ = [
    "DreamConfig",
    "CheckedConfig",
    "canonical_layer_keys",
    "check_config",
    "check_count",
    "check_dream_size",
    "check_guide_shaping",
    "check_guide_weights",
    "check_layer_names",
    "check_maplist",
    "check_maplist_size",
    "check_name",
    "check_range",
    "check_weight",
    "field_errors",
    "GUIDE_MODES",
    "WEIGHT_CHOICES",
    "RANGES",
    "UNRECORDED",
    "OUTPUT_RANGES",
    "MAX_MAPLIST_TERMS",
    "MAX_MAPLIST_CHANNELS",
    "MAX_LAYERS",
    "MAX_GUIDES",
    "MAX_SELECTION_IMAGES",
    "MAX_WEIGHT",
    "MAX_NAME_LENGTH",
]

_V = TypeVar("_V")

GUIDE_MODES = ("weights", "match")
WEIGHT_CHOICES = ("pretrained", "random")

#: Inclusive range of every number of a :class:`DreamConfig`. Wide enough for any sensible
#: dream, narrow enough that no arithmetic on them overflows or runs for days.
RANGES: dict[str, tuple[float, float]] = {
    "octaves": (1, 16),
    "octave_scale": (1.01, 4.0),
    "steps": (1, 10_000),
    "step_size": (1e-6, 10.0),
    "jitter": (0, 4096),
    "tile": (32, 8192),
    "seed": (-(2**63), 2**63 - 1),
    "tv": (0.0, 1e4),
    "smooth": (0.0, 64.0),
    "blur_every": (0, 10_000),
    "blur_sigma": (0.0, 64.0),
    "laplacian": (0, 12),
    "fourier": (0.0, 4.0),
}
#: Inclusive range of the preview numbers of a dream request's output options (the wire's 0
#: means "the default" and is replaced before the check).
OUTPUT_RANGES: dict[str, tuple[int, int]] = {
    "preview_max_side": (8, 4096),
    "preview_max_bytes": (1024, 16 * 1024 * 1024),
}
#: At most this many maplist entries, and channel weights over all entries (also the most
#: per-map weights one guide-weights entry may carry).
MAX_MAPLIST_TERMS = 256
MAX_MAPLIST_CHANNELS = 65_536
#: At most this many layer names in one neuron selection or guide-service request.
MAX_LAYERS = MAX_MAPLIST_TERMS
#: At most this many guide images in one request, and images in one dream's neuron selection:
#: each is decoded and run through the backbone while the request holds the device.
MAX_GUIDES = 16
MAX_SELECTION_IMAGES = 64
#: Layer and channel weights lie in ``[-MAX_WEIGHT, MAX_WEIGHT]``.
MAX_WEIGHT = 1e6
#: Longest backbone or layer name a request may send.
MAX_NAME_LENGTH = 128


def check_range(value: float, field: str, low: float, high: float) -> None:
    """:class:`InvalidArgument` unless ``value`` is a finite number in ``[low, high]``."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgument(f"{field} must be a finite number, not {value}")
    if not low <= value <= high:
        raise InvalidArgument(f"{field} must be between {low:g} and {high:g}, not {value:g}")


def check_count(count: int, field: str, limit: int, what: str) -> None:
    """:class:`InvalidArgument` when a request lists more than ``limit`` ``what``."""
    if count > limit:
        raise InvalidArgument(f"{field}: {count} {what}; at most {limit}")


@dataclass(frozen=True)
class DreamConfig:
    """Everything that determines a dream besides the input image (and guides, if any)."""

    backbone: str = DEFAULT_BACKBONE
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
    # Cleaner dreams (see dreamsuite.engine.clean): the ascent step Laplacian-normalised over
    # this many pyramid levels (0: off), taken in decorrelated colour space, and
    # Fourier-preconditioned with this decay power (0: off). The defaults are the combination
    # `dreamsuite bench clean` measured best: a fifth of the plain pixel step's high-frequency
    # share at 1.2x its objective gain (UNRECORDED is that plain step).
    laplacian: int = 4
    decorrelate: bool = True
    fourier: float = 0.0
    # Scale-dependent weights: per guide (in the order of the guides) and per maplist layer,
    # one multiplier per octave of the schedule, smallest first (an empty entry: 1 throughout).
    guide_octave_weights: tuple[tuple[float, ...], ...] = ()
    layer_octave_weights: Mapping[str, tuple[float, ...]] | None = None

    def validate(self) -> DreamConfig:
        """Check every number and choice (not the names: :func:`check_config` does both)."""
        for name, (low, high) in RANGES.items():
            check_range(getattr(self, name), name, low, high)
        if not isinstance(self.decorrelate, bool):
            raise InvalidArgument(f"decorrelate must be true or false, not "
                                  f"{shorten(repr(self.decorrelate))}")
        self._check_octave_weights()
        if self.guide_mode not in GUIDE_MODES:
            raise InvalidArgument(f"guide_mode must be one of {GUIDE_MODES}, "
                                  f"not {shorten(self.guide_mode)!r}")
        if self.weights not in WEIGHT_CHOICES:
            raise InvalidArgument(f"weights must be one of {WEIGHT_CHOICES}, "
                                  f"not {shorten(self.weights)!r}")
        return self

    def _check_octave_weights(self) -> None:
        check_count(len(self.guide_octave_weights), "guide_octave_weights", MAX_GUIDES,
                    "entries (one per guide)")
        for i, weights in enumerate(self.guide_octave_weights):
            if weights:
                _check_per_octave(weights, f"guide_octave_weights[{i}]", self.octaves)
        layers = self.layer_octave_weights or {}
        check_count(len(layers), "layer_octave_weights", MAX_LAYERS, "layers")
        for layer, weights in layers.items():
            check_name(str(layer), "layer_octave_weights")
            if weights:
                _check_per_octave(weights, f"layer_octave_weights[{shorten(str(layer))!r}]",
                                  self.octaves)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["maplist"] = self.maplist.to_dict() if self.maplist else None
        data["guide_octave_weights"] = [list(w) for w in self.guide_octave_weights]
        if self.layer_octave_weights is not None:
            data["layer_octave_weights"] = {layer: list(w)
                                            for layer, w in self.layer_octave_weights.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> DreamConfig:
        """The config ``to_dict`` wrote (e.g. a PNG's provenance); fields it lacks take the
        defaults, except the cleaning options, which a record from before they existed ran
        without (:data:`UNRECORDED`)."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs = {**{k: v for k, v in UNRECORDED.items() if k not in kwargs}, **kwargs}
        if kwargs.get("maplist") is not None:
            kwargs["maplist"] = Maplist.from_dict(kwargs["maplist"])
        try:
            if kwargs.get("guide_octave_weights") is not None:
                kwargs["guide_octave_weights"] = tuple(
                    tuple(float(v) for v in w) for w in kwargs["guide_octave_weights"])
            if kwargs.get("layer_octave_weights") is not None:
                kwargs["layer_octave_weights"] = {
                    str(layer): tuple(float(v) for v in w)
                    for layer, w in kwargs["layer_octave_weights"].items()}
        except (TypeError, ValueError, AttributeError) as exc:
            raise InvalidArgument(f"bad octave weights in a recorded config ({exc}); they are "
                                  "lists of numbers, one per octave") from None
        return cls(**kwargs)


#: What a recorded config that lacks these fields ran with (it predates them).
UNRECORDED = {"laplacian": 0, "decorrelate": False, "fourier": 0.0}


def _check_per_octave(weights: Sequence[float], field: str, octaves: int) -> None:
    if len(weights) != octaves:
        raise InvalidArgument(f"{field}: give one weight per octave ({octaves}), not "
                              f"{len(weights)}")
    for j, weight in enumerate(weights):
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise InvalidArgument(f"{field}[{j}] must be a number, not {shorten(repr(weight))}")
        check_weight(weight, f"{field}[{j}]")


@dataclass(frozen=True)
class CheckedConfig:
    """A config that passed :func:`check_config`: its backbone's spec and the maplist to dream
    (the backbone's default layer filled in when the config names none). ``config`` and
    ``maplist`` name layers by their friendly names, aliases resolved."""

    config: DreamConfig
    spec: BackboneSpec
    maplist: Maplist


@contextlib.contextmanager
def field_errors(name: str) -> Iterator[None]:
    """Prefix :class:`InvalidArgument` and :class:`NotFound` messages with the field ``name``."""
    try:
        yield
    except InvalidArgument as exc:
        raise type(exc)(f"{name}: {exc}") from None
    except NotFound as exc:
        raise type(exc)(f"{name}: {exc}") from None


def check_name(value: str, field: str) -> None:
    """:class:`InvalidArgument` for a backbone or layer name over :data:`MAX_NAME_LENGTH`."""
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"{field} is {len(value)} characters long; names have at most "
                              f"{MAX_NAME_LENGTH}")


def check_layer_names(spec: BackboneSpec, layers: Sequence[str],
                      field: str = "layers") -> list[str]:
    """``layers`` (at least one, at most :data:`MAX_LAYERS`, each a layer of ``spec``) by
    their friendly names (aliases resolved), without repeats, in order."""
    if not layers:
        raise InvalidArgument(f"{field}: give at least one layer")
    check_count(len(layers), field, MAX_LAYERS, "layers")
    names = []
    for i, layer in enumerate(layers):
        check_name(layer, f"{field}[{i}]")
        with field_errors(f"{field}[{i}]"):
            names.append(spec.canonical_layer(layer))
    return list(dict.fromkeys(names))


def canonical_layer_keys(spec: BackboneSpec, values: Mapping[str, _V],
                         field: str) -> dict[str, _V]:
    """``values`` keyed by friendly layer names: aliases resolved, other keys (unknown names
    included, for the caller's own check) as they are. Two keys that name one layer are
    refused rather than one silently dropped."""
    out: dict[str, _V] = {}
    given: dict[str, str] = {}
    for key, value in values.items():
        name = spec.aliases.get(key, key)
        if name in out:
            raise InvalidArgument(f"{field}: {shorten(given[name])!r} and {shorten(key)!r} "
                                  f"name the same layer ({name}); give it once")
        out[name] = value
        given[name] = key
    return out


def check_weight(value: float, field: str) -> None:
    if not math.isfinite(value) or abs(value) > MAX_WEIGHT:
        raise InvalidArgument(f"{field} must be a finite number in [-{MAX_WEIGHT:g}, "
                              f"{MAX_WEIGHT:g}], not {value:g}")


def check_maplist_size(terms: int, channels: Callable[[], int]) -> None:
    """Refuse a maplist of more than :data:`MAX_MAPLIST_TERMS` entries or
    :data:`MAX_MAPLIST_CHANNELS` channel weights (``channels()`` counts them once the number
    of entries is known to be small), before anything else looks at it."""
    if terms > MAX_MAPLIST_TERMS:
        raise InvalidArgument(f"maplist has {terms} entries; at most "
                              f"{MAX_MAPLIST_TERMS} (put channels of one layer in one entry)")
    total = channels()
    if total > MAX_MAPLIST_CHANNELS:
        raise InvalidArgument(f"maplist has {total} channel weights; at most "
                              f"{MAX_MAPLIST_CHANNELS}")


def check_maplist(spec: BackboneSpec, maplist: Maplist | None) -> Maplist:
    """``maplist`` checked against ``spec`` (or the backbone's default layer when None), its
    layers by their friendly names (aliases resolved)."""
    if maplist is None:
        return Maplist((LayerTerm(spec.default_layer),))
    if not maplist.terms:
        raise InvalidArgument("maplist is empty: give at least one layer")
    check_maplist_size(len(maplist.terms),
                       lambda: sum(len(t.channels or ()) for t in maplist.terms))
    terms = []
    for i, term in enumerate(maplist.terms):
        where = f"maplist.layers[{i}]"
        check_name(term.layer, f"{where}.layer")
        check_weight(term.weight, f"{where}.weight")
        with field_errors(where):
            name = spec.canonical_layer(term.layer)
            if term.channels is not None:
                if not term.channels:
                    raise InvalidArgument(f"layer {term.layer!r} lists no channels")
                spec.check_channels(term.layer, list(term.channels))
        for channel, weight in (term.channels or {}).items():
            check_weight(weight, f"{where}.channels[{channel}].weight")
        terms.append(term if name == term.layer else dataclasses.replace(term, layer=name))
    return Maplist(tuple(terms))


def check_config(config: DreamConfig) -> CheckedConfig:
    """The one validation of a dream config: numbers, choices, backbone, maplist, and octave
    weights that name the maplist's layers (guide octave weights only in ``weights`` mode).

    The checked config names layers by their friendly names (aliases resolved, in the maplist
    and the layer octave weights), so two configs that differ only by an alias check equal and
    a dream records the names it ran."""
    config.validate()
    check_name(config.backbone, "backbone")
    with field_errors("backbone"):
        spec = get_backbone_spec(config.backbone)
    maplist = check_maplist(spec, config.maplist)
    octave_weights = None
    if config.layer_octave_weights is not None:
        octave_weights = canonical_layer_keys(spec, config.layer_octave_weights,
                                              "layer_octave_weights")
    for layer in octave_weights or {}:
        if layer not in maplist.layers:
            raise InvalidArgument(f"layer_octave_weights: {shorten(layer)!r} is not a layer of "
                                  f"the maplist; its layers are {', '.join(maplist.layers)}")
    if config.guide_octave_weights and config.guide_mode != "weights":
        raise InvalidArgument("guide_octave_weights need guide_mode 'weights'")
    config = dataclasses.replace(
        config, maplist=maplist if config.maplist is not None else None,
        layer_octave_weights=octave_weights)
    return CheckedConfig(config, spec, maplist)


def check_guide_shaping(config: DreamConfig, guides: int, masks: int) -> None:
    """Per-guide octave weights and ``masks`` guide masks, if any, one per guide of ``guides``
    (``weights`` mode only: the matching objective pools all guides)."""
    if config.guide_octave_weights and len(config.guide_octave_weights) != guides:
        raise InvalidArgument(f"guide_octave_weights: {len(config.guide_octave_weights)} "
                              f"entries for {guides} guides; give one per guide")
    if masks:
        if masks != guides:
            raise InvalidArgument(f"guide_masks: {masks} masks for {guides} guides; give one "
                                  "per guide (an empty one: the whole image)")
        if config.guide_mode != "weights":
            raise InvalidArgument("guide_masks need guide_mode 'weights'")


def check_dream_size(checked: CheckedConfig, size: tuple[int, int], max_pixels: int) -> None:
    """Refuse an image of ``size = (H, W)`` that :func:`dream` would refuse for its size (over
    ``max_pixels`` once its shorter side is scaled up to the backbone's minimum input), so a
    service can refuse it before it queues for the device."""
    plan_octaves(size, checked.config.octaves, checked.config.octave_scale,
                 checked.spec.min_size, max_pixels=max_pixels)


def check_guide_weights(
    spec: BackboneSpec, weights: Mapping[str, Sequence[float] | torch.Tensor],
    layers: Sequence[str], *, field: str = "guidance.guide_weights",
) -> dict[str, torch.Tensor]:
    """Precomputed guide weights as ``{layer: [C]}`` tensors: one finite weight per map of
    each of ``layers`` (the maplist's, by friendly names), for layers of ``spec`` only; keyed
    by friendly names (aliases resolved)."""
    out: dict[str, torch.Tensor] = {}
    for i, (layer, values) in enumerate(weights.items()):
        where = f"{field}[{i}]"
        check_name(layer, f"{where}.layer")
        with field_errors(where):
            info = spec.layer(layer)
        channels = info.channels
        if info.name in out:
            raise InvalidArgument(f"{where}: layer {shorten(layer)!r} is {info.name}, which an "
                                  "earlier entry already gives")
        tensor = torch.as_tensor(values, dtype=torch.float32).flatten()
        if tensor.numel() != channels:
            raise InvalidArgument(f"{where}: layer {layer!r} has {channels} maps, "
                                  f"got {tensor.numel()} weights")
        if not torch.isfinite(tensor).all() or tensor.abs().max() > MAX_WEIGHT:
            raise InvalidArgument(f"{where}.weights must be finite numbers in "
                                  f"[-{MAX_WEIGHT:g}, {MAX_WEIGHT:g}]")
        out[info.name] = tensor
    missing = [layer for layer in layers if layer not in out]
    if missing:
        raise InvalidArgument(f"{field}: no weights for layer(s) {', '.join(missing)} of the "
                              "maplist")
    return out
