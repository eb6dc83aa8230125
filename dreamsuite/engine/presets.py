"""Named dream presets: the paper's configurations, and the embedded default, as data, so a
figure can be re-run by name (``dreamsuite dream IN -o OUT --preset paper-inception``).

A preset sets a few :class:`~dreamsuite.engine.config.DreamConfig` fields; the others keep their
defaults, and options given alongside override the preset's. The paper names Inception V3's
layers in Keras numbering (``mixed3``); the registry resolves those aliases to torchvision's
names (``mixed_6a``), so the presets say what the paper says.

The paper names the layers; for the schedule these presets assume the Keras DeepDream
example's, whose layer numbering the paper uses: 3 octaves 1.4 apart, 20 steps each of 0.01 on
gradients divided by their mean absolute value, no jitter. Keras feeds Inception V3
pixels in ``[-1, 1]``, the engine steps pixels in ``[0, 1]``: the same step is 0.005 here. The
plain pixel step (no Laplacian normalisation, no colour decorrelation) is the example's too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dreamsuite.backbones import get_backbone_spec, weights_status
from dreamsuite.defaults import DEFAULT_BACKBONE
from dreamsuite.engine.config import DreamConfig
from dreamsuite.engine.objectives import LayerTerm, Maplist
from dreamsuite.errors import UnknownName, shorten

__all__ = ["Preset", "PRESETS", "get_preset", "preset_weights"]


@dataclass(frozen=True)
class Preset:
    """A named dream: one line for humans and the :class:`DreamConfig` fields it sets."""

    name: str
    description: str
    fields: Mapping[str, Any]

    @property
    def backbone(self) -> str:
        return self.fields.get("backbone", DEFAULT_BACKBONE)

    def config(self, base: DreamConfig = DreamConfig()) -> DreamConfig:
        """``base`` (default: the defaults) with the preset's fields."""
        return dataclasses.replace(base, **self.fields)


def _whole(*layers: str) -> Maplist:
    """Whole layers, weight 1 each (the classic objective)."""
    return Maplist(tuple(LayerTerm(layer) for layer in layers))


#: The paper's schedule, in this engine's units (see the module's docstring).
_KERAS_SCHEDULE = {
    "octaves": 3, "octave_scale": 1.4, "steps": 20, "step_size": 0.005, "jitter": 0,
    "laplacian": 0, "decorrelate": False,
}

PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "paper-inception",
            "the paper's Inception V3 dream: mixed3, mixed5, mixed6, mixed7 (Keras numbering), "
            "Keras DeepDream schedule; needs inception_v3_google-0cc3c7bd.pth",
            {"backbone": "inception_v3", "maplist": _whole("mixed3", "mixed5", "mixed6", "mixed7"),
             **_KERAS_SCHEDULE},
        ),
        Preset(
            "paper-vgg16",
            "the paper's VGG16 backbone at relu4_3, paper-inception's schedule; needs "
            "vgg16-397923af.pth",
            {"backbone": "vgg16", "maplist": _whole("relu4_3"), **_KERAS_SCHEDULE},
        ),
        Preset(
            "lite0-default",
            "the default dream: EfficientNet-Lite0 at block_10, 4 octaves of 10 cleaner steps; "
            "its weights are embedded, so it always runs",
            {"backbone": "efficientnet_lite0"},
        ),
    )
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; :class:`UnknownName` lists the valid ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UnknownName(
            f"unknown preset {shorten(name)!r}; available: {', '.join(PRESETS)}") from None


def preset_weights(preset: Preset) -> str:
    """Whether the preset's pretrained weights are here: ``embedded``, ``file`` or ``missing``
    (a dream with missing weights fails with :class:`~dreamsuite.errors.WeightsMissing`)."""
    return weights_status(get_backbone_spec(preset.backbone))
