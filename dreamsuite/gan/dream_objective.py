"""The dream objective as a training loss: dream2dream without pairs (Johnson et al.).

Johnson et al. train a feed-forward network on the loss an optimisation would minimise, so one
forward pass replaces the optimisation. For a dream, that loss is the dream's own objective:
:class:`DreamObjectiveGain` evaluates, for each image of a batch, the objective of its
condition's dream config (the engine's :func:`~dreamsuite.engine.objectives.from_maplist` on the
config's backbone, weights and maplist, exactly what the dream maximises) on the network's output,
divided by the same objective on the photo: the *gain* of the dream, 1 for the photo itself, and
comparable across conditions and layers. The trainer (``loss="objective"`` in
:class:`~dreamsuite.gan.paired.PairTrainer`) maximises ``log(gain)`` against a perceptual
content term that keeps the output near the photo; the optimised dreams of the data set are
never used for the loss (only to evaluate).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from dreamsuite.backbones import get_backbone
from dreamsuite.engine.config import DreamConfig, check_config
from dreamsuite.engine.objectives import Objective, from_maplist
from dreamsuite.errors import DreamsuiteError, InvalidArgument

__all__ = ["DreamObjectiveGain"]

_EPS = 1e-8


class _Condition:
    def __init__(self, dream_config: Mapping[str, Any], device: torch.device):
        fields = {f.name for f in dataclasses.fields(DreamConfig)}
        unknown = sorted(set(dream_config) - fields)
        if not dream_config or unknown:
            raise InvalidArgument(f"not a dream config (unknown fields: "
                                  f"{', '.join(unknown) or 'none; it is empty'})")
        checked = check_config(DreamConfig.from_dict(dream_config))
        self.objective: Objective = from_maplist(checked.maplist)
        self.backbone = get_backbone(checked.config.backbone, weights=checked.config.weights,
                                     device=device)
        self.extractor = self.backbone.extractor(sorted(self.objective.layers))

    def values(self, images: torch.Tensor) -> torch.Tensor:
        """The objective of each image alone: ``[N]``."""
        acts = self.extractor(self.backbone.prepare(images))
        return torch.stack([self.objective({k: v[i:i + 1] for k, v in acts.items()})
                            for i in range(len(images))])


class DreamObjectiveGain(nn.Module):
    """``forward(photos, outputs, conditions)`` -> ``[N]``: objective(output) / objective(photo)
    per image, with each image's condition's dream config (``dream_configs[c]``, the data
    sets' manifest configs). Differentiable in ``outputs``; the backbones are frozen."""

    def __init__(self, dream_configs: Sequence[Mapping[str, Any]],
                 device: str | torch.device = "cpu"):
        super().__init__()
        self.conditions = []
        for index, config in enumerate(dream_configs):
            try:
                self.conditions.append(_Condition(config, torch.device(device)))
            except (DreamsuiteError, TypeError, KeyError, ValueError) as exc:
                raise InvalidArgument(f"loss: the objective loss needs each data set's dream "
                                      f"config; condition {index}'s is not usable: {exc}") from None

    def forward(self, photos: torch.Tensor, outputs: torch.Tensor,
                conditions: torch.Tensor) -> torch.Tensor:
        gains = torch.empty(len(outputs), device=outputs.device)
        for c in conditions.unique().tolist():
            mask = conditions == c
            condition = self.conditions[int(c)]
            with torch.no_grad():
                base = condition.values(photos[mask]).float().abs().clamp_min(_EPS)
            gains[mask] = condition.values(outputs[mask]).float() / base
        return gains
