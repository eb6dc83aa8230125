"""Training ``dream2dream`` (:mod:`~dreamsuite.gan.dream2dream`) on (photo, dream) pairs.

The pairs come from dreamed data sets (:mod:`~dreamsuite.gan.data`): item ``i`` of a data set
holds ``source/<i>.png`` (the photo crop) and ``train/<i>.png`` or ``holdout/<i>.png`` (its
dream), both at the data set's size. Each data set is one *condition*: its index in the job's
list of data sets, its name the data set's id, and its dream config (from the manifest) goes
into the checkpoint and the model record. All data sets of a model must have one size.

A step (:class:`PairTrainer`, the same interface as the GAN :class:`~dreamsuite.gan.loop.Trainer`,
so :class:`~dreamsuite.gan.job.Job` drives both): the next ``batch`` pairs of a seeded
permutation of all training pairs of all data sets; from each pair one random ``crop`` x ``crop``
window at the same position in the photo and the dream, flipped left-right with probability 1/2
(both from a seeded generator saved with the checkpoint, so a resumed job takes the very same
steps); the loss is ``PIXEL_WEIGHT * L1 + PERCEPTUAL_WEIGHT * perceptual`` between the unclamped
output and the dream, the perceptual term on EfficientNet-Lite0 (the embedded weights) at the
ends of its stages up to ``block_10`` (:mod:`~dreamsuite.gan.perceptual`, squared form); Adam,
then the EMA of the weights. On CUDA: fp16 autocast, a grad scaler, channels_last.

``loss="pix2pix"`` adds what Isola et al. add to a pixel loss: a conditional patch
discriminator (:class:`PatchDiscriminator`, which sees the photo beside the dream or the output,
and judges ~70 px patches) trained with the least-squares GAN loss, and its adversarial term
(weight :data:`ADVERSARIAL_WEIGHT`) in the network's loss. ``"paired"`` (the default) has no
discriminator. ``loss="objective"`` trains without the pairs, as Johnson et al. train on the
loss an optimisation minimises: the network maximises the log of its output's dream objective
over the photo's (each condition's own dream config, :mod:`~dreamsuite.gan.dream_objective`)
against a perceptual content term toward the photo (weight :data:`CONTENT_WEIGHT`); the
optimised dreams are used only to evaluate (the progress stream's ``pixel_loss`` is still the L1
to them, as a signal; ``perceptual_loss`` is the content term). Which is best is measured, not
assumed: ``dreamsuite bench dream2dream-loss`` trains each on the same data sets, seed and steps
and compares their held-out quality.

Evaluation (:func:`evaluate_pairs`) runs the EMA network once over whole held-out photos and
compares the result with their dreams: mean L1 and the perceptual distance on EfficientNet-Lite2
(a network neither the dreams nor the training used), and the same for the photo itself; the
issue's quality target is ``perceptual_output_dream <= 0.5 * perceptual_photo_dream``
(``perceptual_ratio <= 0.5``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dreamsuite.artifacts import ArtifactStore
from dreamsuite.device import select_device
from dreamsuite.errors import InvalidArgument
from dreamsuite.gan.checkpoint import load_checkpoint
from dreamsuite.gan.data import Manifest, load_split
from dreamsuite.gan.dream2dream import MIN_SIDE, Dream2Dream, one_pass_batch
from dreamsuite.gan.loop import DataOrder, gather_per_rank, load_parts, stream_seed
from dreamsuite.gan.models import ModelKind, get_model_kind
from dreamsuite.images import image_grid

__all__ = [
    "LOSSES",
    "ADVERSARIAL_WEIGHT",
    "PATCH_MIN_SIDE",
    "CONTENT_WEIGHT",
    "PatchDiscriminator",
    "PIXEL_WEIGHT",
    "PERCEPTUAL_WEIGHT",
    "LOSS_UP_TO",
    "MAX_EVAL_PAIRS",
    "PairSet",
    "PairTrainer",
    "conditions_of",
    "default_crop",
    "load_pairs",
    "evaluate_pairs",
    "seed_floor",
    "pair_grid",
    "load_dream2dream",
]

#: Weights of the two loss terms (L1 of [0, 1] pixels is ~10x smaller than the perceptual
#: distance of a photo and its dream: both start about equal).
PIXEL_WEIGHT = 10.0
PERCEPTUAL_WEIGHT = 1.0
#: The perceptual loss uses Lite0's stage ends up to this layer (its default dream layer).
LOSS_UP_TO = "block_10"
#: Evaluation compares at most this many held-out pairs.
MAX_EVAL_PAIRS = 256
_EVAL_CHUNK = 16
#: The training losses of a dream2dream network (see the module docstring).
LOSSES = ("paired", "pix2pix", "objective")
#: pix2pix: weight of the adversarial term in the network's loss. Isola et al. weigh L1 100x
#: the GAN loss on [-1, 1] pixels; with 10 x L1 on [0, 1] pixels and the perceptual term, 0.1
#: keeps the adversarial term about the same share of the whole.
ADVERSARIAL_WEIGHT = 0.1
#: objective: weight of the perceptual content term (to the photo) against -log(gain).
CONTENT_WEIGHT = 1.0
#: Smallest crop the patch discriminator takes (three halvings, then two 4x4 convolutions).
PATCH_MIN_SIDE = 24


class PatchDiscriminator(nn.Module):
    """pix2pix's conditional PatchGAN: ``(photos, images)`` ``[N, 3, H, W]`` each -> a score
    map ``[N, 1, h, w]``, one score per ~70 px patch (three 4x4 stride-2 convolutions, two 4x4
    stride-1: the 70x70 receptive field of Isola et al.). Spectral normalisation instead of
    batch normalisation: no batch statistics, and a Lipschitz-bounded critic on small data."""

    def __init__(self, width: int = 16):
        super().__init__()
        from torch.nn.utils.parametrizations import spectral_norm

        widths = (6, 2 * width, 4 * width, 8 * width, 8 * width)
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(widths, widths[1:], strict=False)):
            stride = 2 if i < 3 else 1
            layers += [spectral_norm(nn.Conv2d(cin, cout, 4, stride, 1)),
                       nn.LeakyReLU(0.2, inplace=True)]
        layers.append(spectral_norm(nn.Conv2d(widths[-1], 1, 4, 1, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, photos: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([photos, images], dim=1))


@dataclass(frozen=True)
class PairSet:
    """Pairs of one split of one or more data sets: ``photos`` and ``dreams`` uint8
    ``[N, 3, S, S]`` (on the CPU) and ``conditions`` long ``[N]`` (the data set's index)."""

    photos: torch.Tensor
    dreams: torch.Tensor
    conditions: torch.Tensor

    def __len__(self) -> int:
        return len(self.photos)

    @property
    def size(self) -> int:
        return int(self.photos.shape[-1]) if len(self) else 0

    def take(self, indices: torch.Tensor | Sequence[int]) -> PairSet:
        index = torch.as_tensor(indices, dtype=torch.long)
        return PairSet(self.photos[index], self.dreams[index], self.conditions[index])


def _uint8(images: torch.Tensor) -> torch.Tensor:
    return images.mul(255).round_().to(torch.uint8)


def conditions_of(manifests: Sequence[Manifest]) -> list[dict[str, Any]]:
    """The conditions of a model trained on ``manifests``: ``{"index", "name", "dataset",
    "size", "dream_config"}`` each, in order (the name is the data set id)."""
    return [{"index": i, "name": m.id, "dataset": m.id, "size": m.size,
             "dream_config": dict(m.dream_config)} for i, m in enumerate(manifests)]


def load_pairs(store: ArtifactStore, manifests: Sequence[Manifest], split: str) -> PairSet:
    """The ``split`` pairs of every data set, condition ``i`` for ``manifests[i]``, at the data
    sets' size (which must be one)."""
    sizes = sorted({m.size for m in manifests})
    if len(sizes) > 1:
        raise InvalidArgument(f"datasets: the data sets of a dream2dream model must have one "
                              f"size, not {', '.join(f'{s} px' for s in sizes)}")
    photos, dreams, conditions = [], [], []
    for index, manifest in enumerate(manifests):
        source = load_split(store, manifest, split, kind="source")
        dream = load_split(store, manifest, split, kind="dream")
        photos.append(_uint8(source))
        dreams.append(_uint8(dream))
        conditions.append(torch.full((len(source),), index, dtype=torch.long))
    size = sizes[0] if sizes else 0
    if not photos:
        empty = torch.empty(0, 3, size, size, dtype=torch.uint8)
        return PairSet(empty, empty.clone(), torch.empty(0, dtype=torch.long))
    return PairSet(torch.cat(photos), torch.cat(dreams), torch.cat(conditions))


def default_crop(size: int) -> int:
    """The training crop for a data set of ``size`` px: half the side (a multiple of 4), at
    least 16 px (or the whole side when smaller)."""
    return min(size, max(16, size // 2 // 4 * 4))


def _perceptual(use: str, device: torch.device) -> nn.Module:
    # Imported here: the backbones (and torchvision) cost seconds to import, and the processes
    # that import this module to start or check a job (the GAN service) never need them.
    from dreamsuite.gan.perceptual import (
        EVAL_BACKBONE,
        LOSS_BACKBONE,
        PerceptualDistance,
    )

    if use == "loss":
        return PerceptualDistance(LOSS_BACKBONE, up_to=LOSS_UP_TO, squared=True, device=device)
    return PerceptualDistance(EVAL_BACKBONE, device=device)


def _style_distances(images: torch.Tensor, targets: torch.Tensor,
                     device: torch.device) -> torch.Tensor:
    """``[N]``: the Gram (texture statistics) distance on the evaluation backbone between each
    image and its target (``[N, 3, H, W]`` in ``[0, 1]``), as ``bench style`` measures it."""
    from dreamsuite.backbones import get_backbone
    from dreamsuite.engine.style import style_distance
    from dreamsuite.gan.perceptual import EVAL_BACKBONE

    backbone = get_backbone(EVAL_BACKBONE, device=device)
    with torch.no_grad():
        return torch.tensor([style_distance(backbone, a, b) for a, b in zip(images, targets,
                                                                            strict=True)])


def _to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255)


class PairTrainer:
    """A ``dream2dream`` network being trained on ``train`` pairs (see the module docstring).

    ``batch`` is the global batch: each of ``world`` ranks trains on ``batch // world`` pairs a
    step. The network is built from the global torch RNG seeded with ``seed``."""

    paired = True

    def __init__(self, kind: ModelKind, train: PairSet, conditions: Sequence[dict[str, Any]], *,
                 width: int | None, batch: int, lr: float, ema_decay: float, crop: int,
                 seed: int, device: torch.device, holdout: PairSet | None = None,
                 rank: int = 0, world: int = 1, loss: str = "paired"):
        if not len(train):
            raise InvalidArgument("datasets: no training pairs")
        if loss not in LOSSES:
            raise InvalidArgument(f"loss: {loss!r} is not one of {', '.join(LOSSES)}")
        self.loss = loss
        self.kind, self.device, self.rank, self.world = kind, device, rank, world
        self.width = kind.check_width(width)
        self.conditions = [dict(c) for c in conditions]
        self.train, self.holdout = train, holdout
        self.resolution = train.size
        self.crop = crop or default_crop(train.size)
        if not MIN_SIDE <= self.crop <= train.size:
            raise InvalidArgument(f"crop: must be between {MIN_SIDE} and the data sets' size "
                                  f"({train.size} px), not {self.crop}")
        self.batch, self.local_batch = batch, batch // world
        self.ema_decay, self.seed = ema_decay, seed
        self.cuda = device.type == "cuda"
        self.memory_format = torch.channels_last
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            G = kind.build_generator(self.width, conditions=len(self.conditions))
        self.G_ema = copy.deepcopy(G).eval().requires_grad_(False).to(
            device, memory_format=self.memory_format)
        self.G = G.to(device, memory_format=self.memory_format)
        fused = {"fused": True} if device.type in ("cpu", "cuda") else {}
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=lr, betas=kind.betas, **fused)
        self.scaler_G = torch.amp.GradScaler(device.type, enabled=self.cuda)
        self.order = DataOrder(seed)
        self.crop_rng = torch.Generator().manual_seed(stream_seed(seed, 2, rank))
        self.step = 0
        self._sums = torch.zeros(3, device=device)
        self._count = 0
        self.G_train: nn.Module = self.G
        if world > 1:
            ids = [device.index] if self.cuda else None
            self.G_train = nn.parallel.DistributedDataParallel(self.G, device_ids=ids)
        self.loss_net = _perceptual("loss", device)
        self.D: nn.Module | None = None
        if loss == "pix2pix":
            if self.crop < PATCH_MIN_SIDE:
                raise InvalidArgument(f"crop: pix2pix's patch discriminator needs crops of at "
                                      f"least {PATCH_MIN_SIDE} px, not {self.crop}")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(stream_seed(seed, 3))
                D = PatchDiscriminator(self.width)
            self.D = D.to(device, memory_format=self.memory_format)
            self.opt_D = torch.optim.Adam(self.D.parameters(), lr=lr, betas=(0.5, 0.999),
                                          **fused)
            self.scaler_D = torch.amp.GradScaler(device.type, enabled=self.cuda)
            self.D_train: nn.Module = self.D
            if world > 1:
                ids = [device.index] if self.cuda else None
                self.D_train = nn.parallel.DistributedDataParallel(self.D, device_ids=ids)
        self.objective_gain: nn.Module | None = None
        if loss == "objective":
            from dreamsuite.gan.dream_objective import DreamObjectiveGain

            self.objective_gain = DreamObjectiveGain(
                [c.get("dream_config") or {} for c in self.conditions], device)
        # Sums of: loss, pixel, perceptual, D's loss, mean sign of D on real pairs.
        self._sums = torch.zeros(5, device=device)

    def _autocast(self):
        if self.cuda:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def _crops(self, pairs: PairSet) -> tuple[torch.Tensor, torch.Tensor]:
        """One random window (same place in photo and dream) per pair, randomly flipped."""
        n, size, c = len(pairs), pairs.size, self.crop
        corners = torch.randint(0, size - c + 1, (n, 2), generator=self.crop_rng)
        flips = torch.rand(n, generator=self.crop_rng) < 0.5
        photos, dreams = [], []
        for i in range(n):
            top, left = int(corners[i, 0]), int(corners[i, 1])
            p = pairs.photos[i, :, top:top + c, left:left + c]
            d = pairs.dreams[i, :, top:top + c, left:left + c]
            if flips[i]:
                p, d = p.flip(-1), d.flip(-1)
            photos.append(p)
            dreams.append(d)
        return torch.stack(photos), torch.stack(dreams)

    def losses(self, photos: torch.Tensor, dreams: torch.Tensor, conditions: torch.Tensor,
               net: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(total, pixel, perceptual)`` of ``net`` (default: the trained one) on float
        photos and dreams ``[N, 3, c, c]`` in ``[0, 1]`` on the device (the paired terms;
        pix2pix's adversarial term is added in :meth:`train_step`)."""
        total, pixel, perceptual, _ = self._losses(photos, dreams, conditions, net)
        return total, pixel, perceptual

    def _losses(self, photos: torch.Tensor, dreams: torch.Tensor, conditions: torch.Tensor,
                net: nn.Module | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        with self._autocast():
            out = (net or self.G_train)(photos, conditions, clamp=False)
            perceptual = self.loss_net(out, dreams).float().mean()
        pixel = (out.float() - dreams).abs().mean()
        return PIXEL_WEIGHT * pixel + PERCEPTUAL_WEIGHT * perceptual, pixel, perceptual, out

    def train_step(self) -> None:
        """One optimiser step on the next batch, then the EMA update."""
        indices = self.order.take(len(self.train), self.batch)
        shard = indices[self.rank * self.local_batch:(self.rank + 1) * self.local_batch]
        pairs = self.train.take(shard)
        photos, dreams = self._crops(pairs)
        photos = _to_float(photos.to(self.device, non_blocking=True)).contiguous(
            memory_format=self.memory_format)
        dreams = _to_float(dreams.to(self.device, non_blocking=True)).contiguous(
            memory_format=self.memory_format)
        conditions = pairs.conditions.to(self.device)
        self.G.train()
        if self.objective_gain is not None:
            loss, pixel, perceptual, out = self._objective_losses(photos, dreams, conditions)
        else:
            loss, pixel, perceptual, out = self._losses(photos, dreams, conditions)
        d_loss = real_sign = torch.zeros((), device=self.device)
        if self.D is not None:
            d_loss, real_sign = self._discriminator_step(photos, dreams, out.detach())
            # The unwrapped D: no gradient of D here, so nothing for DDP to reduce.
            self.D.requires_grad_(False)
            with self._autocast():
                fake = self.D(photos, out.clamp(0, 1)).float()
            loss = loss + ADVERSARIAL_WEIGHT * (fake - 1).square().mean()
        self.opt_G.zero_grad(set_to_none=True)
        self.scaler_G.scale(loss).backward()
        self.scaler_G.step(self.opt_G)
        self.scaler_G.update()
        self._update_ema()
        self.step += 1
        with torch.no_grad():
            self._sums += torch.stack([loss.detach(), pixel.detach(), perceptual.detach(),
                                       d_loss, real_sign])
        self._count += 1

    def _objective_losses(self, photos: torch.Tensor, dreams: torch.Tensor,
                          conditions: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Johnson et al.'s loss for a dream: ``-log(gain) + CONTENT_WEIGHT * perceptual(out,
        photo)``; the dreams give only the reported L1."""
        assert self.objective_gain is not None
        with self._autocast():
            out = self.G_train(photos, conditions, clamp=False)
            content = self.loss_net(out, photos).float().mean()
            gain = self.objective_gain(photos, out.clamp(0, 1), conditions)
        loss = -gain.float().clamp_min(1e-6).log().mean() + CONTENT_WEIGHT * content
        pixel = (out.detach().float() - dreams).abs().mean()
        return loss, pixel, content, out

    def _discriminator_step(self, photos: torch.Tensor, dreams: torch.Tensor,
                            outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One least-squares step of D: real pairs toward 1, the network's toward 0 (its
        output clamped, as served). Returns D's loss and the mean sign of ``D(real) - 1/2``."""
        assert self.D is not None
        self.D.requires_grad_(True)
        with self._autocast():
            real = self.D_train(photos, dreams).float()
            fake = self.D_train(photos, outputs.clamp(0, 1)).float()
        d_loss = (real - 1).square().mean() + fake.square().mean()
        self.opt_D.zero_grad(set_to_none=True)
        self.scaler_D.scale(d_loss).backward()
        self.scaler_D.step(self.opt_D)
        self.scaler_D.update()
        return d_loss.detach(), (real.detach() - 0.5).sign().mean()

    @torch.no_grad()
    def _update_ema(self) -> None:
        """EMA of the weights with the GAN trainer's warm-up."""
        decay = min(self.ema_decay, (1 + self.step) / (10 + self.step))
        ema = list(self.G_ema.parameters())
        torch._foreach_lerp_(ema, [p.detach() for p in self.G.parameters()], 1 - decay)

    def pop_stats(self) -> dict[str, float]:
        """Mean losses since the last call, in the GAN trainer's progress fields: ``g_loss``
        is the network's total loss; ``d_loss`` and ``d_real_sign`` the patch
        discriminator's (pix2pix; 0 without one); plus ``pixel_loss`` and
        ``perceptual_loss``."""
        if not self._count:
            return {}
        total, pixel, perceptual, d_loss, real_sign = (self._sums / self._count).tolist()
        self._sums.zero_()
        self._count = 0
        return {"d_loss": d_loss, "g_loss": total, "d_real_sign": real_sign,
                "pixel_loss": pixel, "perceptual_loss": perceptual}

    # --- previews and evaluation (rank 0) --------------------------------------------------

    def _shown(self, count: int) -> PairSet:
        """Up to ``count`` pairs for previews: held-out ones when there are any, conditions
        taking turns."""
        pairs = self.holdout if self.holdout is not None and len(self.holdout) else self.train
        by_condition = [torch.nonzero(pairs.conditions == c).flatten().tolist()
                        for c in range(len(self.conditions))]
        chosen: list[int] = []
        for rank in range(max(map(len, by_condition), default=0)):
            chosen += [ids[rank] for ids in by_condition if rank < len(ids)]
        return pairs.take(chosen[:count])

    def preview_grid(self, count: int) -> torch.Tensor:
        """``[3, H, W]``: one row per pair (at most ``min(count, 8)``): photo | its dream |
        the EMA network's one-pass dream."""
        pairs = self._shown(min(count, 8))
        if not len(pairs):
            return torch.ones(3, 8, 8)
        outputs = one_pass_batch(self.G_ema, _to_float(pairs.photos), pairs.conditions)
        tiles = torch.stack([_to_float(pairs.photos), _to_float(pairs.dreams), outputs], dim=1)
        return image_grid(tiles.flatten(0, 1), columns=3)

    def evaluation_metrics(self) -> dict[str, float]:
        """:func:`evaluate_pairs` of the EMA network on the held-out pairs (the training
        pairs when no data set holds any out: ``holdout`` is then 0)."""
        held = self.holdout is not None and len(self.holdout) > 0
        pairs = self.holdout if held else self.train
        metrics = evaluate_pairs(self.G_ema, pairs, device=self.device,
                                 conditions=len(self.conditions))
        metrics["holdout"] = float(held)
        return metrics

    # --- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything the next steps depend on (collective under DDP: call on every rank)."""
        gathered = gather_per_rank(self.crop_rng.get_state(), self.world)
        state = {
            "step": self.step, "kind": self.kind.name, "width": self.width, "batch": self.batch,
            "crop": self.crop, "loss": self.loss, "conditions": [dict(c) for c in self.conditions],
            "G": self.G.state_dict(), "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(), "scaler_G": self.scaler_G.state_dict(),
            "data": self.order.state_dict(), "rank_rng": {"crop": gathered},
        }
        if self.D is not None:
            state.update(D=self.D.state_dict(), opt_D=self.opt_D.state_dict(),
                         scaler_D=self.scaler_D.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (from a run with any number of ranks: with another
        number, each rank's crop generator is reseeded from the seed, rank and step)."""
        self.step = int(state["step"])
        names = ("G", "G_ema", "opt_G", "scaler_G")
        if self.D is not None:
            names += ("D", "opt_D", "scaler_D")
        load_parts(self, state, names)
        self.order.load_state_dict(state["data"])
        crops = state["rank_rng"]["crop"]
        if len(crops) == self.world:
            self.crop_rng.set_state(crops[self.rank])
        else:
            self.crop_rng.manual_seed(stream_seed(self.seed, 2, self.rank, self.step))


def pair_grid(photos: torch.Tensor, dreams: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """Rows of photo | dream | one-pass output (each ``[N, 3, H, W]`` in ``[0, 1]``)."""
    return image_grid(torch.stack([photos, dreams, outputs], dim=1).flatten(0, 1), columns=3)


@torch.no_grad()
def evaluate_pairs(model: Dream2Dream, pairs: PairSet, *,
                   device: str | torch.device | None = None,
                   conditions: int | None = None) -> dict[str, float]:
    """Quality of ``model`` (eval mode) on whole ``pairs`` (at most :data:`MAX_EVAL_PAIRS`):

    - ``l1_output_dream`` / ``l1_photo_dream``: mean absolute pixel difference (``[0, 1]``
      pixels) of the one-pass output and of the photo from the optimised dream;
    - ``perceptual_output_dream`` / ``perceptual_photo_dream``: the same in the Lite2
      perceptual distance (:class:`~dreamsuite.gan.perceptual.PerceptualDistance`);
    - ``style_output_dream`` / ``style_photo_dream``: the Gram (texture statistics) distance on
      the same network, which does not ask for the stored dream's patterns in their places,
      only for its kind of texture: another seed's dream of the photo is close in it (see
      :func:`seed_floor`), so it shows whether a network dreams at all;
    - ``perceptual_ratio``, ``l1_ratio`` and ``style_ratio``: output over photo (the issue's
      target: ``perceptual_ratio <= 0.5``);
    - with several conditions, ``perceptual_ratio/<index>`` per condition;
    - ``pairs``: how many pairs were compared.
    """
    if not len(pairs):
        raise InvalidArgument("no pairs to evaluate")
    pairs = pairs.take(range(min(len(pairs), MAX_EVAL_PAIRS)))
    distance = _perceptual("eval", select_device(device))
    sums: dict[str, torch.Tensor] = {}
    for start in range(0, len(pairs), _EVAL_CHUNK):
        chunk = pairs.take(range(start, min(start + _EVAL_CHUNK, len(pairs))))
        photos, dreams = _to_float(chunk.photos), _to_float(chunk.dreams)
        outputs = one_pass_batch(model, photos, chunk.conditions)
        values = {
            "l1_output_dream": (outputs - dreams).abs().mean(dim=(1, 2, 3)),
            "l1_photo_dream": (photos - dreams).abs().mean(dim=(1, 2, 3)),
            "perceptual_output_dream": distance(outputs, dreams).float().cpu(),
            "perceptual_photo_dream": distance(photos, dreams).float().cpu(),
            "style_output_dream": _style_distances(outputs, dreams, distance.device),
            "style_photo_dream": _style_distances(photos, dreams, distance.device),
        }
        for name, value in values.items():
            sums[name] = torch.cat([sums[name], value]) if name in sums else value
    out = {name: float(value.double().mean()) for name, value in sums.items()}
    out["perceptual_ratio"] = _ratio(out["perceptual_output_dream"], out["perceptual_photo_dream"])
    out["l1_ratio"] = _ratio(out["l1_output_dream"], out["l1_photo_dream"])
    out["style_ratio"] = _ratio(out["style_output_dream"], out["style_photo_dream"])
    count = conditions if conditions is not None else int(pairs.conditions.max()) + 1
    if count > 1:
        for c in range(count):
            mask = pairs.conditions == c
            if mask.any():
                out[f"perceptual_ratio/{c}"] = _ratio(
                    float(sums["perceptual_output_dream"][mask].double().mean()),
                    float(sums["perceptual_photo_dream"][mask].double().mean()))
    out["pairs"] = float(len(pairs))
    return out


def seed_floor(pairs: PairSet, dream_configs: Sequence[Mapping[str, Any]], *, count: int = 16,
               seed_offset: int = 1, device: str | torch.device | None = None,
               progress: Callable[[int, int], None] | None = None) -> dict[str, float]:
    """How close the optimisation itself comes to its own dreams, scored as
    :func:`evaluate_pairs` scores a one-pass network: up to ``count`` of ``pairs`` (evenly
    spread) are dreamed again from their photos with their condition's dream config
    (``dream_configs[c]``, the manifests' ``dream_config``) and seed + ``seed_offset``, stored
    as the data sets store dreams (8-bit), and compared with the pairs' dreams:
    ``perceptual_ratio``, ``l1_ratio`` and ``style_ratio`` (distance to the dream over the
    photo's), ``pairs``.

    A dream depends on its seed as well as its photo (the seed draws the jitter), so a network
    that sees only the photo cannot be expected to come much closer than this. Guide images
    are not in a manifest: a guided data set is re-dreamed without them. ``progress(done,
    total)`` after each dream."""
    from dreamsuite.engine import DreamConfig, dream  # the engine only when measured

    if not len(pairs) or count < 1:
        raise InvalidArgument("no pairs to dream again")
    known = {field.name for field in dataclasses.fields(DreamConfig)}
    try:
        if any(not set(c) & known for c in dream_configs):
            raise ValueError("a data set has no dream config")
        configs = [DreamConfig.from_dict(c) for c in dream_configs]
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"the data sets' dream configs cannot be dreamed again ({exc})"
                              ) from None
    step = max(1, len(pairs) // count)
    chosen = pairs.take(range(0, len(pairs), step)[:count])
    photos, dreams = _to_float(chosen.photos), _to_float(chosen.dreams)
    again = []
    for i in range(len(chosen)):
        config = configs[int(chosen.conditions[i])]
        config = dataclasses.replace(config, seed=config.seed + seed_offset)
        again.append(_uint8(dream(photos[i], config, device=device).image.clamp(0, 1).cpu()))
        if progress is not None:
            progress(i + 1, len(chosen))
    redreamed = _to_float(torch.stack(again))
    distance = _perceptual("eval", select_device(device))
    with torch.no_grad():
        to_dream = distance(redreamed, dreams).double().mean()
        photo_to_dream = distance(photos, dreams).double().mean()
    style = [_style_distances(x, dreams, distance.device).double().mean()
             for x in (redreamed, photos)]
    return {"perceptual_ratio": _ratio(float(to_dream), float(photo_to_dream)),
            "style_ratio": _ratio(float(style[0]), float(style[1])),
            "l1_ratio": _ratio(float((redreamed - dreams).abs().mean()),
                               float((photos - dreams).abs().mean())),
            "pairs": float(len(chosen)), "seed_offset": float(seed_offset)}


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def load_dream2dream(store: ArtifactStore, checkpoint_key: str,
                     device: str | torch.device | None = None
                     ) -> tuple[Dream2Dream, dict[str, Any]]:
    """The EMA network of a dream2dream checkpoint (a checkpoint key or a ``latest`` pointer),
    in eval mode on ``device``, and the checkpoint's ``{"width", "step", "conditions", ...}``
    (everything but the tensors)."""
    state = load_checkpoint(store, checkpoint_key)
    kind = get_model_kind(state.get("kind"))
    if not kind.paired:
        raise InvalidArgument(f"{checkpoint_key} is a {kind.name} checkpoint, not dream2dream")
    with torch.random.fork_rng(devices=[]):
        model = kind.build_generator(state["width"], conditions=len(state["conditions"]))
    model.load_state_dict(state["G_ema"])
    model = model.to(select_device(device), memory_format=torch.channels_last)
    info = {k: v for k, v in state.items()
            if k in ("kind", "width", "step", "conditions", "crop", "batch", "loss",
                     "config")}
    return model.eval().requires_grad_(False), info
