"""``dreamsuite backbones``: the registered backbones, their layers and weight status."""

from __future__ import annotations

import argparse
import json

__all__ = ["register", "cmd_backbones"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backbones", help="list backbones, their layers and weight status")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_backbones)


def cmd_backbones(args: argparse.Namespace) -> int:
    # heavy (torch): see options.config_from_args.
    from dreamsuite.backbones import get_backbone_spec, list_backbones, weights_status

    rows = []
    for name in list_backbones():
        spec = get_backbone_spec(name)
        rows.append({
            "name": name,
            "description": spec.description,
            "layers": [{"name": info.name, "channels": info.channels,
                        "aliases": list(info.aliases)} for info in spec.layers],
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
        layers = ", ".join(_layer_text(layer) for layer in row["layers"])
        print(f"  layers: {layers}\n")
    return 0


def _layer_text(layer: dict) -> str:
    """``mixed_6a(768, mixed3)``: the name, the channel count, then any aliases."""
    return f"{layer['name']}({', '.join([str(layer['channels']), *layer['aliases']])})"
