"""``dreamsuite reconstruct`` and ``dreamsuite style``: the paper's background methods, locally
or through the dream service (``--remote``), with a live progress line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register"]


def _weighted(spec: str) -> tuple[str, float]:
    """``path`` or ``path=0.3``."""
    path, eq, weight = spec.rpartition("=")
    if eq and path:
        try:
            return path, float(weight)
        except ValueError:
            pass
    return spec, 1.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reconstruct", help="from white noise, match an image's activations at "
                                           "each layer: what each depth keeps")
    p.add_argument("image")
    p.add_argument("--layer", action="append", required=True,
                   help="a layer (repeat for a row from shallow to deep)")
    p.add_argument("--mode", choices=("content", "style"), default="content",
                   help="match the activations, or only their Gram matrices")
    p.add_argument("--all-at-once", action="store_true", help="one image matching all layers")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True,
                   help="output folder (one PNG per layer) or, for one layer, a .png file")
    p.add_argument("--remote", metavar="HOST:PORT", help="run on the dream service")
    p.set_defaults(func=cmd_reconstruct)

    s = sub.add_parser("style", help="neural style transfer (Gatys; softmax-smoothed Grams "
                                     "for EfficientNets, optimised as a Laplacian pyramid)")
    s.add_argument("content")
    s.add_argument("--style", action="append", required=True, metavar="IMAGE[=WEIGHT]",
                   help="a style image and its blend weight (repeat to blend)")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--backbone", default="efficientnet_lite0")
    s.add_argument("--content-weight", type=float, default=1.0)
    s.add_argument("--style-weight", type=float, default=1e3)
    s.add_argument("--tv-weight", type=float, default=0.0)
    s.add_argument("--transform", choices=("pyramid", "softmax", "gram"), default="pyramid",
                   help="pyramid (default): softmax-smoothed Grams, the image optimised as a "
                        "Laplacian pyramid; softmax: the same over pixels; gram: plain Gatys")
    s.add_argument("--temperature", type=float, default=2.0)
    s.add_argument("--init", choices=("content", "style", "noise"), default="content")
    s.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs")
    s.add_argument("--iterations", type=int, default=100, help="per scale (L-BFGS max_iter)")
    s.add_argument("--scales", type=int, default=1, help="coarse-to-fine pyramid levels")
    s.add_argument("--style-scale", type=float, default=1.0)
    s.add_argument("--preserve-color", action="store_true", help="transfer luminance only")
    s.add_argument("--tile", type=int, default=0, help="tile side for large images (0: off)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--remote", metavar="HOST:PORT", help="run on the dream service")
    s.set_defaults(func=cmd_style)


class _Line:
    """A live progress line on stderr."""

    def __call__(self, scale: int, scales: int, iteration: int, iterations: int,
                 loss: float, label: str = "") -> None:
        what = f" {label}" if label else ""
        sys.stderr.write(f"\r[{scale + 1}/{scales}{what}] iteration {iteration}/{iterations} "
                         f"loss {loss:.4g}   ")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")


def _outputs(output: str, names: list[str]) -> dict[str, Path]:
    path = Path(output)
    if len(names) == 1 and path.suffix.lower() == ".png":
        path.parent.mkdir(parents=True, exist_ok=True)
        return {names[0]: path}
    path.mkdir(parents=True, exist_ok=True)
    return {name: path / f"{i:02d}-{name or 'styled'}.png" for i, name in enumerate(names)}


# heavy: torch and the engine load when a command runs, not when the parser is built.
def cmd_reconstruct(args: argparse.Namespace) -> int:
    names = ["all"] if args.all_at_once else list(args.layer)
    paths = _outputs(args.output, names)
    line = _Line()
    if args.remote:
        from dreamsuite.clients.dream import artifact_bytes
        from dreamsuite.clients.style import StyleClient
        from dreamsuite.v1 import common_pb2, style_pb2
        from dreamsuite.wire.convert import image_ref

        request = style_pb2.ReconstructRequest(
            image=image_ref(args.image), backbone=args.backbone, layers=args.layer,
            all_at_once=args.all_at_once, iterations=args.iterations, seed=args.seed,
            mode=style_pb2.RECONSTRUCT_MODE_STYLE if args.mode == "style"
            else style_pb2.RECONSTRUCT_MODE_CONTENT, inline_images=True,
            weights=common_pb2.WEIGHTS_PRETRAINED)
        with StyleClient(args.remote) as client:
            result = client.run(client.stub.Reconstruct, request, on_progress=lambda u: line(
                u.scale, u.scales, u.iteration, u.iterations, u.loss, u.layer))
        line.close()
        for entry in result.images:
            paths[entry.layer].write_bytes(artifact_bytes(entry.image, entry.artifact))
            print(f"{entry.layer}: {paths[entry.layer]} ({entry.artifact.uri})")
        return 0
    from dreamsuite.engine.style import ReconstructConfig, reconstruct
    from dreamsuite.images import load_image, save_png

    config = ReconstructConfig(backbone=args.backbone, mode=args.mode,
                               iterations=args.iterations, seed=args.seed)
    images = reconstruct(load_image(args.image), args.layer, config,
                         all_at_once=args.all_at_once,
                         progress=lambda p: line(p.scale, p.scales, p.iteration, p.iterations,
                                                 p.loss, names[p.scale]))
    line.close()
    for name, image in images.items():
        save_png(image, paths[name])
        print(f"{name}: {paths[name]}")
    return 0


def cmd_style(args: argparse.Namespace) -> int:
    styles = [_weighted(spec) for spec in args.style]
    line = _Line()
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if args.remote:
        from dreamsuite.clients.dream import artifact_bytes
        from dreamsuite.clients.style import StyleClient
        from dreamsuite.v1 import style_pb2
        from dreamsuite.wire.convert import image_ref

        request = style_pb2.StylizeRequest(
            content=image_ref(args.content),
            styles=[style_pb2.WeightedImage(image=image_ref(path), weight=weight)
                    for path, weight in styles],
            backbone=args.backbone, content_weight=args.content_weight,
            style_weight=args.style_weight, tv_weight=args.tv_weight,
            transform={"gram": style_pb2.FEATURE_TRANSFORM_GRAM,
                       "softmax": style_pb2.FEATURE_TRANSFORM_SOFTMAX,
                       "pyramid": style_pb2.FEATURE_TRANSFORM_PYRAMID}[args.transform],
            temperature=args.temperature,
            init={"content": style_pb2.STYLE_INIT_CONTENT, "style": style_pb2.STYLE_INIT_STYLE,
                  "noise": style_pb2.STYLE_INIT_NOISE}[args.init],
            optimizer=(style_pb2.STYLE_OPTIMIZER_ADAM if args.optimizer == "adam"
                       else style_pb2.STYLE_OPTIMIZER_LBFGS),
            iterations=args.iterations, scales=args.scales, style_scale=args.style_scale,
            preserve_color=args.preserve_color, tile=args.tile, seed=args.seed,
            inline_images=True)
        with StyleClient(args.remote) as client:
            result = client.run(client.stub.Stylize, request, on_progress=lambda u: line(
                u.scale, u.scales, u.iteration, u.iterations, u.loss))
        line.close()
        entry = result.images[0]
        output.write_bytes(artifact_bytes(entry.image, entry.artifact))
        print(f"{output} ({entry.artifact.uri})")
        return 0
    from dreamsuite.engine.style import StyleConfig, stylize
    from dreamsuite.images import load_image, save_png

    config = StyleConfig(
        backbone=args.backbone, content_weight=args.content_weight,
        style_weight=args.style_weight, tv_weight=args.tv_weight, transform=args.transform,
        temperature=args.temperature, init=args.init, optimizer=args.optimizer,
        iterations=args.iterations, scales=args.scales, style_scale=args.style_scale,
        preserve_color=args.preserve_color, tile=args.tile, seed=args.seed)
    image = stylize(load_image(args.content), [(load_image(p), w) for p, w in styles], config,
                    progress=lambda p: line(p.scale, p.scales, p.iteration, p.iterations,
                                            p.loss))
    line.close()
    save_png(image, output)
    print(output)
    return 0
