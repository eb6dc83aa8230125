"""The backbone registry: what each backbone is (data) and how to load it.

``BackboneSpec`` describes a backbone as data: preprocessing, minimum input size, its dreamable
layers in forward order, and where its weights come from. ``get_backbone`` builds the network,
loads weights, folds BatchNorm into the convolutions (the network is frozen) and returns a
:class:`Backbone` that can run any prefix of the network up to the deepest requested layer.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from dreamsuite.defaults import DEFAULT_BACKBONE
from dreamsuite.errors import InvalidArgument, UnknownName, WeightsMissing, shorten

__all__ = [
    "WEIGHTS_ENV",
    "LayerInfo",
    "BackboneSpec",
    "register",
    "list_backbones",
    "get_backbone_spec",
    "weights_status",
    "resolve_weights_file",
]

WEIGHTS_ENV = "DREAMSUITE_WEIGHTS_DIR"


@dataclass(frozen=True)
class LayerInfo:
    """A dreamable layer: its friendly name, its channel count, its stage index and the other
    names it answers to (e.g. Keras' ``mixed3`` for Inception V3's ``mixed_6a``)."""

    name: str
    channels: int
    index: int
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class BackboneSpec:
    """A backbone described as data.

    ``build`` returns the architecture with random weights and ``stages`` splits it into named
    stages whose sequential composition is the feature extractor. ``weights_file`` is the file
    name looked up in ``$DREAMSUITE_WEIGHTS_DIR`` and the torch hub cache; ``embedded`` loaders
    return a state dict from an installed package instead. ``aliases`` maps other names of
    layers (another framework's numbering) to the friendly names: :meth:`layer` accepts both,
    :meth:`canonical_layer` turns either into the friendly name.
    """

    name: str
    description: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    min_size: int
    default_layer: str
    build: Callable[[], nn.Module]
    stages: Callable[[nn.Module], list[tuple[str, nn.Module]]]
    weights_file: str | None = None
    embedded: Callable[[], dict[str, torch.Tensor]] | None = None
    weights_hint: str = ""
    aliases: Mapping[str, str] = field(default_factory=dict, compare=False)
    _layers: list[LayerInfo] = field(default_factory=list, compare=False, repr=False)

    @property
    def layers(self) -> list[LayerInfo]:
        """Dreamable layers from input to output, with channel counts (computed once, on meta)."""
        if not self._layers:
            self._layers.extend(_probe_layers(self))
        return list(self._layers)

    def layer(self, name: str) -> LayerInfo:
        """The layer called ``name`` or aliased ``name``; :class:`UnknownName` lists the valid
        ones otherwise."""
        target = self.aliases.get(name, name)
        for info in self.layers:
            if info.name == target:
                return info
        valid = ", ".join(info.name for info in self.layers)
        if self.aliases:
            valid += "; aliases: " + ", ".join(f"{a}={t}" for a, t in self.aliases.items())
        raise UnknownName(
            f"backbone {self.name!r} has no layer {shorten(name)!r}; valid layers: {valid}")

    def canonical_layer(self, name: str) -> str:
        """The friendly name of the layer called or aliased ``name`` (see :meth:`layer`)."""
        return self.layer(name).name

    def check_channels(self, layer: str, channels: Sequence[int]) -> None:
        """Raise :class:`UnknownName` if any channel index is outside ``[0, channels)``."""
        count = self.layer(layer).channels
        bad = [c for c in channels if not 0 <= int(c) < count]
        if bad:
            raise UnknownName(
                f"layer {layer!r} of {self.name!r} has channels 0..{count - 1}; "
                f"no channel {shorten(', '.join(map(str, bad)))}"
            )


_REGISTRY: dict[str, BackboneSpec] = {}
_PROBE_LOCK = threading.Lock()


def register(spec: BackboneSpec) -> BackboneSpec:
    """Add ``spec`` to the registry (names are unique)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def list_backbones() -> list[str]:
    """Registered backbone names, the default first."""
    return list(_REGISTRY)


def get_backbone_spec(name: str | None = None) -> BackboneSpec:
    """The spec of ``name`` (default :data:`DEFAULT_BACKBONE`); :class:`UnknownName` lists the
    registered backbones otherwise."""
    try:
        return _REGISTRY[name or DEFAULT_BACKBONE]
    except KeyError:
        raise UnknownName(
            f"unknown backbone {shorten(name)!r}; available: {', '.join(_REGISTRY)}"
        ) from None


def _probe_layers(spec: BackboneSpec) -> list[LayerInfo]:
    """Channel counts of every stage, by running the stages on the meta device (no memory)."""
    with _PROBE_LOCK, torch.device("meta"):
        model = spec.build().eval()
        x = torch.empty(1, 3, max(spec.min_size, 299), max(spec.min_size, 299))
        infos = []
        for index, (name, stage) in enumerate(spec.stages(model)):
            x = stage(x)
            aliases = tuple(a for a, target in spec.aliases.items() if target == name)
            infos.append(LayerInfo(name=name, channels=int(x.shape[1]), index=index,
                                   aliases=aliases))
    names = {info.name for info in infos}
    wrong = [f"{a}={t}" for a, t in spec.aliases.items() if t not in names or a in names]
    if wrong:  # a registration mistake, caught the first time the layers are listed
        raise ValueError(f"backbone {spec.name!r}: aliases {', '.join(wrong)} name no layer or "
                         "shadow one")
    return infos


def _weight_dirs() -> list[Path]:
    dirs = []
    if os.environ.get(WEIGHTS_ENV):
        dirs.append(Path(os.environ[WEIGHTS_ENV]))
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return dirs


def resolve_weights_file(spec: BackboneSpec) -> Path | None:
    """Where the pretrained weights of ``spec`` are on this machine, or None."""
    if spec.weights_file is None:
        return None
    for folder in _weight_dirs():
        candidate = folder / spec.weights_file
        if candidate.is_file():
            return candidate
    return None


def weights_status(spec: BackboneSpec) -> str:
    """``embedded`` (shipped by an installed package), ``file`` (found on disk) or ``missing``."""
    if spec.embedded is not None:
        return "embedded"
    return "file" if resolve_weights_file(spec) is not None else "missing"


def load_state_dict(spec: BackboneSpec) -> dict[str, torch.Tensor]:
    """The pretrained state dict of ``spec``; :class:`WeightsMissing` says how to provide it."""
    if spec.embedded is not None:
        return spec.embedded()
    path = resolve_weights_file(spec)
    if path is None:
        where = " or ".join(str(d / str(spec.weights_file)) for d in _weight_dirs())
        raise WeightsMissing(
            f"pretrained weights for {spec.name!r} are not on this machine: expected {where}. "
            f"Copy {spec.weights_file} into a folder and set {WEIGHTS_ENV} to it{spec.weights_hint}, "
            "or ask for random weights explicitly with --weights random."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors for a bad file
        raise WeightsMissing(
            f"the weights file {path} for {spec.name!r} cannot be read ({type(exc).__name__}: "
            f"{exc}); replace it with the original {spec.weights_file}"
        ) from None


def validate_weights_choice(weights: str) -> str:
    if weights not in ("pretrained", "random"):
        raise InvalidArgument(
            f"weights must be 'pretrained' or 'random', not {shorten(weights)!r}")
    return weights
