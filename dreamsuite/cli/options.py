"""Options shared by the commands that dream or compute guide weights, and their conversion
into library values."""

from __future__ import annotations

import argparse
import dataclasses

from dreamsuite.errors import InvalidArgument

__all__ = ["add_backbone_options", "add_dream_options", "config_from_args", "whole_layers"]

_FIELDS = {
    "backbone": "backbone", "weights": "weights", "octaves": "octaves",
    "octave_scale": "octave_scale", "steps": "steps", "step_size": "step_size",
    "jitter": "jitter", "tile": "tile", "seed": "seed", "tv": "tv", "smooth": "smooth",
    "blur_every": "blur_every", "guide_mode": "guide_mode",
}


def add_backbone_options(p: argparse.ArgumentParser, *, layer_required: bool = False) -> None:
    p.add_argument("--backbone", default=None, help="backbone name (default efficientnet_lite0)")
    p.add_argument("--weights", choices=("pretrained", "random"), default=None,
                   help="pretrained (default) or random weights, by name only")
    p.add_argument("--layer", action="append", required=layer_required, metavar="SPEC",
                   help="layer, layer=W, layer:3,17 or layer:3=1.0,17=-0.5 (repeatable)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA if present)")


def add_dream_options(p: argparse.ArgumentParser) -> None:
    """The dream options, shared by the local and the remote dream command."""
    add_backbone_options(p)
    p.add_argument("--preset", metavar="NAME",
                   help="start from a named dream (`dreamsuite presets` lists them); the "
                        "options given alongside override it")
    p.add_argument("--maplist", help="maplist JSON (from `dreamsuite select` or by hand)")
    p.add_argument("--octaves", type=int, help="number of octaves (default 4)")
    p.add_argument("--octave-scale", type=float, help="size ratio between octaves (default 1.4)")
    p.add_argument("--steps", type=int, help="gradient steps per octave (default 10)")
    p.add_argument("--step-size", type=float, help="step in pixel units after normalisation")
    p.add_argument("--jitter", type=int, help="random roll per step, pixels (default 32)")
    p.add_argument("--tile", type=int, help="tile size for large images (default 512)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--tv", type=float, help="total-variation weight (default 0)")
    p.add_argument("--smooth", type=float, help="gradient smoothing sigma in pixels (default 0)")
    p.add_argument("--blur-every", type=int, help="blur the image every N steps (default never)")
    p.add_argument("--guide", action="append", metavar="IMAGE", help="guide image (repeatable)")
    p.add_argument("--guide-mode", choices=("weights", "match"),
                   help="weights: the paper's per-map weights (default); match: Google's")
    p.add_argument("--from-png", metavar="DREAM.png", help="re-run the dream stored in a PNG")
    p.add_argument("--save-octaves", metavar="DIR", help="also save each octave's image here")
    p.add_argument("--remote", metavar="HOST:PORT", help="dream through the dream service")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace, base: dict | None = None):
    """A validated :class:`~dreamsuite.engine.DreamConfig` from ``base`` (e.g. a PNG's
    provenance), else ``--preset`` if given, and the given flags on top."""
    # heavy (torch): the engine loads only for commands that dream, so `dreamsuite health`
    # (a container health check with a few seconds' budget) never imports it.
    from dreamsuite.engine import DreamConfig, Maplist, load_maplist, parse_layer_spec
    from dreamsuite.engine.presets import get_preset

    preset = getattr(args, "preset", None)
    if base:
        config = DreamConfig.from_dict(base)
    else:
        config = get_preset(preset).config() if preset is not None else DreamConfig()
    changes = {f: getattr(args, a) for a, f in _FIELDS.items() if getattr(args, a, None) is not None}
    maplist = None
    if getattr(args, "maplist", None):
        maplist = load_maplist(args.maplist)
    if args.layer:
        layers = Maplist(tuple(parse_layer_spec(s) for s in args.layer))
        maplist = layers if maplist is None else maplist + layers
    if maplist is not None:
        changes["maplist"] = maplist
    return dataclasses.replace(config, **changes).validate()


def whole_layers(specs: list[str]) -> list[str]:
    """Layer names of ``--layer`` specs for commands that work on whole layers; a spec that
    picks channels or a weight is refused rather than silently ignored."""
    layers = []
    for spec in specs:
        head, colon, _ = spec.partition(":")
        layer, _, weight = head.partition("=")
        if colon or not layer or (weight and not _is_one(weight)):
            raise InvalidArgument(
                f"--layer {spec!r}: this command works on whole layers; give just the name "
                f"({layer!r})"
            )
        layers.append(layer)
    return layers


def _is_one(text: str) -> bool:
    try:
        return float(text) == 1.0
    except ValueError:
        return False
