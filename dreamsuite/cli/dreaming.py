"""What ``dream``, ``guide-weights`` and ``select`` do once their arguments are parsed."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from dreamsuite.errors import InvalidArgument

__all__ = ["run_dream", "run_guide_weights", "run_select", "print_guide_weights", "whole_layers",
           "write_maplist", "ProgressBar", "load_from_png"]

log = logging.getLogger("dreamsuite")


class ProgressBar:
    """A tqdm bar over all steps of all octaves, showing octave and loss (stderr)."""

    def __init__(self, total: int, enabled: bool = True):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="step", file=sys.stderr, disable=not enabled,
                        dynamic_ncols=True)

    def update(self, octave: int, octaves: int, loss: float, size: tuple[int, int],
               total: int | None = None) -> None:
        """Advance one unit; ``total`` corrects the length once the real plan is known (the
        planner may drop octaves that would be below the backbone's minimum size)."""
        if total is not None and total != self.bar.total:
            self.bar.total = total
            self.bar.refresh()
        self.bar.set_description(f"octave {octave + 1}/{octaves} {size[1]}x{size[0]}")
        self.bar.set_postfix(loss=f"{loss:.4g}")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def load_from_png(args: argparse.Namespace) -> tuple[dict | None, str | None, list[str]]:
    """Config, recorded input and recorded guides of ``--from-png``, if given."""
    if not args.from_png:
        return None, None, []
    from dreamsuite.dream import PROVENANCE_KEY
    from dreamsuite.images import read_png_text

    text = read_png_text(args.from_png).get(PROVENANCE_KEY)
    if text is None:
        raise InvalidArgument(f"{args.from_png} carries no dreamsuite provenance")
    try:
        provenance = json.loads(text)
        config = provenance["config"]
        if not isinstance(config, dict):
            raise TypeError("config is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(f"{args.from_png} has a damaged dreamsuite provenance ({exc})") from None
    return config, provenance.get("input"), list(provenance.get("guides", []))


def run_dream(args: argparse.Namespace) -> int:
    if args.remote:
        from dreamsuite.clients.dream import run_remote_dream

        return run_remote_dream(args)
    import torch

    from dreamsuite.cli.engine import config_from_args
    from dreamsuite.dream import dream, provenance_text
    from dreamsuite.images import load_image, save_png

    base, recorded_input, recorded_guides = load_from_png(args)
    source = args.input or recorded_input
    if not source:
        raise InvalidArgument("give an INPUT image (or --from-png of a dream that recorded one)")
    config = config_from_args(args, base)
    image = load_image(source)
    # Match-mode guides are not in the recorded maplist, so a re-run needs the guide images.
    guide_paths = args.guide or recorded_guides
    guides = [load_image(g) for g in guide_paths]
    steps_total = config.octaves * config.steps
    bar = ProgressBar(steps_total, enabled=not args.quiet)
    octave_dir = Path(args.save_octaves) if args.save_octaves else None

    def progress(p) -> None:
        bar.update(p.octave, p.octaves, p.loss, p.size, total=p.octaves * p.steps)
        if p.image is not None and octave_dir is not None:
            save_png(p.image, octave_dir / f"octave_{p.octave + 1:02d}.png")

    try:
        with torch.inference_mode(False):
            result = dream(image, config, guides=guides, progress=progress, device=args.device)
    finally:
        bar.close()
    result.provenance["input"] = str(Path(source).resolve())
    result.provenance["guides"] = [str(Path(g).resolve()) for g in guide_paths]
    path = save_png(result.image, args.output, provenance_text(result.provenance))
    print(f"wrote {path} ({result.image.shape[2]}x{result.image.shape[1]}, "
          f"final loss {result.losses[-1]:.4g})")
    return 0


def whole_layers(specs: list[str]) -> list[str]:
    """Layer names of ``--layer`` specs for commands that work on whole layers; a spec that
    picks channels or a weight is refused rather than silently ignored."""
    from dreamsuite.objectives import parse_layer_spec

    layers = []
    for spec in specs:
        term = parse_layer_spec(spec)
        if term.channels is not None or term.weight != 1.0:
            raise InvalidArgument(
                f"--layer {spec!r}: this command works on whole layers; give just the name "
                f"({term.layer!r})"
            )
        layers.append(term.layer)
    return layers


def print_guide_weights(backbone: str, weights: dict[str, list[float]], as_json: bool) -> None:
    """The output of ``guide-weights``, the same for local and remote computation."""
    if as_json:
        print(json.dumps({"backbone": backbone, "layers": weights}))
        return
    for layer, values in weights.items():
        ranked = sorted(range(len(values)), key=lambda c: -values[c])[:8]
        top = ", ".join(f"{c}={values[c]:.4f}" for c in ranked)
        print(f"{backbone} {layer}: {len(values)} maps; strongest: {top}")


def run_guide_weights(args: argparse.Namespace) -> int:
    if args.remote:
        from dreamsuite.clients.guide import run_remote_guide_weights

        return run_remote_guide_weights(args)
    from dreamsuite.backbones import get_backbone
    from dreamsuite.guide import guide_weights
    from dreamsuite.images import load_image

    backbone = get_backbone(args.backbone or "efficientnet_lite0",
                            weights=args.weights or "pretrained", device=args.device)
    layers = whole_layers(args.layer)
    weights = guide_weights(backbone, [load_image(p) for p in args.images], layers)
    print_guide_weights(backbone.name, {k: v.tolist() for k, v in weights.items()}, args.json)
    return 0


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


def run_select(args: argparse.Namespace) -> int:
    if args.remote:
        from dreamsuite.clients.guide import run_remote_select

        return run_remote_select(args)
    from dreamsuite.backbones import get_backbone
    from dreamsuite.cli.engine import collect_images
    from dreamsuite.guide import select_neurons
    from dreamsuite.images import load_image

    backbone = get_backbone(args.backbone or "efficientnet_lite0",
                            weights=args.weights or "pretrained", device=args.device)
    layers = whole_layers(args.layer)
    images = [load_image(p) for p in collect_images(args.images)]
    selection = select_neurons(backbone, images, layers, top_k=args.top_k, bottom_k=args.bottom_k)
    write_maplist(args.output, backbone.name, selection.maplist())
    return 0
