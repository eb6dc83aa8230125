"""``dreamsuite bench engine``: dream time against the naive forward+backward floor.

The floor is how the popular open-source dreamers run: the torchvision network truncated at the
dreamed layer, weights frozen, eager fp32, default NCHW layout, BatchNorm unfused. It is the sum
over octaves of ``steps x`` the median time of one forward+backward pass at that octave's size.
Floor passes are interleaved with the dream's own steps (one naive pass at the same size after
each step, its time excluded from the dream's), so load from other processes hits both alike.
The floor's modules are the reference ones (``spec.build()``'s own forwards and a plain
``(x - mean) / std``), never the engine's fused stages, so speeding up the engine cannot move it.

Targets (:data:`TARGET_RATIO`, per backbone): at most 0.50x the floor for EfficientNet-Lite0 and
0.85x for VGG16; the table marks each workload ``ok`` or ``MISSED`` (``met`` in ``--json``).

``--memory`` also runs a 2048x2048 dream with 512 px tiles and a 512x512 dream, each in a fresh
subprocess, and reports the difference of their peak RSS.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from dreamsuite.backbones import get_backbone, get_backbone_spec
from dreamsuite.engine import DreamConfig, dream
from dreamsuite.engine.objectives import LayerTerm, Maplist
from dreamsuite.engine.octaves import plan_octaves
from dreamsuite.images import resize, sample_image

__all__ = ["main", "WORKLOADS", "TARGET_RATIO", "naive_network", "measure", "target_ratio"]

#: (backbone, weights, layer) of the standard workload.
WORKLOADS = (
    ("efficientnet_lite0", "pretrained", "block_10"),
    ("vgg16", "random", "relu4_3"),
)
#: The most dream time / floor time that each workload's backbone may take.
TARGET_RATIO = {"efficientnet_lite0": 0.50, "vgg16": 0.85}
#: The target of a backbone outside the standard workloads.
DEFAULT_TARGET_RATIO = 0.90
TARGET_MEMORY_GIB = 0.5
#: The backbone of the memory workload (the default one).
MEMORY_BACKBONE = DreamConfig().backbone


@dataclass
class EngineFigure:
    backbone: str
    layer: str
    dream_seconds: float
    floor_seconds: float
    ratio: float
    target: float = DEFAULT_TARGET_RATIO

    @property
    def met(self) -> bool:
        return self.ratio <= self.target


def target_ratio(backbone: str) -> float:
    """The target dream/floor ratio of ``backbone``'s workload."""
    return TARGET_RATIO.get(backbone, DEFAULT_TARGET_RATIO)


class NaiveNormalize(nn.Module):
    """The popular dreamers' preprocessing, ``(x - mean) / std`` with ``[1, 3, 1, 1]`` tensors
    (the floor's own, so that optimising the engine's ``Normalize`` never moves the floor)."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def naive_network(backbone: str, layer: str) -> nn.Module:
    """The floor's network: vanilla architecture cut after ``layer``, frozen, NCHW, fp32."""
    spec = get_backbone_spec(backbone)
    model = spec.build().eval().requires_grad_(False)
    stages = spec.stages(model)[: spec.layer(layer).index + 1]
    return nn.Sequential(NaiveNormalize(spec.mean, spec.std), *(stage for _, stage in stages))


def _naive_pass(net: nn.Module, size: tuple[int, int]) -> float:
    x = torch.rand(1, 3, *size, requires_grad=True)
    started = time.perf_counter()
    net(x).pow(2).mean().backward()
    return time.perf_counter() - started


class _FloorAfterEachStep:
    """Progress callback: one timed naive pass at the size of the step just taken."""

    def __init__(self, net: nn.Module):
        self.net = net
        self.passes: dict[tuple[int, int], list[float]] = {}
        self.spent = 0.0

    def __call__(self, progress) -> None:
        started = time.perf_counter()
        size = tuple(progress.size)
        self.passes.setdefault(size, []).append(_naive_pass(self.net, size))
        self.spent += time.perf_counter() - started


def measure(backbone: str, weights: str, layer: str, size: int, octaves: int, steps: int,
            rounds: int) -> EngineFigure:
    """Median over ``rounds`` dreams of the dream time, and the floor from naive passes timed
    right after each dream step at that step's size (so both see the same machine load)."""
    image = sample_image("astronaut", size=size)[:, :size, :size]
    config = DreamConfig(backbone=backbone, weights=weights, octaves=octaves, steps=steps,
                         maplist=Maplist((LayerTerm(layer),)), seed=0)
    net = naive_network(backbone, layer)
    get_backbone(backbone, weights=weights)  # load outside the timed region
    spec = get_backbone_spec(backbone)
    for octave_size in plan_octaves((size, size), octaves, config.octave_scale,
                                    spec.min_size).sizes:
        _naive_pass(net, octave_size)  # warm both paths at every size
        dream(resize(image, octave_size), DreamConfig(backbone=backbone, weights=weights,
                                                      octaves=1, steps=1, maplist=config.maplist))
    dream_times, floors = [], []
    for _ in range(rounds):
        floor = _FloorAfterEachStep(net)
        started = time.perf_counter()
        dream(image, config, progress=floor)
        dream_times.append(time.perf_counter() - started - floor.spent)
        floors.append(sum(steps * statistics.median(t) for t in floor.passes.values()))
    dream_seconds, floor = statistics.median(dream_times), statistics.median(floors)
    return EngineFigure(backbone, layer, dream_seconds, floor, dream_seconds / floor,
                        target_ratio(backbone))


def _peak_rss_child(size: int, tile: int) -> int:
    """Peak RSS in bytes of a fresh process that dreams a ``size`` x ``size`` image.

    Read from ``VmHWM`` (the high-water mark of this process image): ``ru_maxrss`` would also
    carry the parent's peak across fork and exec."""
    code = (
        "import re, torch\n"
        "from dreamsuite.engine import dream, DreamConfig\n"
        "from dreamsuite.images import resize, sample_image, resize\n"
        f"img = resize(sample_image('astronaut'), ({size}, {size})).clamp(0, 1)\n"
        f"dream(img, DreamConfig(octaves=4, steps=2, tile={tile}))\n"
        "status = open('/proc/self/status').read()\n"
        "print(int(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1)) * 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1])


def main(args: argparse.Namespace) -> int:
    figures = []
    for backbone, weights, layer in WORKLOADS:
        if args.backbone and backbone not in args.backbone:
            continue
        print(f"measuring {backbone} up to {layer} ...", file=sys.stderr)
        figures.append(measure(backbone, weights, layer, args.size, args.octaves, args.steps,
                               args.rounds))
    memory = None
    if args.memory:
        print("measuring peak RSS: 2048 px tiled dream vs 512 px dream ...", file=sys.stderr)
        small, large = _peak_rss_child(512, 512), _peak_rss_child(2048, 512)
        memory = {"peak_rss_512_gib": small / 2**30, "peak_rss_2048_gib": large / 2**30,
                  "delta_gib": (large - small) / 2**30}
    if args.json:
        rows = [{**asdict(f), "met": f.met} for f in figures]
        if memory:  # the memory workload dreams with the default backbone: report it there
            row = next((r for r in rows if r["backbone"] == MEMORY_BACKBONE), None)
            if row is None:
                rows.append(row := {"backbone": MEMORY_BACKBONE})
            row["memory"] = memory
        print(json.dumps(rows))
        return 0
    _print_table(figures, memory, args)
    return 0


def _print_table(figures: list[EngineFigure], memory: dict | None, args) -> None:
    print(f"workload: {args.size}x{args.size}, {args.octaves} octaves x {args.steps} steps, "
          f"scale 1.4; floor = naive eager fp32 NCHW forward+backward; threads "
          f"{torch.get_num_threads()}")
    print(f"{'backbone':<20}{'layer':<10}{'dream s':>10}{'floor s':>10}{'ratio':>8}  target")
    for f in figures:
        ok = "ok" if f.met else "MISSED"
        print(f"{f.backbone:<20}{f.layer:<10}{f.dream_seconds:>10.2f}{f.floor_seconds:>10.2f}"
              f"{f.ratio:>8.3f}  <= {f.target:.2f} {ok}")
    if memory:
        ok = "ok" if memory["delta_gib"] <= TARGET_MEMORY_GIB else "MISSED"
        print(f"peak RSS: 512 px {memory['peak_rss_512_gib']:.2f} GiB, 2048 px (tile 512) "
              f"{memory['peak_rss_2048_gib']:.2f} GiB, delta {memory['delta_gib']:.3f} GiB "
              f"<= {TARGET_MEMORY_GIB} {ok}")
