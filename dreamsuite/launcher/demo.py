"""The demo behind ``dreamsuite demo --out DIR``: start the suite, dream and guided-dream
bundled sample images through the services, transfer a style to the input and rebuild it from
a shallow, a middle and a deep layer, write the results, a labelled contact sheet and an
animation of the octaves, then stop the suite.

Sized for a small CPU machine (a few minutes on 2 cores): the shorter side is 256 px, 4 octaves
of 8 steps. ``--in-process`` runs the same dreams with the engine in this process instead.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from dreamsuite.clients.dream import DreamClient, artifact_bytes, fetch_url, request_from_config
from dreamsuite.clients.style import StyleClient
from dreamsuite.engine import DreamConfig, dream
from dreamsuite.engine.style import ReconstructConfig, StyleConfig, reconstruct, stylize
from dreamsuite.errors import DreamsuiteError
from dreamsuite.images import encode_png, load_image, sample_image, save_png, to_pil
from dreamsuite.launcher.suite import Suite
from dreamsuite.v1 import dream_pb2, style_pb2

__all__ = ["demo", "DemoResult", "contact_sheet", "octave_animation", "write_demo"]

#: (input, guide) samples from scikit-image, see :data:`dreamsuite.images.SAMPLES`.
INPUT_SAMPLE = "chelsea"
GUIDE_SAMPLE = "coffee"


@dataclass
class DemoResult:
    """One dream of the demo: the final ``[3, H, W]`` image and each octave's image."""

    image: torch.Tensor
    octaves: list[torch.Tensor]
    seconds: float
    uri: str = ""


#: ``(image, guides, config) -> DemoResult``: in-process or through the dream service.
Runner = Callable[[torch.Tensor, Sequence[torch.Tensor], object], DemoResult]

#: The style sample, and the layers of the reconstruction row (shallow to deep).
STYLE_SAMPLE = "astronaut"
RECONSTRUCT_LAYERS = ("stem", "block_3", "block_10")
STYLE_ITERATIONS = 60


@dataclass
class StyleResults:
    """The demo's style transfer of the input and the input rebuilt from each layer."""

    styled: torch.Tensor
    reconstructed: dict[str, torch.Tensor]
    seconds: float


#: ``(content, style) -> StyleResults``: in-process or through the dream service.
StyleRunner = Callable[[torch.Tensor, torch.Tensor], StyleResults]


def in_process_style(content: torch.Tensor, style: torch.Tensor) -> StyleResults:
    started = time.perf_counter()
    with torch.inference_mode(False):
        styled = stylize(content, [(style, 1.0)], StyleConfig(iterations=STYLE_ITERATIONS))
        rebuilt = reconstruct(content, RECONSTRUCT_LAYERS,
                              ReconstructConfig(iterations=STYLE_ITERATIONS))
    return StyleResults(styled, rebuilt, time.perf_counter() - started)


def remote_style(target: str, *, timeout: float = 900.0) -> StyleRunner:
    """Style transfer and reconstruction through the dream service's ``StyleService``."""

    def run(content: torch.Tensor, style: torch.Tensor) -> StyleResults:
        started = time.perf_counter()
        with StyleClient(target) as client:
            styled = client.run(client.stub.Stylize, style_pb2.StylizeRequest(
                content={"data": encode_png(content)},
                styles=[{"image": {"data": encode_png(style)}, "weight": 1.0}],
                iterations=STYLE_ITERATIONS, inline_images=True), timeout=timeout)
            rebuilt = client.run(client.stub.Reconstruct, style_pb2.ReconstructRequest(
                image={"data": encode_png(content)}, layers=RECONSTRUCT_LAYERS,
                iterations=STYLE_ITERATIONS, inline_images=True), timeout=timeout)
        image = styled.images[0]
        return StyleResults(
            load_image(artifact_bytes(image.image, image.artifact)),
            {e.layer: load_image(artifact_bytes(e.image, e.artifact)) for e in rebuilt.images},
            time.perf_counter() - started)

    return run


def in_process_runner(image, guides, config) -> DemoResult:
    octaves: list[torch.Tensor] = []

    def progress(p) -> None:
        if p.image is not None:
            octaves.append(p.image)

    started = time.perf_counter()
    with torch.inference_mode(False):
        result = dream(image, config, guides=list(guides), progress=progress)
    return DemoResult(result.image, octaves, time.perf_counter() - started)


def _label_font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        return ImageFont.load_default()


def contact_sheet(panels: Sequence[tuple[str, torch.Tensor]], *, height: int = 256,
                  margin: int = 8, label: int = 26):
    """A PIL image: the ``[3, H, W]`` panels side by side at ``height`` px, each titled."""
    tiles = []
    for _, image in panels:
        pil = to_pil(image)
        tiles.append(pil.resize((round(pil.width * height / pil.height), height),
                                Image.Resampling.LANCZOS))
    width = sum(t.width for t in tiles) + margin * (len(tiles) + 1)
    sheet = Image.new("RGB", (width, height + label + 2 * margin), "white")
    draw = ImageDraw.Draw(sheet)
    font = _label_font(label - 8)
    x = margin
    for (title, _), tile in zip(panels, tiles, strict=True):
        draw.text((x, margin), title, fill="black", font=font)
        sheet.paste(tile, (x, margin + label))
        x += tile.width + margin
    return sheet


def octave_animation(start: torch.Tensor, octaves: Sequence[torch.Tensor], path: Path,
                     *, frame_ms: int = 700) -> Path:
    """An animated GIF: the input, then each octave's image scaled to the input's size."""
    first = to_pil(start)
    frames = [first] + [to_pil(o).resize(first.size, Image.Resampling.BICUBIC) for o in octaves]
    durations = [frame_ms] * (len(frames) - 1) + [frame_ms * 3]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0,
                   optimize=True)
    return path


def write_demo(out: Path, image, guide, plain: DemoResult, guided: DemoResult,
               style: torch.Tensor | None = None,
               styled: StyleResults | None = None) -> list[Path]:
    """Every file of the demo in ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = [save_png(image, out / "input.png"), save_png(guide, out / "guide.png"),
               save_png(plain.image, out / "dream.png"),
               save_png(guided.image, out / "guided-dream.png")]
    panels = [("input", image), ("dream", plain.image), ("guide", guide),
              ("guided dream", guided.image)]
    if style is not None and styled is not None:
        written += [save_png(style, out / "style.png"),
                    save_png(styled.styled, out / "styled.png")]
        panels += [("style", style), ("style transfer", styled.styled)]
        for layer, rebuilt in styled.reconstructed.items():
            written.append(save_png(rebuilt, out / f"reconstructed-{layer}.png"))
            panels.append((f"from {layer}", rebuilt))
    sheet = contact_sheet(panels)
    sheet.save(out / "contact-sheet.png", optimize=True)
    written.append(out / "contact-sheet.png")
    written.append(octave_animation(image, plain.octaves, out / "dream-octaves.gif"))
    written.append(octave_animation(image, guided.octaves, out / "guided-dream-octaves.gif"))
    return written


def run_demo(runner: Runner, args: argparse.Namespace,
             style_runner: StyleRunner | None = None) -> list[Path]:
    """The plain and the guided dream of the samples through ``runner`` (and a style transfer
    and content reconstruction through ``style_runner``); writes ``args.out``."""
    config = DreamConfig(octaves=args.octaves, steps=args.steps, seed=0).validate()
    image = sample_image(INPUT_SAMPLE, size=args.size)
    guide = sample_image(GUIDE_SAMPLE, size=args.size)
    print(f"dreaming {INPUT_SAMPLE} ({image.shape[2]}x{image.shape[1]}, {config.octaves} octaves "
          f"x {config.steps} steps) ...", flush=True)
    plain = runner(image, [], config)
    print(f"  dream: {plain.seconds:.1f} s {plain.uri}", flush=True)
    print(f"guided dream of {INPUT_SAMPLE}, guide {GUIDE_SAMPLE} ...", flush=True)
    guided = runner(image, [guide], config)
    print(f"  guided dream: {guided.seconds:.1f} s {guided.uri}", flush=True)
    style = styled = None
    if style_runner is not None:
        style = sample_image(STYLE_SAMPLE, size=args.size)
        print(f"style transfer ({STYLE_SAMPLE}) and reconstruction from "
              f"{', '.join(RECONSTRUCT_LAYERS)} ...", flush=True)
        styled = style_runner(image, style)
        print(f"  style: {styled.seconds:.1f} s", flush=True)
    return write_demo(Path(args.out), image, guide, plain, guided, style, styled)


def demo(args: argparse.Namespace) -> list[Path]:
    """The whole demo (``args`` as ``dreamsuite demo`` parses them); returns the files written."""
    if args.in_process:
        return run_demo(in_process_runner, args, in_process_style)
    return _run_through_suite(args)


def _run_through_suite(args: argparse.Namespace) -> list[Path]:
    with tempfile.TemporaryDirectory(prefix="dreamsuite-demo-") as run_dir:
        artifacts = args.artifacts or (Path(args.out).resolve() / "artifacts").as_uri()
        print("starting the suite (TorchServe, guide service, dream service) ...", flush=True)
        with Suite(Path(run_dir), artifacts=artifacts).start() as suite:
            for line in suite.describe():
                print(line)
            runner = remote_runner(suite.endpoints()["dream"])
            written = run_demo(runner, args, remote_style(suite.endpoints()["dream"]))
            print("stopping the suite ...", flush=True)
    return written


def remote_runner(target: str, *, timeout: float = 900.0) -> Runner:
    """A runner that dreams through the dream service at ``target``: every octave stored and
    sent back inline, the guides (if any) sent inline with the request."""

    def run(image, guides, config) -> DemoResult:
        request = request_from_config(
            config, encode_png(image), guides=[encode_png(g) for g in guides],
            output=dream_pb2.OutputOptions(store_octaves=True, inline_images=True))
        octaves, result = [], None
        started = time.perf_counter()
        with DreamClient(target) as client:
            for update in client.dream(request, timeout=timeout):
                octaves.append(load_image(
                    update.image or fetch_url(update.octave_artifact.presigned_url)))
                if update.HasField("result"):
                    result = update.result
        if result is None:
            raise DreamsuiteError("the dream service sent no result")
        final = load_image(result.image or fetch_url(result.artifact.presigned_url))
        return DemoResult(final, octaves, time.perf_counter() - started, result.artifact.uri)

    return run
