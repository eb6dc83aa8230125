"""Sampling a trained generator: image i depends on its seed alone.

The latent of each image comes from a CPU :class:`torch.Generator` seeded with that image's seed,
and the generator (the EMA copy, in eval mode: no batch statistics) maps each latent on its own,
so an image is the same whether it is sampled alone or in a batch, on any batch size.

Truncation trick: components of ``z`` with ``|z| > truncation`` are redrawn from the same
per-seed generator until none is left, so ``z`` follows a normal distribution truncated to
``[-truncation, truncation]``; ``truncation=inf`` leaves ``z`` untouched. Lower truncation
trades variety for fidelity.

>>> G, kind = load_generator(store, "jobs/j1/checkpoints/latest", "cpu")
>>> images = sample(G, range(16), truncation=0.8)        # [16, 3, R, R] in [0, 1]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from dreamsuite.artifacts import ArtifactStore
from dreamsuite.device import select_device
from dreamsuite.errors import InvalidArgument, shorten
from dreamsuite.gan.checkpoint import load_checkpoint
from dreamsuite.gan.models import ModelKind, get_model_kind

__all__ = ["MIN_TRUNCATION", "MAX_SAMPLES", "check_truncation", "check_seeds", "latents",
           "load_generator", "sample"]

#: Smallest truncation accepted: below it, redrawing would take hundreds of rounds per image.
MIN_TRUNCATION = 0.05
#: Most images one call may ask for.
MAX_SAMPLES = 100_000
_SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts


def check_truncation(truncation: float) -> float:
    """``truncation`` as a float if it is a number >= :data:`MIN_TRUNCATION` (``inf``: none);
    :class:`InvalidArgument` for zero, negative, NaN or non-numbers."""
    try:
        value = float(truncation)
    except (TypeError, ValueError):
        raise InvalidArgument(f"truncation must be a number, not {shorten(truncation)!r}") from None
    if math.isnan(value) or value < MIN_TRUNCATION:
        raise InvalidArgument(f"truncation must be at least {MIN_TRUNCATION} (inf for none), "
                              f"not {value}")
    return value


def check_seeds(seeds: Iterable[int]) -> list[int]:
    """``seeds`` as a list of ints in the range a torch generator accepts."""
    out = []
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not (
                _SEED_RANGE[0] <= seed <= _SEED_RANGE[1]):
            raise InvalidArgument(f"seeds must be whole numbers in [{_SEED_RANGE[0]}, "
                                  f"{_SEED_RANGE[1]}], not {shorten(seed)!r}")
        out.append(seed)
        if len(out) > MAX_SAMPLES:
            raise InvalidArgument(f"at most {MAX_SAMPLES} images per call")
    return out


def latents(seeds: Sequence[int], z_dim: int, truncation: float = math.inf) -> torch.Tensor:
    """``[N, z_dim]``: row i drawn from a CPU generator seeded with ``seeds[i]``, components
    beyond ``truncation`` redrawn from the same generator (deterministic)."""
    truncation = check_truncation(truncation)
    out = torch.empty(len(seeds), z_dim)
    for i, seed in enumerate(seeds):
        generator = torch.Generator().manual_seed(seed)
        z = torch.randn(z_dim, generator=generator)
        if truncation != math.inf:
            outside = z.abs() > truncation
            while outside.any():
                z[outside] = torch.randn(int(outside.sum()), generator=generator)
                outside = z.abs() > truncation
        out[i] = z
    return out


def load_generator(store: ArtifactStore, checkpoint_key: str,
                   device: str | torch.device | None = None) -> tuple[nn.Module, ModelKind]:
    """The EMA generator of a checkpoint (a checkpoint key or a ``latest`` pointer key), in
    eval mode on ``device`` (default: CUDA when present), and its model kind."""
    state = load_checkpoint(store, checkpoint_key)
    kind = get_model_kind(state["kind"])
    if kind.paired:
        raise InvalidArgument(f"a {kind.name} model maps photos to their dreams: it has no latents "
                              "to sample; export it (`dreamsuite gan export MODEL`) and send it "
                              "photos")
    with torch.random.fork_rng(devices=[]):  # the random init is replaced: keep the caller's RNG
        generator = kind.build_generator(state["width"])
    generator.load_state_dict(state["G_ema"])
    generator = generator.to(select_device(device), memory_format=torch.channels_last)
    return generator.eval().requires_grad_(False), kind


@torch.no_grad()
def sample(generator: nn.Module, seeds: Iterable[int], *, truncation: float = 1.0,
           device: str | torch.device | None = None, batch: int = 64) -> torch.Tensor:
    """Images for ``seeds`` from ``generator`` (in eval mode) as ``[N, 3, R, R]`` float in
    ``[0, 1]`` on the CPU, ``batch`` at a time on ``device`` (default: the generator's)."""
    seeds = check_seeds(seeds)
    if batch < 1:
        raise InvalidArgument(f"batch must be at least 1, not {batch}")
    if generator.training:
        raise InvalidArgument("sample() needs the generator in eval mode (no batch statistics)")
    z = latents(seeds, generator.z_dim, truncation)
    target = torch.device(device) if device is not None else next(generator.parameters()).device
    chunks = []
    for start in range(0, len(seeds), batch):
        images = generator(z[start:start + batch].to(target))
        chunks.append(images.float().add_(1).div_(2).clamp_(0, 1).cpu())
    if not chunks:
        size = _resolution(generator)
        return torch.empty(0, 3, size, size)
    return torch.cat(chunks)


def _resolution(generator: nn.Module) -> int:
    with torch.no_grad():
        probe = generator(torch.zeros(1, generator.z_dim, device=next(generator.parameters()).device))
    return probe.shape[-1]
