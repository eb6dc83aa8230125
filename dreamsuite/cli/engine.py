"""``dreamsuite backbones | dream | guide-weights | select``: the engine on this machine
(or, with ``--remote``, through the suite's services)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from dreamsuite.errors import InvalidArgument

__all__ = ["register", "collect_images", "config_from_args"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backbones", help="list backbones, their layers and weight status")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_backbones)

    p = sub.add_parser("dream", help="dream an image (locally, or --remote through the suite)")
    p.add_argument("input", nargs="?", help="input image (optional with --from-png)")
    p.add_argument("-o", "--output", required=True, help="output PNG (provenance in text chunks)")
    add_dream_options(p)
    p.set_defaults(func=cmd_dream)

    p = sub.add_parser("guide-weights", help="normalised per-map guide weights of images")
    p.add_argument("images", nargs="+", help="guide image(s); several guides average")
    _add_backbone_options(p, layer_required=True)
    p.add_argument("--json", action="store_true", help='print {"backbone", "layers": {L: [w...]}}')
    p.add_argument("--remote", metavar="HOST:PORT", help="ask the guide service instead")
    p.set_defaults(func=cmd_guide_weights)

    p = sub.add_parser("select", help="Lucid-style neuron selection over a batch of images")
    p.add_argument("images", nargs="+", help="images and/or folders of images")
    _add_backbone_options(p, layer_required=True)
    p.add_argument("--top-k", type=int, default=0, help="maps to maximise (highest mean)")
    p.add_argument("--bottom-k", type=int, default=0, help="maps to minimise (lowest mean)")
    p.add_argument("-o", "--output", required=True, help="maplist JSON to write")
    p.add_argument("--remote", metavar="HOST:PORT", help="ask the guide service instead")
    p.set_defaults(func=cmd_select)


def _add_backbone_options(p: argparse.ArgumentParser, *, layer_required: bool = False) -> None:
    p.add_argument("--backbone", default=None, help="backbone name (default efficientnet_lite0)")
    p.add_argument("--weights", choices=("pretrained", "random"), default=None,
                   help="pretrained (default) or random weights, by name only")
    p.add_argument("--layer", action="append", required=layer_required, metavar="SPEC",
                   help="layer, layer=W, layer:3,17 or layer:3=1.0,17=-0.5 (repeatable)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA if present)")


def add_dream_options(p: argparse.ArgumentParser) -> None:
    """The dream options, shared by the local and the remote dream command."""
    _add_backbone_options(p)
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


_FIELDS = {
    "backbone": "backbone", "weights": "weights", "octaves": "octaves",
    "octave_scale": "octave_scale", "steps": "steps", "step_size": "step_size",
    "jitter": "jitter", "tile": "tile", "seed": "seed", "tv": "tv", "smooth": "smooth",
    "blur_every": "blur_every", "guide_mode": "guide_mode",
}


def config_from_args(args: argparse.Namespace, base: dict | None = None):
    """A :class:`DreamConfig` from ``base`` (e.g. a PNG's provenance) and the given flags."""
    from dreamsuite.dream import DreamConfig
    from dreamsuite.objectives import Maplist, load_maplist, parse_layer_spec

    config = DreamConfig.from_dict(base) if base else DreamConfig()
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


def collect_images(paths: list[str]) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            found.append(path)
    if not found:
        raise InvalidArgument(f"no images found in {', '.join(paths)}")
    return found


def cmd_backbones(args: argparse.Namespace) -> int:
    from dreamsuite.backbones import get_backbone_spec, list_backbones, weights_status

    rows = []
    for name in list_backbones():
        spec = get_backbone_spec(name)
        rows.append({
            "name": name,
            "description": spec.description,
            "layers": [{"name": info.name, "channels": info.channels} for info in spec.layers],
            "default_layer": spec.default_layer,
            "min_size": spec.min_size,
            "weights": weights_status(spec),
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['name']}  weights={row['weights']}  min_size={row['min_size']}  "
              f"default_layer={row['default_layer']}\n  {row['description']}")
        layers = ", ".join(f"{layer['name']}({layer['channels']})" for layer in row["layers"])
        print(f"  layers: {layers}\n")
    return 0


def cmd_dream(args: argparse.Namespace) -> int:
    from dreamsuite.cli.dreaming import run_dream

    return run_dream(args)


def cmd_guide_weights(args: argparse.Namespace) -> int:
    from dreamsuite.cli.dreaming import run_guide_weights

    return run_guide_weights(args)


def cmd_select(args: argparse.Namespace) -> int:
    from dreamsuite.cli.dreaming import run_select

    return run_select(args)


def print_json(data) -> None:
    json.dump(data, sys.stdout)
    sys.stdout.write("\n")
