"""``dreamsuite guide-weights | select``: guide weights and Lucid-style neuron selection, on
this machine or with ``--remote`` through the guide service; the same output either way."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dreamsuite.cli.options import add_backbone_options, whole_layers
from dreamsuite.errors import InvalidArgument

__all__ = ["register", "cmd_guide_weights", "cmd_select", "print_guide_weights",
           "write_maplist"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("guide-weights", help="normalised per-map guide weights of images")
    p.add_argument("images", nargs="+", help="guide image(s); several guides average")
    add_backbone_options(p, layer_required=True)
    p.add_argument("--json", action="store_true", help='print {"backbone", "layers": {L: [w...]}}')
    p.add_argument("--remote", metavar="HOST:PORT", help="ask the guide service instead")
    p.set_defaults(func=cmd_guide_weights)

    p = sub.add_parser("select", help="Lucid-style neuron selection over a batch of images")
    p.add_argument("images", nargs="+", help="images and/or folders of images")
    add_backbone_options(p, layer_required=True)
    p.add_argument("--top-k", type=int, default=0, help="maps to maximise (highest mean)")
    p.add_argument("--bottom-k", type=int, default=0, help="maps to minimise (lowest mean)")
    p.add_argument("-o", "--output", required=True, help="maplist JSON to write")
    p.add_argument("--remote", metavar="HOST:PORT", help="ask the guide service instead")
    p.set_defaults(func=cmd_select)


def print_guide_weights(backbone: str, weights: dict[str, list[float]], as_json: bool) -> None:
    """The output of ``guide-weights``, the same for local and remote computation."""
    if as_json:
        print(json.dumps({"backbone": backbone, "layers": weights}))
        return
    for layer, values in weights.items():
        ranked = sorted(range(len(values)), key=lambda c: -values[c])[:8]
        top = ", ".join(f"{c}={values[c]:.4f}" for c in ranked)
        print(f"{backbone} {layer}: {len(values)} maps; strongest: {top}")


def write_maplist(path: str, backbone: str, maplist) -> None:
    """Write a maplist JSON that ``dream --maplist`` accepts, recording its backbone."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"backbone": backbone, **maplist.to_dict()}, indent=2) + "\n")
    summary = "; ".join(
        f"{t.layer}: +{[c for c, w in t.channels.items() if w > 0]} "
        f"-{[c for c, w in t.channels.items() if w < 0]}"
        for t in maplist.terms
    )
    print(f"wrote {out}: {summary}")


def _read(path: str | Path) -> bytes:
    """An image file's bytes; the same error as the local command when it is missing."""
    if not Path(path).is_file():
        raise InvalidArgument(f"image {str(path)!r} does not exist or is not a file")
    return Path(path).read_bytes()


def _remote_weights_only(args: argparse.Namespace) -> None:
    if (args.weights or "pretrained") != "pretrained":
        raise InvalidArgument("--remote: the guide service uses pretrained weights only")


def cmd_guide_weights(args: argparse.Namespace) -> int:
    layers = whole_layers(args.layer)
    if args.remote:
        _remote_weights_only(args)
        # heavy (torch, through the client's conversions): see options.config_from_args.
        from dreamsuite.clients.guide import GuideClient

        with GuideClient(args.remote) as client:
            backbone, weights = client.guide_weights([_read(p) for p in args.images],
                                                     args.backbone or "",
                                                     [(name, 1.0) for name in layers])
        print_guide_weights(backbone, weights, args.json)
        return 0
    # heavy (torch): see options.config_from_args.
    from dreamsuite.backbones import get_backbone
    from dreamsuite.engine import guide_weights
    from dreamsuite.images import load_image

    backbone = get_backbone(args.backbone, weights=args.weights or "pretrained",
                            device=args.device)
    computed = guide_weights(backbone, [load_image(p) for p in args.images], layers)
    print_guide_weights(backbone.name, {k: v.tolist() for k, v in computed.items()}, args.json)
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    layers = whole_layers(args.layer)
    # heavy (torch): see options.config_from_args.
    from dreamsuite.images import image_files

    paths = image_files(args.images)
    if args.remote:
        _remote_weights_only(args)
        from dreamsuite.clients.guide import GuideClient

        with GuideClient(args.remote) as client:
            backbone, selection = client.select([_read(p) for p in paths], args.backbone or "",
                                                layers, top_k=args.top_k,
                                                bottom_k=args.bottom_k)
        write_maplist(args.output, backbone, selection.maplist())
        return 0
    from dreamsuite.backbones import get_backbone
    from dreamsuite.engine import select_neurons
    from dreamsuite.images import load_image

    backbone = get_backbone(args.backbone, weights=args.weights or "pretrained",
                            device=args.device)
    selection = select_neurons(backbone, [load_image(p) for p in paths], layers,
                               top_k=args.top_k, bottom_k=args.bottom_k)
    write_maplist(args.output, backbone.name, selection.maplist())
    return 0
