"""``dreamsuite presets``: the named dreams ``dreamsuite dream --preset NAME`` starts from, what
they set and whether their weights are on this machine."""

from __future__ import annotations

import argparse
import json

__all__ = ["register", "cmd_presets"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("presets", help="list the named dreams of `dream --preset`")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_presets)


def cmd_presets(args: argparse.Namespace) -> int:
    # heavy (torch): see options.config_from_args.
    from dreamsuite.engine.presets import PRESETS, preset_weights

    rows = []
    for preset in PRESETS.values():
        config = preset.config()
        fields = {name: getattr(config, name) for name in preset.fields}
        if "maplist" in fields:
            fields["maplist"] = config.maplist.to_dict()
        rows.append({
            "name": preset.name,
            "description": preset.description,
            "backbone": preset.backbone,
            "weights": preset_weights(preset),
            "fields": fields,
            "config": config.to_dict(),
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['name']}  backbone={row['backbone']}  weights={row['weights']}\n"
              f"  {row['description']}")
        print(f"  sets: {_fields_text(row['fields'])}\n")
    return 0


def _fields_text(fields: dict) -> str:
    """``maplist=mixed3,mixed5 octaves=3 ...``: the preset's fields, whole layers by name."""
    parts = []
    for name, value in fields.items():
        if name == "maplist":
            value = ",".join(_term_text(term) for term in value["layers"])
        parts.append(f"{name}={value}")
    return " ".join(parts)


def _term_text(term: dict) -> str:
    weight = "" if term["weight"] == 1.0 else f"={term['weight']:g}"
    channels = term.get("channels") or {}
    channels = ":" + ",".join(f"{c}={w:g}" for c, w in channels.items()) if channels else ""
    return f"{term['layer']}{weight}{channels}"
