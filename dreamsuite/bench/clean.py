"""``dreamsuite bench clean``: how much high-frequency speckle each gradient conditioning
removes, and what it costs in objective, against the engine's original plain pixel step.

Each combination of the cleaning options (Laplacian normalisation, decorrelated colour, Fourier
preconditioning; see :mod:`dreamsuite.engine.clean`) dreams the same sample images with the
same seed, schedule and steps as the baseline. Per dream: the high-frequency share of the change
(dreamed - input; :func:`~dreamsuite.engine.clean.high_frequency_share`) and the objective
gained (the objective of the result minus that of the input, both whole images at full size).
Per combination: the mean share over the images, its ratio to the baseline's, and the mean over
images of gain / the baseline's gain on that image. The issue's rule: a combination may become
the default when it removes at least half of the high-frequency share (ratio <= 0.5) while
keeping at least 90% of the objective gain.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from dreamsuite.engine import DreamConfig
from dreamsuite.engine.clean import high_frequency_share
from dreamsuite.engine.config import UNRECORDED
from dreamsuite.engine.dream import prepare_dream
from dreamsuite.images import sample_image

__all__ = ["main", "measure", "combinations", "BASELINE", "Figure", "Summary", "meets_rule",
           "MAX_SHARE_RATIO", "MIN_GAIN_RATIO"]

#: The engine's step before the cleaning options: plain, normalised pixel-space gradient.
BASELINE = dataclasses.replace(DreamConfig(), **UNRECORDED)
#: The issue's rule: at most half the baseline's high-frequency share, at least 90% of its gain.
MAX_SHARE_RATIO = 0.5
MIN_GAIN_RATIO = 0.9


@dataclass
class Figure:
    """One dream of one image with one combination."""

    combination: str
    image: str
    high_frequency_share: float
    objective_gain: float
    seconds: float


@dataclass
class Summary:
    """One combination over all images, relative to the baseline."""

    combination: str
    options: dict
    high_frequency_share: float
    share_ratio: float
    gain_ratio: float
    meets_rule: bool
    is_default: bool


def combinations(laplacian: int, fourier: float) -> dict[str, dict]:
    """The baseline and every combination of the three options (name -> config changes)."""
    options = {"laplacian": {"laplacian": laplacian}, "decorrelate": {"decorrelate": True},
               "fourier": {"fourier": fourier}}
    out: dict[str, dict] = {"baseline": {}}
    names = list(options)
    for mask in range(1, 2 ** len(names)):
        chosen = [n for i, n in enumerate(names) if mask >> i & 1]
        out[" + ".join(chosen)] = {k: v for n in chosen for k, v in options[n].items()}
    return out


def meets_rule(share_ratio: float, gain_ratio: float) -> bool:
    return share_ratio <= MAX_SHARE_RATIO and gain_ratio >= MIN_GAIN_RATIO


def _dream_once(image: torch.Tensor, config: DreamConfig, device: str | None) -> tuple[float,
                                                                                        float]:
    run = prepare_dream(image, config, device=device)
    result = run.run()
    change = result.image - image
    return high_frequency_share(change), run.evaluate(result.image) - run.evaluate(image)


def measure(images: Sequence[str], size: int, combos: dict[str, dict], base: DreamConfig,
            *, device: str | None = None,
            progress: Callable[[str], None] = lambda line: None) -> list[Figure]:
    """Dream every image with every combination (``base`` plus its changes)."""
    import time

    figures = []
    for name in images:
        image = sample_image(name, size=size)
        for combo, changes in combos.items():
            started = time.perf_counter()
            share, gain = _dream_once(image, dataclasses.replace(base, **changes), device)
            figures.append(Figure(combo, name, share, gain, time.perf_counter() - started))
            progress(f"{name:<10} {combo:<34} high-frequency share {share:.3f}, "
                     f"objective gain {gain:.4g}")
    return figures


def summarise(figures: Sequence[Figure], combos: dict[str, dict],
              default: DreamConfig) -> list[Summary]:
    by = {(f.combination, f.image): f for f in figures}
    images = list(dict.fromkeys(f.image for f in figures))
    base_share = statistics.fmean(by[("baseline", i)].high_frequency_share for i in images)
    out = []
    for combo, changes in combos.items():
        share = statistics.fmean(by[(combo, i)].high_frequency_share for i in images)
        gain = statistics.fmean(by[(combo, i)].objective_gain / by[("baseline", i)].objective_gain
                                for i in images)
        ratio = share / base_share if base_share else float("nan")
        options = {**UNRECORDED, **changes}
        is_default = all(getattr(default, k) == v for k, v in options.items())
        out.append(Summary(combo, options, share, ratio, gain,
                           combo != "baseline" and meets_rule(ratio, gain), is_default))
    return out


def main(args: argparse.Namespace) -> int:
    combos = combinations(args.laplacian, args.fourier)
    base = dataclasses.replace(BASELINE, seed=args.seed,
                               **({"steps": args.steps} if args.steps else {}),
                               **({"octaves": args.octaves} if args.octaves else {}))
    if not args.json:
        print(f"clean dreams: {', '.join(args.images)} at {args.size} px, {base.octaves} "
              f"octaves x {base.steps} steps, seed {base.seed}; {len(combos)} combinations",
              flush=True)
    figures = measure(args.images, args.size, combos, base, device=args.device,
                      progress=(lambda line: None) if args.json
                      else (lambda line: print(line, flush=True)))
    summaries = summarise(figures, combos, DreamConfig())
    if args.json:
        print(json.dumps({"figures": [asdict(f) for f in figures],
                          "summary": [asdict(s) for s in summaries],
                          "rule": {"max_share_ratio": MAX_SHARE_RATIO,
                                   "min_gain_ratio": MIN_GAIN_RATIO}}))
        return 0
    print(f"\n{'combination':<34}{'hf share':>10}{'vs base':>9}{'gain':>8}  rule "
          f"(share <= {MAX_SHARE_RATIO:g}x, gain >= {MIN_GAIN_RATIO:.0%})")
    for s in summaries:
        mark = "-" if s.combination == "baseline" else ("meets" if s.meets_rule else "misses")
        default = "  <- default" if s.is_default else ""
        print(f"{s.combination:<34}{s.high_frequency_share:>10.3f}{s.share_ratio:>8.2f}x"
              f"{s.gain_ratio:>7.0%}  {mark}{default}")
    return 0
