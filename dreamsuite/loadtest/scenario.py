"""What a load test sends: the scenario, from a YAML or JSON file and/or flags, checked once.

A scenario file (JSON is YAML too; every key optional)::

    mix: {dream: 3, guide_weights: 1, select_neurons: 1, sample: 0}  # users by weight
    wait: [0.5, 2]        # seconds a user waits between its calls: a number or [min, max]
    token: ...            # bearer token (default: $DREAMSUITE_TOKEN)
    backbone: efficientnet_lite0     # these keys apply to every kind of user ...
    layers: [block_6]
    sizes: [96, 224]      # shorter side of the built-in photos, in turn
    images: [cat.jpg]     # or these files, sent as they are
    deadline: 60s
    invalid: 0.05         # fraction of deliberately malformed requests (INVALID_ARGUMENT)
    dream: {octaves: 1, steps: 2, octave_scale: 1.4, preview: true, deadline: 5m}  # ... or one
    # or one-pass dreams: the trained dream2dream model (and condition) the dream service asks
    # TorchServe for; the optimisation's keys (backbone, layers, schedule) do not apply then
    # dream: {model: d2d-..., condition: stripes-b}
    guide_weights: {guides: 1}
    select_neurons: {batch: 4, top_k: 2, bottom_k: 0}   # images per call
    sample: {model: dcgan64-..., count: 1, inline: false}

Flags override the file, for every kind the key applies to; two name one kind's ``model``:
``model`` (``--gan-model``) is Sample's, ``dream_model`` (``--dream-model``) the dream's.
Nothing here imports grpc: the command line validates a scenario before it starts the Locust
process.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from dreamsuite.errors import InvalidArgument, shorten

__all__ = [
    "KINDS",
    "METHODS",
    "SERVICES",
    "Calls",
    "Scenario",
    "Targets",
    "parse_duration",
    "parse_mix",
    "load_scenario",
]

#: The kinds of user, in the order reports list them.
KINDS = ("dream", "guide_weights", "select_neurons", "sample")
#: The gRPC method each kind calls: also the name Locust reports its calls under.
METHODS = {"dream": "Dream", "guide_weights": "ComputeGuideWeights",
           "select_neurons": "SelectNeurons", "sample": "Sample"}
#: The service each kind calls (see :class:`Targets`).
SERVICES = {"dream": "dream", "guide_weights": "guide", "select_neurons": "guide",
            "sample": "gan"}

_COMMON = {"weight", "backbone", "layers", "sizes", "images", "deadline", "invalid"}
_KEYS = {
    "dream": _COMMON | {"octaves", "steps", "octave_scale", "preview", "model", "condition"},
    "guide_weights": _COMMON | {"guides"},
    "select_neurons": _COMMON | {"batch", "top_k", "bottom_k"},
    "sample": {"weight", "deadline", "invalid", "model", "count", "inline"},
}
_TOP = {"mix", "wait", "token", *KINDS, *_COMMON - {"weight"}}
#: Flags that set a field of one kind only: flag -> (kind, field).
_ONE_KIND_FLAGS = {"model": ("sample", "model"), "dream_model": ("dream", "model")}
_DEFAULT_DEADLINES = {"dream": 600.0, "guide_weights": 60.0, "select_neurons": 60.0,
                      "sample": 60.0}
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")


@dataclass(frozen=True)
class Calls:
    """How one kind of user calls its method (fields a kind does not use keep defaults)."""

    kind: str
    weight: int = 0
    backbone: str = ""  # "": the server's default
    layers: tuple[str, ...] = ()  # dream: () is the backbone's default layer
    sizes: tuple[int, ...] = (224,)
    images: tuple[str, ...] = ()
    deadline: float = 60.0
    invalid: float = 0.0
    octaves: int | None = None  # None: the server's default
    steps: int | None = None
    octave_scale: float | None = None
    preview: bool = True
    guides: int = 1
    batch: int = 4
    top_k: int = 2
    bottom_k: int = 0
    model: str = ""  # sample: the GAN model; dream: a one-pass model ("": optimised dreams)
    condition: str = ""  # dream with a model: the model's dream config (name or index)
    count: int = 1
    inline: bool = False

    @property
    def method(self) -> str:
        return METHODS[self.kind]

    @property
    def service(self) -> str:
        return SERVICES[self.kind]


@dataclass(frozen=True)
class Targets:
    """``HOST:PORT`` (or any gRPC target, e.g. ``dns:///dream.ns.svc:50051``) of each service."""

    dream: str | None = None
    guide: str | None = None
    gan: str | None = None


@dataclass(frozen=True)
class Scenario:
    """Every kind's :class:`Calls` (weight 0: no such users), the wait between a user's calls
    and the bearer token (None: ``$DREAMSUITE_TOKEN``)."""

    calls: dict[str, Calls] = field(default_factory=dict)
    wait: tuple[float, float] = (0.0, 0.0)
    token: str | None = None

    def active(self) -> list[Calls]:
        """The kinds with users, in :data:`KINDS` order."""
        return [self.calls[k] for k in KINDS if k in self.calls and self.calls[k].weight > 0]

    def to_dict(self) -> dict[str, Any]:
        return {"calls": {k: _calls_dict(c) for k, c in self.calls.items()},
                "wait": list(self.wait), "token": self.token}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        calls = {k: Calls(**{n: tuple(v) if isinstance(v, list) else v for n, v in c.items()})
                 for k, c in data["calls"].items()}
        return cls(calls=calls, wait=tuple(data["wait"]), token=data.get("token"))


def _calls_dict(calls: Calls) -> dict[str, Any]:
    return {f.name: getattr(calls, f.name) for f in fields(calls)}


# --- parsing values ---------------------------------------------------------------------------


def parse_duration(text: str | float | int, what: str = "duration") -> float:
    """Seconds in ``text``: ``"90"``, ``"1.5s"``, ``"500ms"``, ``"5m"``, ``"1h30m"``."""
    if isinstance(text, bool):
        raise InvalidArgument(f"{what}: expected a duration such as 30s, got {text!r}")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        spec = str(text).strip().replace(" ", "")
        try:
            seconds = float(spec)
        except ValueError:
            parts = _DURATION.findall(spec)
            if not parts or "".join(n + u for n, u in parts) != spec:
                raise InvalidArgument(f"{what}: {shorten(text)!r} is not a duration (use e.g. "
                                      "90, 30s, 500ms, 5m, 1h30m)") from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not 0 <= seconds < float("inf"):
        raise InvalidArgument(f"{what}: must be a finite, non-negative duration, got {text!r}")
    return seconds


def parse_mix(text: str | Mapping[str, Any]) -> dict[str, int]:
    """``"dream=3,guide_weights=1"`` (or a mapping) as ``{kind: weight}``; method names
    (``Dream``, ``ComputeGuideWeights``, ...) are accepted for kinds."""
    if isinstance(text, Mapping):
        items = list(text.items())
    else:
        items = []
        for part in filter(None, (p.strip() for p in str(text).split(","))):
            name, sep, weight = part.partition("=")
            items.append((name.strip(), weight.strip() if sep else "1"))
    by_name = {**{k: k for k in KINDS}, **{m.lower(): k for k, m in METHODS.items()}}
    mix: dict[str, int] = {}
    for name, weight in items:
        kind = by_name.get(str(name).lower())
        if kind is None:
            raise InvalidArgument(f"mix: unknown user {name!r}; choose from {', '.join(KINDS)}")
        mix[kind] = _integer(weight, f"mix.{kind}", 0, 10_000)
    return mix


def _integer(value: Any, what: str, low: int, high: int) -> int:
    try:
        number = int(value)
        if isinstance(value, bool) or float(value) != number:
            raise ValueError
    except (TypeError, ValueError):
        raise InvalidArgument(f"{what}: expected a whole number, got {shorten(value)!r}") from None
    if not low <= number <= high:
        raise InvalidArgument(f"{what}: must be {low} to {high}, got {number}")
    return number


def _number(value: Any, what: str, low: float, high: float) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{what}: expected a number, got {shorten(value)!r}") from None
    if not low <= number <= high:
        raise InvalidArgument(f"{what}: must be {low:g} to {high:g}, got {value!r}")
    return number


def _strings(value: Any, what: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) and i for i in items):
        raise InvalidArgument(f"{what}: expected a name or a list of names, got {shorten(value)!r}")
    return tuple(items)


def _wait(value: Any) -> tuple[float, float]:
    if isinstance(value, str) and "-" in value:
        value = value.split("-", 1)
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise InvalidArgument(f"wait: expected a number or [min, max], got {value!r}")
        low, high = (parse_duration(v, "wait") for v in value)
    else:
        low = high = parse_duration(value, "wait")
    if low > high:
        raise InvalidArgument(f"wait: min {low:g} is above max {high:g}")
    return low, high


def _field(kind: str, key: str, value: Any) -> Any:
    """One checked field value of a kind's :class:`Calls`."""
    what = f"{kind}.{key}"
    if key in ("weight",):
        return _integer(value, what, 0, 10_000)
    if key in ("backbone", "model", "condition"):
        if not isinstance(value, str):
            raise InvalidArgument(f"{what}: expected a name, got {shorten(value)!r}")
        return value
    if key == "layers":
        return _strings(value, what)
    if key == "images":
        files = _strings(value, what)
        missing = [f for f in files if not Path(f).is_file()]
        if missing:
            raise InvalidArgument(f"{what}: no such file {shorten(missing[0])!r}")
        return files
    if key == "sizes":
        sizes = value if isinstance(value, list | tuple) else [value]
        if not sizes:
            raise InvalidArgument(f"{what}: give at least one size")
        return tuple(_integer(s, what, 8, 8192) for s in sizes)
    if key == "deadline":
        seconds = parse_duration(value, what)
        if seconds <= 0:
            raise InvalidArgument(f"{what}: must be above 0")
        return seconds
    if key == "invalid":
        return _number(value, what, 0.0, 1.0)
    if key in ("octaves", "steps"):
        return _integer(value, what, 1, 10_000)
    if key == "octave_scale":
        return _number(value, what, 1.01, 4.0)
    if key in ("preview", "inline"):
        if not isinstance(value, bool):
            raise InvalidArgument(f"{what}: expected true or false, got {shorten(value)!r}")
        return value
    if key in ("guides", "batch", "count"):
        return _integer(value, what, 1, 1024)
    return _integer(value, what, 0, 100_000)  # top_k, bottom_k


# --- building a scenario ----------------------------------------------------------------------


def _read(path: str | os.PathLike) -> dict[str, Any]:
    import yaml  # light, but only needed with a file

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidArgument(f"scenario {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise InvalidArgument(f"scenario {path}: not valid YAML/JSON ({shorten(exc, 200)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidArgument(f"scenario {path}: expected a mapping at the top")
    return data


def _check_keys(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InvalidArgument(f"{where}: unknown key {unknown[0]!r}; valid keys: "
                              f"{', '.join(sorted(allowed))}")


def _kind_values(data: Mapping[str, Any], kind: str, flags: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of one kind: top-level keys, then its section, then flags, each checked."""
    section = data.get(kind) or {}
    if not isinstance(section, dict):
        raise InvalidArgument(f"{kind}: expected a mapping of its settings")
    _check_keys(section, _KEYS[kind], kind)
    values: dict[str, Any] = {"deadline": _DEFAULT_DEADLINES[kind]}
    own = {name: flags[flag] for flag, (k, name) in _ONE_KIND_FLAGS.items()
           if k == kind and flag in flags}
    flags = {k: v for k, v in flags.items() if k not in _ONE_KIND_FLAGS} | own
    for layer in ({k: v for k, v in data.items() if k in _COMMON}, section, flags):
        for key, value in layer.items():
            if key in _KEYS[kind] and value is not None:
                values[key] = _field(kind, key, value)
    return values


def load_scenario(path: str | os.PathLike | None = None, *, flags: Mapping[str, Any] | None = None,
                  targets: Targets = Targets()) -> Scenario:
    """The checked scenario of the file at ``path`` (or none) with ``flags`` on top.

    ``flags`` may hold ``mix`` (text or mapping), ``wait``, ``token``, any field of
    :class:`Calls` and ``dream_model`` (``model`` is Sample's); None values are ignored.
    Without a mix, every service given in ``targets`` gets users (the GAN service only with a
    ``model``)."""
    data = _read(path) if path else {}
    _check_keys(data, _TOP, f"scenario {path}")
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    mix_spec = flags.get("mix", data.get("mix"))
    mix = parse_mix(mix_spec) if mix_spec is not None else None
    kind_flags = {k: v for k, v in flags.items() if k not in ("mix", "wait", "token")}
    calls = {kind: Calls(kind=kind, **_kind_values(data, kind, kind_flags)) for kind in KINDS}
    if mix is None:
        mix = _default_mix(calls, targets)
    calls = {kind: replace(c, weight=mix.get(kind, 0)) for kind, c in calls.items()}
    wait = _wait(flags.get("wait", data.get("wait", 0)))
    token = flags.get("token", data.get("token"))
    scenario = Scenario(calls=calls, wait=wait, token=str(token) if token else None)
    check_targets(scenario, targets)
    return scenario


def _default_mix(calls: Mapping[str, Calls], targets: Targets) -> dict[str, int]:
    given = {k: c.weight for k, c in calls.items() if c.weight}
    if given:
        return given
    mix = {"dream": 1} if targets.dream else {}
    if targets.guide:
        mix.update(guide_weights=1, select_neurons=1)
    if targets.gan and calls["sample"].model:
        mix["sample"] = 1
    return mix


def check_targets(scenario: Scenario, targets: Targets) -> None:
    """Every kind with users has its service's target (and ``sample`` a model)."""
    active = scenario.active()
    if not active:
        raise InvalidArgument("the mix gives no users: set a weight above 0 (e.g. --mix dream=1)")
    flags = {"dream": "TARGET", "guide": "--guide HOST:PORT", "gan": "--gan HOST:PORT"}
    for calls in active:
        if getattr(targets, calls.service) is None:
            raise InvalidArgument(f"{calls.kind} users need the {calls.service} service: give "
                                  f"{flags[calls.service]} or set mix.{calls.kind} to 0")
        if calls.kind == "sample" and not calls.model:
            raise InvalidArgument("sample users need a model: sample.model in the scenario or "
                                  "--gan-model NAME")
        if calls.kind == "dream" and calls.condition and not calls.model:
            raise InvalidArgument("dream.condition is a one-pass model's: give dream.model in "
                                  "the scenario or --dream-model NAME")
