"""``dreamsuite bench gan``: our GAN training step against the reference loop, sampling against
dreaming, and the FastGAN step.

(a) **Training step**, dcgan64: our trainer's step (:class:`dreamsuite.gan.loop.Trainer`: one D
pass on ``cat(real, fake)``, no D weight gradients in the G step, fused DiffAugment and Adam, EMA
of G included) against the reference: PyTorch's ``examples/dcgan`` loop (BCE on a sigmoid, Adam
0.0002 with betas (0.5, 0.999), D on real then on fake, then the G step, ``.item()`` for the
log) with DiffAugment inserted before every D call as in mit-han-lab/data-efficient-gans.
Same architecture, width, batch, policy and starting weights; rounds of ``--steps`` steps of
each are interleaved, so load from other processes hits both alike. Target: ours <= 0.90x.
(b) **Sampling vs dreaming**: 64 images of 64 px from the EMA generator against one dream of a
64 px image with the default :class:`~dreamsuite.engine.DreamConfig`, per image. Target >= 100x.
(c) **FastGAN**: the step time of ``fastgan128`` at the same batch (no reference; for scale).
(d) **Projected**: the step time of ``projected64`` (DCGAN's generator against a
discriminator on Lite0's frozen features) at the same width and batch, against (a)'s dcgan64
step: what judging in a pretrained network's feature space costs.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dreamsuite.device import select_device
from dreamsuite.engine import DreamConfig, dream
from dreamsuite.gan.augment import DEFAULT_POLICY
from dreamsuite.gan.loop import Trainer, to_model_range
from dreamsuite.gan.models import get_model_kind
from dreamsuite.gan.sample import sample
from dreamsuite.images import sample_image

__all__ = ["main", "reference_diff_augment", "ReferenceLoop", "TARGET_STEP_RATIO",
           "TARGET_SAMPLE_SPEEDUP"]

TARGET_STEP_RATIO = 0.90
TARGET_SAMPLE_SPEEDUP = 100.0
SAMPLES = 64


# --- the reference -----------------------------------------------------------------------------
# DiffAugment as published with the paper: mit-han-lab/data-efficient-gans, DiffAugment_pytorch.py
# (BSD 2-Clause, Copyright (c) 2020 Shengyu Zhao), re-implemented here as the baseline: one
# function per transform, the global RNG, translation and cutout by meshgrid indexing.


def _rand_brightness(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5)


def _rand_saturation(x: torch.Tensor) -> torch.Tensor:
    x_mean = x.mean(dim=1, keepdim=True)
    return (x - x_mean) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) * 2) + x_mean


def _rand_contrast(x: torch.Tensor) -> torch.Tensor:
    x_mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - x_mean) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5) + x_mean


def _rand_translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    shift_x, shift_y = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    translation_x = torch.randint(-shift_x, shift_x + 1, size=[x.size(0), 1, 1], device=x.device)
    translation_y = torch.randint(-shift_y, shift_y + 1, size=[x.size(0), 1, 1], device=x.device)
    grid_batch, grid_x, grid_y = torch.meshgrid(
        torch.arange(x.size(0), dtype=torch.long, device=x.device),
        torch.arange(x.size(2), dtype=torch.long, device=x.device),
        torch.arange(x.size(3), dtype=torch.long, device=x.device), indexing="ij")
    grid_x = torch.clamp(grid_x + translation_x + 1, 0, x.size(2) + 1)
    grid_y = torch.clamp(grid_y + translation_y + 1, 0, x.size(3) + 1)
    x_pad = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return x_pad.permute(0, 2, 3, 1).contiguous()[grid_batch, grid_x, grid_y].permute(0, 3, 1, 2)


def _rand_cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    cutout_size = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    offset_x = torch.randint(0, x.size(2) + (1 - cutout_size[0] % 2), size=[x.size(0), 1, 1],
                             device=x.device)
    offset_y = torch.randint(0, x.size(3) + (1 - cutout_size[1] % 2), size=[x.size(0), 1, 1],
                             device=x.device)
    grid_batch, grid_x, grid_y = torch.meshgrid(
        torch.arange(x.size(0), dtype=torch.long, device=x.device),
        torch.arange(cutout_size[0], dtype=torch.long, device=x.device),
        torch.arange(cutout_size[1], dtype=torch.long, device=x.device), indexing="ij")
    grid_x = torch.clamp(grid_x + offset_x - cutout_size[0] // 2, min=0, max=x.size(2) - 1)
    grid_y = torch.clamp(grid_y + offset_y - cutout_size[1] // 2, min=0, max=x.size(3) - 1)
    mask = torch.ones(x.size(0), x.size(2), x.size(3), dtype=x.dtype, device=x.device)
    mask[grid_batch, grid_x, grid_y] = 0
    return x * mask.unsqueeze(1)


_AUGMENT_FNS = {
    "color": [_rand_brightness, _rand_saturation, _rand_contrast],
    "translation": [_rand_translation],
    "cutout": [_rand_cutout],
}


def reference_diff_augment(x: torch.Tensor, policy: str = DEFAULT_POLICY) -> torch.Tensor:
    """DiffAugment as the authors wrote it (NCHW, global RNG)."""
    for p in policy.split(","):
        for f in _AUGMENT_FNS[p]:
            x = f(x)
    return x.contiguous()


class ReferenceLoop:
    """PyTorch's examples/dcgan training step with DiffAugment, on copies of ``trainer``'s
    networks (same architecture, width and starting weights)."""

    def __init__(self, trainer: Trainer, lr: float = 0.0002):
        G = trainer.kind.build_generator(trainer.width)
        D = trainer.kind.build_discriminator(trainer.width)
        G.load_state_dict(trainer.G.state_dict())
        D.load_state_dict(trainer.D.state_dict())
        self.netG, self.netD = G.to(trainer.device), _Sigmoid(D).to(trainer.device)
        self.criterion = nn.BCELoss()
        self.optimizerD = torch.optim.Adam(self.netD.parameters(), lr=lr, betas=(0.5, 0.999))
        self.optimizerG = torch.optim.Adam(self.netG.parameters(), lr=lr, betas=(0.5, 0.999))
        self.images, self.batch, self.nz = trainer.images, trainer.batch, trainer.kind.z_dim
        self.device, self.policy = trainer.device, ",".join(trainer.policy)

    def step(self) -> tuple[float, float]:
        real_cpu = to_model_range(self.images[torch.randint(len(self.images), (self.batch,))])
        self.netD.zero_grad()
        label = torch.full((self.batch,), 1.0, device=self.device)
        output = self.netD(reference_diff_augment(real_cpu, self.policy))
        err_d_real = self.criterion(output, label)
        err_d_real.backward()
        output.mean().item()
        noise = torch.randn(self.batch, self.nz, device=self.device)
        fake = self.netG(noise)
        label.fill_(0.0)
        output = self.netD(reference_diff_augment(fake.detach(), self.policy))
        err_d_fake = self.criterion(output, label)
        err_d_fake.backward()
        err_d = err_d_real + err_d_fake
        self.optimizerD.step()
        self.netG.zero_grad()
        label.fill_(1.0)
        output = self.netD(reference_diff_augment(fake, self.policy))
        err_g = self.criterion(output, label)
        err_g.backward()
        self.optimizerG.step()
        return err_d.item(), err_g.item()


class _Sigmoid(nn.Module):
    """examples/dcgan's D ends in a sigmoid: probabilities ``[N]``."""

    def __init__(self, D: nn.Module):
        super().__init__()
        self.D = D

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.D(x)[0].view(-1))


# --- the measurements --------------------------------------------------------------------------


@dataclass
class StepFigure:
    model: str
    width: int
    batch: int
    ours_seconds: float
    reference_seconds: float
    ratio: float


@dataclass
class SampleFigure:
    images: int
    sample_seconds: float
    per_image_seconds: float
    dream_seconds: float
    speedup: float


@dataclass
class ModelFigure:
    """The training step of one model kind, for scale (``fastgan128``, ``projected64``)."""

    model: str
    width: int
    batch: int
    step_seconds: float
    images_per_second: float


def _trainer(model: str, width: int | None, batch: int, device: torch.device) -> Trainer:
    kind = get_model_kind(model)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (max(4 * batch, 64), 3, kind.resolution, kind.resolution),
                           generator=generator, dtype=torch.uint8)
    return Trainer(kind, images, width=width, batch=batch, lr=2e-4, ema_decay=0.999,
                   augment=DEFAULT_POLICY, seed=0, device=device)


def _timed(fn, count: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` over ``count`` calls."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(count):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - started) / count


def measure_step(width: int | None, batch: int, steps: int, rounds: int,
                 device: torch.device) -> tuple[StepFigure, Trainer]:
    """Median seconds per step of ours and the reference, ``steps`` of each per round,
    interleaved (the order alternates between rounds)."""
    trainer = _trainer("dcgan64", width, batch, device)
    reference = ReferenceLoop(trainer)
    for _ in range(2):  # warm up both (allocator, oneDNN/cuDNN kernel choice)
        trainer.train_step()
        reference.step()
    trainer.pop_stats()
    ours, theirs = [], []
    for round_ in range(rounds):
        pair = [(ours, trainer.train_step), (theirs, reference.step)]
        for times, fn in pair if round_ % 2 == 0 else pair[::-1]:
            times.append(_timed(fn, steps, device))
    figure = StepFigure("dcgan64", trainer.width, batch, statistics.median(ours),
                        statistics.median(theirs), 0.0)
    figure.ratio = figure.ours_seconds / figure.reference_seconds
    return figure, trainer


def measure_sampling(trainer: Trainer, rounds: int, device: torch.device) -> SampleFigure:
    """Sampling :data:`SAMPLES` images against dreaming one image of the same size."""
    size = trainer.kind.resolution
    image = sample_image("astronaut", size=size)[:, :size, :size]
    dream(image, DreamConfig(octaves=1, steps=1), device=device)  # loads the backbone
    seeds = range(SAMPLES)
    sample(trainer.G_ema, seeds, truncation=math.inf, device=device)
    sampled, dreamed = [], []
    for _ in range(max(1, min(rounds, 3))):
        sampled.append(_timed(lambda: sample(trainer.G_ema, seeds, truncation=math.inf,
                                             device=device), 1, device))
        dreamed.append(_timed(lambda: dream(image, DreamConfig(), device=device), 1, device))
    per_image = statistics.median(sampled) / SAMPLES
    dream_seconds = statistics.median(dreamed)
    return SampleFigure(SAMPLES, statistics.median(sampled), per_image, dream_seconds,
                        dream_seconds / per_image)


def measure_model(model: str, width: int | None, batch: int, steps: int, rounds: int,
                  device: torch.device) -> ModelFigure:
    """Median seconds per training step of ``model`` (after one warm-up step)."""
    trainer = _trainer(model, width, batch, device)
    trainer.train_step()
    times = [_timed(trainer.train_step, steps, device) for _ in range(rounds)]
    seconds = statistics.median(times)
    return ModelFigure(model, trainer.width, batch, seconds, batch / seconds)


def main(args: argparse.Namespace) -> int:
    device = select_device(getattr(args, "device", None))
    # on the CPU FastGAN takes tens of seconds per step at batch 32: measure a smaller batch
    fast_batch = args.batch if device.type == "cuda" else min(args.batch, 8)
    print(f"measuring the dcgan64 step: ours vs the reference loop ({args.rounds} rounds x "
          f"{args.steps} steps) ...", file=sys.stderr)
    step, trainer = measure_step(args.width, args.batch, args.steps, args.rounds, device)
    print("measuring sampling vs dreaming ...", file=sys.stderr)
    sampling = measure_sampling(trainer, args.rounds, device)
    print(f"measuring the fastgan128 step at batch {fast_batch} ...", file=sys.stderr)
    fastgan = measure_model("fastgan128", None, fast_batch, 1, min(args.rounds, 3), device)
    print(f"measuring the projected64 step at batch {args.batch} ...", file=sys.stderr)
    projected = measure_model("projected64", args.width, args.batch, args.steps,
                              min(args.rounds, 3), device)
    if args.json:
        print(json.dumps({"device": str(device), "threads": torch.get_num_threads(),
                          "train_step": asdict(step), "sampling": asdict(sampling),
                          "fastgan": asdict(fastgan), "projected": asdict(projected)}))
        return 0
    _print_table(step, sampling, fastgan, projected, device, args)
    return 0


def _print_table(step: StepFigure, sampling: SampleFigure, fastgan: ModelFigure,
                 projected: ModelFigure, device: torch.device, args: argparse.Namespace) -> None:
    print(f"device {device}, {torch.get_num_threads()} threads; dcgan64 width {step.width}, batch "
          f"{step.batch}, {args.rounds} interleaved rounds of {args.steps} steps; policy "
          f"{DEFAULT_POLICY}")
    print(f"{'workload':<34}{'ours':>12}{'baseline':>12}{'ratio':>10}  target")
    ok = "ok" if step.ratio <= TARGET_STEP_RATIO else "MISSED"
    print(f"{'(a) train step, s (vs dcgan loop)':<34}{step.ours_seconds:>12.4f}"
          f"{step.reference_seconds:>12.4f}{step.ratio:>10.3f}  <= {TARGET_STEP_RATIO} {ok}")
    ok = "ok" if sampling.speedup >= TARGET_SAMPLE_SPEEDUP else "MISSED"
    print(f"{'(b) s per image (sample vs dream)':<34}{sampling.per_image_seconds:>12.5f}"
          f"{sampling.dream_seconds:>12.3f}{sampling.speedup:>9.0f}x  >= "
          f"{TARGET_SAMPLE_SPEEDUP:.0f}x {ok}")
    print(f"{'(c) fastgan128 step, s':<34}{fastgan.step_seconds:>12.3f}{'':>12}{'':>10}  "
          f"batch {fastgan.batch}, width {fastgan.width}: {fastgan.images_per_second:.1f} img/s")
    print(f"{'(d) projected64 step, s (vs (a))':<34}{projected.step_seconds:>12.4f}"
          f"{step.ours_seconds:>12.4f}{projected.step_seconds / step.ours_seconds:>10.3f}  "
          f"batch {projected.batch}, width {projected.width} (no target)")
