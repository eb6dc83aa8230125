"""One GAN training step, and everything a step depends on, as state that can be saved.

:class:`Trainer` holds the two networks, the EMA generator, both optimisers and grad scalers,
the data order and the two random generators (latents and augmentation). Every random number a
step uses comes from that state, so a trainer restored from :meth:`Trainer.state_dict` takes
exactly the steps the original would have taken (on the CPU with deterministic algorithms and
a fixed thread count: bit for bit).

A step: draw the next ``batch`` training images (this rank's shard of a seeded permutation per
epoch) and ``batch`` latents; D step on ``cat(real, G(z).detach())``, DiffAugmented, in one
forward pass (batch-coupled discriminators keep the two parts' statistics apart); G step
through D on the augmented fakes, computing gradients for G only (plus, for kinds that ask for
it, a mode-seeking term on the unaugmented fakes); EMA of G.
Losses: non-saturating (``softplus``, the BCE of DCGAN) or hinge, as the model kind says.
Tensors are channels_last (NHWC convolutions are faster with cuDNN and oneDNN alike); on CUDA,
fp16 autocast with one grad scaler per network; on the CPU, fp32.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from dreamsuite.gan.augment import diff_augment, parse_policy
from dreamsuite.gan.models import ModelKind

__all__ = ["DataOrder", "Trainer", "gather_per_rank", "load_parts", "mode_seeking_loss", "stream_seed",
           "to_model_range"]


def stream_seed(*parts: int) -> int:
    """A 63-bit seed mixed from ``parts`` (job seed, stream, rank, epoch ...): streams with
    different parts are unrelated, and the same parts give the same seed on every machine."""
    value = 0x243F6A8885A308D3
    for part in parts:
        value = (value ^ (part & 0xFFFFFFFFFFFFFFFF)) * 0x100000001B3 & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 29
    return value & 0x7FFFFFFFFFFFFFFF


def gather_per_rank(value: Any, world: int) -> list[Any]:
    """``value`` of every rank, in rank order (collective under DDP: call on every rank)."""
    if world == 1:
        return [value]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, value)
    return gathered


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, 3, S, S]`` -> float in ``[-1, 1]`` (what D sees and G makes)."""
    return images.float().div_(127.5).sub_(1)


@dataclass
class DataOrder:
    """Which training images come next: a permutation of the training set per epoch, seeded
    by ``(seed, epoch)``, read from ``position``. Batches run across epoch boundaries."""

    seed: int
    epoch: int = 0
    position: int = 0

    def take(self, size: int, count: int) -> torch.Tensor:
        """The next ``count`` indices into a set of ``size`` images (advances the order)."""
        out = []
        while count:
            order = self._permutation(size)
            chunk = order[self.position:self.position + count]
            out.append(chunk)
            count -= len(chunk)
            self.position += len(chunk)
            if self.position == size:
                self.epoch, self.position = self.epoch + 1, 0
        return torch.cat(out)

    def _permutation(self, size: int) -> torch.Tensor:
        cached = getattr(self, "_cache", None)
        if cached is None or cached[0] != (self.epoch, size):
            generator = torch.Generator().manual_seed(stream_seed(self.seed, 3, self.epoch))
            self._cache = ((self.epoch, size), torch.randperm(size, generator=generator))
        return self._cache[1]

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]


def load_parts(owner: Any, state: dict[str, Any], names: Sequence[str]) -> None:
    """``owner.NAME.load_state_dict(state[NAME])`` for each name. A grad scaler saved disabled
    (a CPU run's: its state is empty) is not loaded into an enabled one (a CUDA run resuming
    that checkpoint, which the scaler refuses): it starts afresh, as a new run's would."""
    for name in names:
        part = getattr(owner, name)
        if isinstance(part, torch.amp.GradScaler) and not state[name]:
            continue
        part.load_state_dict(state[name])


class Trainer:
    """A GAN being trained on ``images`` (uint8 ``[N, 3, R, R]``); see the module docstring.

    ``batch`` is the global batch: each of ``world`` ranks trains on ``batch // world`` images
    a step. Networks are built from the global torch RNG seeded with ``seed`` (the same on
    every rank)."""

    def __init__(self, kind: ModelKind, images: torch.Tensor, *, width: int | None, batch: int,
                 lr: float, ema_decay: float, augment: str, seed: int, device: torch.device,
                 rank: int = 0, world: int = 1):
        self.kind, self.device, self.rank, self.world = kind, device, rank, world
        self.width = kind.check_width(width)
        self.batch, self.local_batch = batch, batch // world
        self.ema_decay, self.policy, self.seed = ema_decay, parse_policy(augment), seed
        self.cuda = device.type == "cuda"
        # channels_last on both: cuDNN and oneDNN convolutions run faster on NHWC
        self.memory_format = torch.channels_last
        self.images = images.to(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            G, D = kind.build_generator(self.width), kind.build_discriminator(self.width)
        self.G_ema = _ema_copy(G).to(device, memory_format=self.memory_format)
        self.G, self.D = self._place(G), self._place(D)
        self.g_params = [p for p in self.G.parameters() if p.requires_grad]
        fused = {"fused": True} if device.type in ("cpu", "cuda") else {}
        self.opt_G = torch.optim.Adam(self.g_params, lr=lr, betas=kind.betas, **fused)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=lr, betas=kind.betas, **fused)
        self.scaler_G = torch.amp.GradScaler(device.type, enabled=self.cuda)
        self.scaler_D = torch.amp.GradScaler(device.type, enabled=self.cuda)
        self.order = DataOrder(seed)
        self.noise = torch.Generator().manual_seed(stream_seed(seed, 1, rank))
        self.augment_rng = torch.Generator().manual_seed(stream_seed(seed, 2, rank))
        self.step = 0
        self._sums = torch.zeros(3, device=device)
        self._count = 0
        self.G_train = self._wrap(self.G)
        self.D_train = self._wrap(self.D)

    def _place(self, net: nn.Module) -> nn.Module:
        if self.world > 1 and self.cuda:  # SyncBatchNorm needs CUDA; on CPU each rank's own
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        return net.to(self.device, memory_format=self.memory_format)

    def _wrap(self, net: nn.Module) -> nn.Module:
        if self.world == 1:
            return net
        ids = [self.device.index] if self.cuda else None
        return nn.parallel.DistributedDataParallel(net, device_ids=ids, broadcast_buffers=True)

    def _autocast(self):
        if self.cuda:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def train_step(self) -> None:
        """One D step, one G step and the EMA update."""
        indices = self.order.take(len(self.images), self.batch)
        shard = indices[self.rank * self.local_batch:(self.rank + 1) * self.local_batch]
        real = to_model_range(self.images[shard.to(self.device)])
        real = real.contiguous(memory_format=self.memory_format)
        z = torch.randn(len(shard), self.kind.z_dim, generator=self.noise)
        with self._autocast():
            fake = self.G_train(z.to(self.device, non_blocking=True))
        real_logits, d_loss = self._d_step(real, fake.detach())
        g_loss = self._g_step(fake, real)
        self._update_ema()
        self.step += 1
        with torch.no_grad():
            sign = real_logits.detach().float().sign().mean()
            self._sums += torch.stack([d_loss.detach().float(), g_loss.detach().float(), sign])
        self._count += 1

    def _d_step(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = real.shape[0]
        x = diff_augment(torch.cat([real, fake]), self.policy, generator=self.augment_rng)
        with self._autocast():
            logits, aux = self.D_train(x, reconstruct=n, generator=self.augment_rng)
        real_logits, fake_logits = logits[:n].float(), logits[n:].float()
        if self.kind.loss == "hinge":
            loss = F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
        else:
            loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        if aux is not None:
            loss = loss + aux.float()
        self.opt_D.zero_grad(set_to_none=True)
        self.scaler_D.scale(loss).backward()
        self.scaler_D.step(self.opt_D)
        self.scaler_D.update()
        return real_logits, loss

    def _g_step(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """G's adversarial loss (returned, for progress) plus the kind's mode-seeking term."""
        x = diff_augment(fake, self.policy, generator=self.augment_rng)
        with self._autocast():  # D itself, not its DDP wrapper: D's gradients are not needed
            logits, _ = self.D(x)
        logits = logits.float()
        loss = -logits.mean() if self.kind.loss == "hinge" else F.softplus(-logits).mean()
        total = loss
        if self.kind.mode_seeking:
            total = loss + self.kind.mode_seeking * mode_seeking_loss(
                fake.float(), real, self.kind.mode_seeking_floor)
        self.opt_G.zero_grad(set_to_none=True)
        self.scaler_G.scale(total).backward(inputs=self.g_params)  # skips D's weight gradients
        self.scaler_G.step(self.opt_G)
        self.scaler_G.update()
        return loss

    @torch.no_grad()
    def _update_ema(self) -> None:
        """EMA of G's weights with a warm-up (the decay reaches ``ema_decay`` after ~10/(1 -
        decay) steps, so short runs have a useful EMA); buffers (BN statistics) are copied."""
        decay = min(self.ema_decay, (1 + self.step) / (10 + self.step))
        ema = list(self.G_ema.parameters())
        torch._foreach_lerp_(ema, [p.detach() for p in self.G.parameters()], 1 - decay)
        for target, source in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
            target.copy_(source)

    def pop_stats(self) -> dict[str, float]:
        """Mean D loss, G loss and sign of D on real images since the last call (one sync;
        empty when no step was taken since)."""
        if not self._count:
            return {}
        d_loss, g_loss, sign = (self._sums / self._count).tolist()
        self._sums.zero_()
        self._count = 0
        return {"d_loss": d_loss, "g_loss": g_loss, "d_real_sign": sign}

    def state_dict(self) -> dict[str, Any]:
        """Everything the next steps depend on (collective under DDP: call on every rank)."""
        gathered = gather_per_rank([self.noise.get_state(), self.augment_rng.get_state()],
                                   self.world)
        return {
            "step": self.step, "kind": self.kind.name, "width": self.width, "batch": self.batch,
            "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
            "scaler_G": self.scaler_G.state_dict(), "scaler_D": self.scaler_D.state_dict(),
            "data": self.order.state_dict(),
            "rank_rng": {"noise": [g[0] for g in gathered], "augment": [g[1] for g in gathered]},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (from a run with any number of ranks: with another
        number, each rank's generators are reseeded from the seed, rank and step)."""
        self.step = int(state["step"])
        load_parts(self, state, ("G", "D", "G_ema", "opt_G", "opt_D", "scaler_G", "scaler_D"))
        self.order.load_state_dict(state["data"])
        noise, augment = state["rank_rng"]["noise"], state["rank_rng"]["augment"]
        if len(noise) == self.world:
            self.noise.set_state(noise[self.rank])
            self.augment_rng.set_state(augment[self.rank])
        else:
            self.noise.manual_seed(stream_seed(self.seed, 1, self.rank, self.step))
            self.augment_rng.manual_seed(stream_seed(self.seed, 2, self.rank, self.step))


def mode_seeking_loss(fake: torch.Tensor, real: torch.Tensor, floor: float = 0.0) -> torch.Tensor:
    """A mode-seeking term for a batch of samples (after Mao et al., "Mode Seeking Generative
    Adversarial Networks", CVPR 2019): the samples' first half paired with their second, the
    same for the real images; ``r`` is the mean absolute difference of the sample pairs over
    that of the real pairs (the data's own diversity; the latents are independent draws), and
    the term is ``1 / (r + 1e-5)``, unbounded as G maps different latents to one image. With a
    ``floor`` in ``(0, 1]`` it is ``max(0, 1 / (r + 1e-5) - 1 / floor)``, hinged as in
    Yang et al.'s diversity-sensitive GANs: no push once the samples are ``floor`` as diverse
    as the data. 0 for a batch of fewer than 2."""
    half = min(fake.shape[0], real.shape[0]) // 2
    if not half:
        return fake.new_zeros(())
    spread = (fake[:half] - fake[half:2 * half]).abs().mean()
    data = (real[:half] - real[half:2 * half]).abs().mean().clamp_min(1e-8)
    loss = 1 / (spread / data + 1e-5)
    return (loss - 1 / floor).clamp_min(0) if floor else loss


def _ema_copy(generator: nn.Module) -> nn.Module:
    return copy.deepcopy(generator).eval().requires_grad_(False)
