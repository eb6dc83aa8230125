"""Provenance: what a stored dream records about how it was made, so it can be re-run.

The provenance is a JSON object in a PNG text chunk (:data:`PROVENANCE_KEY`): the full config
(maplist with resolved guide weights, cleaning options, octave weights), the library version,
digests of the input, guides and guide masks, the device and, where known, where the input,
guides and guide masks came from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

import dreamsuite
from dreamsuite.engine.config import DreamConfig
from dreamsuite.engine.objectives import Maplist
from dreamsuite.errors import InvalidArgument
from dreamsuite.images import ImageSource, read_png_text

__all__ = ["PROVENANCE_KEY", "Recorded", "sha256_of", "make_provenance", "provenance_text",
           "read_provenance"]

#: PNG text chunk that holds a dream's provenance (JSON).
PROVENANCE_KEY = "dreamsuite:provenance"


def sha256_of(image: torch.Tensor) -> str:
    """Digest of an image's 8-bit pixels, to record which input a dream came from."""
    data = image.detach().clamp(0, 1).mul(255).round().byte().cpu().numpy().tobytes()
    return hashlib.sha256(repr(tuple(image.shape)).encode() + data).hexdigest()


def make_provenance(config: DreamConfig, maplist: Maplist, image: torch.Tensor,
                    guides: Sequence[torch.Tensor], device: torch.device,
                    out: torch.Tensor, *,
                    guide_masks: Sequence[torch.Tensor | None] = ()) -> dict:
    """The provenance of a dream of ``image`` (``[3, H, W]``) into ``out``; with guide masks,
    their digests (None for a guide without one) under ``guide_masks_sha256``."""
    recorded = dataclasses.replace(config, maplist=maplist)
    masks = {}
    if any(m is not None for m in guide_masks):
        masks["guide_masks_sha256"] = [None if m is None else _mask_sha256(m)
                                       for m in guide_masks]
    return {
        "dreamsuite": dreamsuite.__version__,
        "config": recorded.to_dict(),
        "guided": bool(guides),
        "input_sha256": sha256_of(image),
        "guides_sha256": [sha256_of(g) for g in guides],
        "device": str(device),
        "size": list(out.shape[-2:]),
        **masks,
    }


def _mask_sha256(mask: torch.Tensor) -> str:
    m = mask.detach().float()
    return sha256_of(m if m.dim() == 3 else m.reshape(1, *m.shape[-2:]))


def provenance_text(provenance: dict) -> dict[str, str]:
    """PNG text chunks for a result: the provenance as JSON under :data:`PROVENANCE_KEY`."""
    return {PROVENANCE_KEY: json.dumps(provenance, sort_keys=True)}


@dataclass(frozen=True)
class Recorded:
    """What a stored dream recorded: its config (as a dict), input, guides and guide masks
    (paths or URIs; None for a guide without a mask)."""

    config: dict
    input: str | None = None
    guides: list[str] = field(default_factory=list)
    guide_masks: list[str | None] = field(default_factory=list)


def read_provenance(source: ImageSource, name: str = "the PNG") -> Recorded:
    """The recorded config, input and guides of a dream PNG (file or bytes)."""
    text = read_png_text(source).get(PROVENANCE_KEY)
    if text is None:
        raise InvalidArgument(f"{name} carries no dreamsuite provenance")
    try:
        provenance = json.loads(text)
        config = provenance["config"]
        if not isinstance(config, dict):
            raise TypeError("config is not an object")
        guides = provenance.get("guides", [])
        if not isinstance(guides, list):
            raise TypeError("guides is not a list")
        masks = provenance.get("guide_masks", [])
        if not isinstance(masks, list):
            raise TypeError("guide_masks is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(f"{name} has a damaged dreamsuite provenance ({exc})") from None
    recorded_input = provenance.get("input")
    return Recorded(config, recorded_input if isinstance(recorded_input, str) else None,
                    [str(g) for g in guides], [None if m is None else str(m) for m in masks])
