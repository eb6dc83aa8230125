"""``dreamsuite dream``: dream an image on this machine, or with ``--remote`` through the dream
service; the same options and output either way."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from dreamsuite.cli.options import add_dream_options, config_from_args
from dreamsuite.cli.progress import ProgressBar
from dreamsuite.errors import InvalidArgument

__all__ = ["register", "cmd_dream"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dream", help="dream an image (locally, or --remote through the suite)")
    p.add_argument("input", nargs="?", help="input image (optional with --from-png)")
    p.add_argument("-o", "--output", required=True, help="output PNG (provenance in text chunks)")
    add_dream_options(p)
    _add_clean_options(p)
    _add_shaping_options(p)
    g = p.add_argument_group("one-pass dreams (a trained dream2dream model instead of the "
                             "optimisation)")
    g.add_argument("--model", help="the model: locally its id in --artifacts' store (as `gan "
                   "train` named it); with --remote the TorchServe model the dream service "
                   "forwards to (`gan export`'s name)")
    g.add_argument("--condition", default="", help="which of the model's dream configs (its "
                   "data set id or index; default the first)")
    g.add_argument("--artifacts", default="artifacts",
                   help="store holding local --model (default ./artifacts)")
    p.set_defaults(func=cmd_dream)


def _add_clean_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cleaner dreams (default: --laplacian 4 --decorrelate; the plain "
                             "pixel step: --laplacian 0 --no-decorrelate)")
    g.add_argument("--laplacian", type=int, metavar="LEVELS",
                   help="normalise the step over a Laplacian pyramid of LEVELS (0: off)")
    g.add_argument("--decorrelate", action=argparse.BooleanOptionalAction, default=None,
                   help="take the step in Lucid's decorrelated colour space")
    g.add_argument("--fourier", type=float, metavar="DECAY",
                   help="scale the step's spectrum by 1/|f|**DECAY (Lucid's Fourier image: 1; "
                        "default 0: off)")


def _add_shaping_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("local and scale-dependent guidance")
    g.add_argument("--guide-mask", action="append", metavar="MASK",
                   help="mask image of the matching --guide (same order; bright: grow that "
                        "guide's patterns there); 'none': the whole image")
    g.add_argument("--guide-octaves", action="append", metavar="W,W,...",
                   help="per-octave multipliers of the matching --guide, smallest octave "
                        "first; 'none': 1 throughout")
    g.add_argument("--layer-octaves", action="append", metavar="LAYER=W,W,...",
                   help="per-octave multipliers of a maplist layer (repeatable)")


def _weights(text: str, flag: str) -> tuple[float, ...]:
    if text.strip().lower() == "none":
        return ()
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InvalidArgument(f"{flag} {text!r}: give numbers separated by commas, one per "
                              "octave (e.g. 0,0.5,1,1)") from None


def _shaped(args: argparse.Namespace, config):
    """``config`` with the cleaning and shaping flags that were given."""
    changes: dict = {}
    for flag, field in (("laplacian", "laplacian"), ("decorrelate", "decorrelate"),
                        ("fourier", "fourier")):
        if getattr(args, flag) is not None:
            changes[field] = getattr(args, flag)
    if args.guide_octaves:
        changes["guide_octave_weights"] = tuple(_weights(t, "--guide-octaves")
                                                for t in args.guide_octaves)
    if args.layer_octaves:
        layers = {}
        for spec in args.layer_octaves:
            layer, eq, weights = spec.partition("=")
            if not eq or not layer:
                raise InvalidArgument(f"--layer-octaves {spec!r}: use LAYER=W,W,... (one "
                                      "weight per octave)")
            layers[layer] = _weights(weights, "--layer-octaves")
        changes["layer_octave_weights"] = layers
    return dataclasses.replace(config, **changes).validate() if changes else config


def _masks(args: argparse.Namespace, recorded) -> list[str | None]:
    """The guide mask paths (None: that guide covers the whole image), given or recorded."""
    if not args.guide_mask:
        return list(recorded.guide_masks) if not args.guide else []
    return [None if m.strip().lower() == "none" else m for m in args.guide_mask]


def _recorded(args: argparse.Namespace):
    """The ``--from-png`` dream's record, or an empty one."""
    # heavy (torch): only commands that dream load the engine (see options.config_from_args).
    from dreamsuite.engine import Recorded, read_provenance

    if not args.from_png:
        return Recorded({})
    return read_provenance(args.from_png, args.from_png)


def cmd_dream(args: argparse.Namespace) -> int:
    if args.model:
        return _one_pass(args)
    if args.preset is not None and args.from_png:
        raise InvalidArgument("give --preset or --from-png, not both: each sets the whole dream")
    recorded = _recorded(args)
    source = args.input or recorded.input
    if not source:
        raise InvalidArgument("give an INPUT image (or --from-png of a dream that recorded one)")
    config = _shaped(args, config_from_args(args, recorded.config or None))
    # Match-mode guides are not in the recorded maplist, so a re-run needs the guide images.
    guides = args.guide or recorded.guides
    masks = _masks(args, recorded)
    octave_dir = Path(args.save_octaves) if args.save_octaves else None
    if args.remote:
        return _dream_remote(args, config, source, guides, octave_dir, masks)
    return _dream_local(args, config, source, guides, octave_dir, masks)


def _dream_local(args, config, source: str, guides: list[str], octave_dir: Path | None,
                 masks: list[str | None]) -> int:
    # heavy (torch): see options.config_from_args.
    import torch

    from dreamsuite.engine import dream, provenance_text
    from dreamsuite.images import load_image, save_png

    image = load_image(source)
    bar = ProgressBar(config.octaves * config.steps, enabled=not args.quiet)

    def progress(p) -> None:
        bar.update(p.octave, p.octaves, p.loss, p.size, total=p.octaves * p.steps)
        if p.image is not None and octave_dir is not None:
            save_png(p.image, octave_dir / f"octave_{p.octave + 1:02d}.png")

    try:
        with torch.inference_mode(False):
            result = dream(image, config, guides=[load_image(g) for g in guides],
                           guide_masks=[None if m is None else load_image(m) for m in masks],
                           progress=progress, device=args.device)
    finally:
        bar.close()
    result.provenance["input"] = str(Path(source).resolve())
    result.provenance["guides"] = [str(Path(g).resolve()) for g in guides]
    if masks:
        result.provenance["guide_masks"] = [None if m is None else str(Path(m).resolve())
                                            for m in masks]
    path = save_png(result.image, args.output, provenance_text(result.provenance))
    print(f"wrote {path} ({result.image.shape[2]}x{result.image.shape[1]}, "
          f"final loss {result.losses[-1]:.4g})")
    return 0


def _dream_remote(args, config, source: str, guides: list[str], octave_dir: Path | None,
                  masks: list[str | None]) -> int:
    """The local command's options, the service's device; a progress bar per octave; the final
    PNG (and ``--save-octaves``) saved here."""
    # heavy (torch, through the wire conversions): see options.config_from_args.
    from dreamsuite.clients.dream import DreamClient, artifact_bytes, request_from_config
    from dreamsuite.v1 import dream_pb2

    if args.device:
        print("note: --device is ignored with --remote (the service chose its device)",
              file=sys.stderr)
    output = dream_pb2.OutputOptions(preview_format=dream_pb2.PREVIEW_FORMAT_NONE,
                                     store_octaves=octave_dir is not None, inline_images=True)
    # A stored dream records artifact URIs for its input and guides: --from-png reuses them.
    request = request_from_config(config, source, guides=guides, guide_masks=masks,
                                  output=output)
    bar = ProgressBar(config.octaves, enabled=not args.quiet)

    def on_update(update) -> None:
        bar.update(update.octave, update.octaves, update.loss, (update.height, update.width),
                   total=update.octaves)
        if octave_dir is not None:
            octave_dir.mkdir(parents=True, exist_ok=True)
            data = artifact_bytes(update.image, update.octave_artifact)
            (octave_dir / f"octave_{update.octave + 1:02d}.png").write_bytes(data)

    try:
        with DreamClient(args.remote) as client:
            result = client.run(request, on_update=on_update)
    finally:
        bar.close()
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(artifact_bytes(result.image, result.artifact))
    print(f"wrote {path} ({result.width}x{result.height}, final loss "
          f"{result.octave_losses[-1]:.4g}); stored as {result.artifact.uri}")
    return 0


def _one_pass(args: argparse.Namespace) -> int:
    """``--model``: one forward pass of a trained dream2dream network, here or through the
    dream service (which asks TorchServe); the options of the optimisation do not apply."""
    if not args.input:
        raise InvalidArgument("give the INPUT image to dream with --model")
    if args.from_png or args.preset or args.guide:
        raise InvalidArgument("--model runs a trained network: --from-png, --preset and "
                              "--guide do not apply")
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    if args.remote:
        from dreamsuite.clients.dream import DreamClient, artifact_bytes
        from dreamsuite.v1 import dream_pb2
        from dreamsuite.wire.convert import image_ref

        request = dream_pb2.DreamRequest(
            image=image_ref(args.input), model=args.model, condition=args.condition,
            output=dream_pb2.OutputOptions(preview_format=dream_pb2.PREVIEW_FORMAT_NONE,
                                           inline_images=True))
        with DreamClient(args.remote) as client:
            result = client.run(request)
        path.write_bytes(artifact_bytes(result.image, result.artifact))
        print(f"wrote {path} ({result.width}x{result.height}, one pass of {args.model!r}); "
              f"stored as {result.artifact.uri}")
        return 0
    # heavy (torch): see options.config_from_args.
    from dreamsuite.artifacts import open_store
    from dreamsuite.engine import provenance_text
    from dreamsuite.gan.dream2dream import condition_index, one_pass
    from dreamsuite.gan.paired import load_dream2dream
    from dreamsuite.gan.records import read_model
    from dreamsuite.images import load_image, save_png

    artifacts = args.artifacts
    store = open_store(artifacts if "://" in artifacts else Path(artifacts).resolve().as_uri())
    record = read_model(store, args.model)
    if record.get("kind") != "dream2dream":
        raise InvalidArgument(f"model {args.model!r} is a {record.get('kind')!r} model; --model "
                              "needs a dream2dream model (`gan train ... --model dream2dream`)")
    network, info = load_dream2dream(store, record["checkpoint"], args.device or "cpu")
    names = [c["name"] for c in info["conditions"]]
    index = condition_index(args.condition or None, names)
    image = load_image(args.input)
    result = one_pass(network, image, condition=index)
    provenance = {"method": "one-pass", "model": args.model, "condition": names[index],
                  "checkpoint": record["checkpoint"], "input": str(Path(args.input).resolve())}
    save_png(result, path, provenance_text(provenance))
    print(f"wrote {path} ({result.shape[2]}x{result.shape[1]}, one pass of {args.model!r}, "
          f"condition {names[index]!r})")
    return 0
