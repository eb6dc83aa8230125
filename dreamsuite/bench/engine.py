"""``dreamsuite bench engine``: dream time against the naive forward+backward floor.

The floor is how the popular open-source dreamers run: the torchvision network truncated at the
dreamed layer, weights frozen, eager fp32, default NCHW layout, BatchNorm unfused. It is the sum
over octaves of ``steps x`` the median time of one forward+backward pass at that octave's size.
The floor and the dream run on the same device (``--device``; default CUDA when present), each
CUDA pass timed to its end (synchronised). Floor passes are interleaved with the dream's own
octaves (after each octave, as many naive passes at its size as it took steps, their time
excluded from the dream's), so load from other processes hits both alike.
The floor's modules are the reference ones (``spec.build()``'s own forwards and a plain
``(x - mean) / std``), never the engine's fused stages, so speeding up the engine cannot move it.
They run in a process of their own (:class:`FloorProcess`) with the C library's default
allocator, as a dreamer's process has it: the engine's process keeps freed memory
(:func:`dreamsuite.cpus.keep_freed_memory`), which would otherwise speed the floor up too.

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
from dreamsuite.cpus import keep_freed_memory
from dreamsuite.device import select_device
from dreamsuite.engine import DreamConfig, dream
from dreamsuite.engine.objectives import LayerTerm, Maplist
from dreamsuite.engine.octaves import plan_octaves
from dreamsuite.images import resize, sample_image

__all__ = ["main", "WORKLOADS", "TARGET_RATIO", "FloorProcess", "floor_worker", "naive_network",
           "measure", "target_ratio"]

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
#: How long each process idles before the other computes (libgomp's threads spin about 6 ms
#: after a parallel region on the 2-core machine).
SETTLE_SECONDS = 0.02
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
    device: str = "cpu"

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


def _naive_pass(net: nn.Module, size: tuple[int, int],
                device: torch.device = torch.device("cpu")) -> float:
    x = torch.rand(1, 3, *size, device=device, requires_grad=True)
    _synchronize(device)
    started = time.perf_counter()
    net(x).pow(2).mean().backward()
    _synchronize(device)
    return time.perf_counter() - started


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class FloorProcess:
    """The floor's network in a child process that times naive passes on request: a fresh
    interpreter that imports the network's definition and nothing that tunes the process (no
    dream runs there), on this process's torch thread count and on ``device``. Use as a
    context manager."""

    def __init__(self, backbone: str, layer: str, device: str | torch.device = "cpu"):
        code = f"from {__name__} import floor_worker; floor_worker()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, backbone, layer, str(torch.get_num_threads()),
             str(device)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def time_passes(self, size: tuple[int, int], count: int = 1) -> list[float]:
        """Seconds of each of ``count`` naive forward+backward passes at ``size``, run back
        to back in the child. Each side idles :data:`SETTLE_SECONDS` before the other
        computes: OpenMP's threads spin for a few milliseconds after their last parallel
        region, and would take the cores from the other process's first operations."""
        time.sleep(SETTLE_SECONDS)
        self.proc.stdin.write(f"{size[0]} {size[1]} {count}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the floor's process exited (code {self.proc.wait()})")
        time.sleep(SETTLE_SECONDS)
        return [float(v) for v in line.split()]

    def info(self) -> dict:
        """The child's torch threads and whether anything there tuned its allocator."""
        self.proc.stdin.write("info\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> FloorProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def floor_worker() -> None:
    """The child of :class:`FloorProcess` (argv: backbone, layer, threads, device): reads
    ``H W N`` lines, answers each with the seconds of N naive passes at that size (``info``: a
    JSON line of its threads, device and whether its allocator was tuned)."""
    backbone, layer, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    device = torch.device(sys.argv[4] if len(sys.argv) > 4 else "cpu")
    torch.set_num_threads(threads)
    net = naive_network(backbone, layer).to(device)
    for line in sys.stdin:
        if line.strip() == "info":
            tuned = keep_freed_memory.cache_info().currsize > 0
            print(json.dumps({"threads": torch.get_num_threads(), "device": str(device),
                              "allocator_tuned": tuned}), flush=True)
            continue
        h, w, count = (int(v) for v in line.split())
        print(" ".join(str(_naive_pass(net, (h, w), device)) for _ in range(count)), flush=True)


class _FloorAfterEachOctave:
    """Progress callback: at the end of each octave, as many timed naive passes at its size as
    it took steps (the steps ran back to back, and so do the passes)."""

    def __init__(self, floor: FloorProcess):
        self.floor = floor
        self.passes: dict[tuple[int, int], list[float]] = {}
        self.spent = 0.0

    def __call__(self, progress) -> None:
        if progress.image is None:  # set on an octave's last step
            return
        started = time.perf_counter()
        size = tuple(progress.size)
        self.passes.setdefault(size, []).extend(self.floor.time_passes(size, progress.steps))
        self.spent += time.perf_counter() - started


def measure(backbone: str, weights: str, layer: str, size: int, octaves: int, steps: int,
            rounds: int, device: str | torch.device | None = None) -> EngineFigure:
    """Median over ``rounds`` dreams of the dream time, and the floor from naive passes timed
    (in :class:`FloorProcess`) right after each octave at its size, so both see the same
    machine load; both on ``device`` (default CUDA when present)."""
    device = select_device(device)
    image = sample_image("astronaut", size=size)[:, :size, :size]
    config = DreamConfig(backbone=backbone, weights=weights, octaves=octaves, steps=steps,
                         maplist=Maplist((LayerTerm(layer),)), seed=0)
    get_backbone(backbone, weights=weights, device=device)  # load outside the timed region
    spec = get_backbone_spec(backbone)
    with FloorProcess(backbone, layer, device) as floor_process:
        for octave_size in plan_octaves((size, size), octaves, config.octave_scale,
                                        spec.min_size).sizes:
            floor_process.time_passes(octave_size)  # warm both paths at every size
            dream(resize(image, octave_size), DreamConfig(backbone=backbone, weights=weights,
                                                          octaves=1, steps=1,
                                                          maplist=config.maplist),
                  device=device)
        dream_times, floors = [], []
        for _ in range(rounds):
            floor = _FloorAfterEachOctave(floor_process)
            started = time.perf_counter()
            dream(image, config, progress=floor, device=device)
            dream_times.append(time.perf_counter() - started - floor.spent)
            floors.append(sum(steps * statistics.median(t) for t in floor.passes.values()))
    dream_seconds, floor = statistics.median(dream_times), statistics.median(floors)
    return EngineFigure(backbone, layer, dream_seconds, floor, dream_seconds / floor,
                        target_ratio(backbone), str(device))


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
                               args.rounds, getattr(args, "device", None)))
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
          f"scale 1.4; floor = naive eager fp32 NCHW forward+backward; device "
          f"{figures[0].device if figures else '-'}; threads {torch.get_num_threads()}")
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
