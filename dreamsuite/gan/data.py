"""Dreamed data sets in the artifact store: the manifest and the images.

A data set lives under ``datasets/<id>/``: ``source/<index:05d>.png`` (the source crop),
``train/<index:05d>.png`` or ``holdout/<index:05d>.png`` (its dream) and ``manifest.json``,
written last, so that its presence means the data set is complete. The split is by source
photo, never by crop, so no holdout image shares a photo with a training image.

>>> manifest = read_manifest(store, "d1")
>>> train = load_split(store, manifest, "train")           # [N, 3, S, S] in [0, 1]
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from dreamsuite.artifacts import ArtifactStore
from dreamsuite.errors import InvalidArgument, NotFound, shorten
from dreamsuite.images import encode_png, load_image, resize

__all__ = [
    "DATASETS_PREFIX",
    "MANIFEST_VERSION",
    "SPLITS",
    "DatasetItem",
    "Manifest",
    "dataset_prefix",
    "manifest_key",
    "read_manifest",
    "write_manifest",
    "load_images",
    "load_split",
    "write_dataset",
]

DATASETS_PREFIX = "datasets/"
MANIFEST_VERSION = 1
SPLITS = ("train", "holdout")
_KINDS = ("dream", "source")


def dataset_prefix(dataset_id: str) -> str:
    """``datasets/<id>/``; :class:`InvalidArgument` for an id that is not one path part."""
    if not dataset_id or "/" in dataset_id or dataset_id in (".", "..") or any(
            ord(c) < 33 or ord(c) == 127 for c in dataset_id):
        raise InvalidArgument(f"data set id {shorten(dataset_id)!r} must be one non-empty path "
                              "part without '/', spaces or control characters")
    return f"{DATASETS_PREFIX}{dataset_id}/"


def manifest_key(dataset_id: str) -> str:
    """``datasets/<id>/manifest.json``."""
    return dataset_prefix(dataset_id) + "manifest.json"


@dataclass(frozen=True)
class DatasetItem:
    """One image pair: its index, split, source photo name and the two keys."""

    index: int
    split: str
    photo: str
    source: str
    dream: str


@dataclass(frozen=True)
class Manifest:
    """What a data set holds and how it was made (``manifest.json``)."""

    id: str
    version: int
    size: int
    created: str
    dream_config: dict[str, Any]
    source: dict[str, str]
    engine_digest: str
    holdout_fraction: float
    items: list[DatasetItem]
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Images per split: ``{"train": n, "holdout": m}``."""
        counts = dict.fromkeys(SPLITS, 0)
        for item in self.items:
            counts[item.split] += 1
        return counts

    def split(self, name: str) -> list[DatasetItem]:
        """The items of split ``name`` in index order."""
        if name not in SPLITS:
            raise InvalidArgument(f"split must be one of {', '.join(SPLITS)}, not "
                                  f"{shorten(name)!r}")
        return sorted((i for i in self.items if i.split == name), key=lambda i: i.index)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Manifest:
        """Parse ``manifest.json``; :class:`InvalidArgument` names what is malformed."""
        try:
            raw = json.loads(data)
            items = [DatasetItem(**item) for item in raw.pop("items")]
            manifest = cls(items=items, **raw)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise InvalidArgument(f"malformed data set manifest: {shorten(exc, 200)}") from None
        if manifest.version != MANIFEST_VERSION:
            raise InvalidArgument(f"data set {manifest.id!r} has manifest version "
                                  f"{manifest.version}; this code reads version {MANIFEST_VERSION}")
        bad = [i.index for i in manifest.items if i.split not in SPLITS]
        if bad:
            raise InvalidArgument(f"data set {manifest.id!r}: items {bad[:5]} have an unknown split")
        return manifest


def read_manifest(store: ArtifactStore, dataset_id: str) -> Manifest:
    """The manifest of ``dataset_id``; :class:`NotFound` when the data set does not exist (or
    is not complete yet: the manifest is written last)."""
    try:
        data = store.get(manifest_key(dataset_id))
    except NotFound:
        raise NotFound(f"data set {shorten(dataset_id)!r} does not exist in {store.url} (no "
                       f"{manifest_key(dataset_id)}); build it first") from None
    return Manifest.from_json(data)


def write_manifest(store: ArtifactStore, manifest: Manifest) -> str:
    """Write ``manifest.json`` (do it last: it marks the data set complete); returns its key."""
    key = manifest_key(manifest.id)
    store.put_at(key, manifest.to_json(), content_type="application/json")
    return key


def load_images(store: ArtifactStore, keys: Sequence[str], size: int) -> torch.Tensor:
    """Decode the PNGs at ``keys`` into ``[N, 3, size, size]`` float in ``[0, 1]`` (images of
    another size are resized bilinearly, with antialiasing when shrinking)."""
    out = torch.empty(len(keys), 3, size, size)
    for i, key in enumerate(keys):
        image = load_image(store.get(key))
        if image.shape[-2:] != (size, size):
            image = torch.nn.functional.interpolate(
                image[None], size=(size, size), mode="bilinear", align_corners=False,
                antialias=True)[0].clamp(0, 1)
        out[i] = image
    return out


def load_split(store: ArtifactStore, manifest: Manifest, split: str, kind: str = "dream",
               size: int | None = None) -> torch.Tensor:
    """The ``kind`` images (``"dream"`` or ``"source"``) of ``split`` as ``[N, 3, S, S]`` in
    ``[0, 1]``, in index order; ``S`` is the data set's size unless ``size`` is given."""
    if kind not in _KINDS:
        raise InvalidArgument(f"kind must be one of {', '.join(_KINDS)}, not {shorten(kind)!r}")
    keys = [getattr(item, kind) for item in manifest.split(split)]
    return load_images(store, keys, size or manifest.size)


def write_dataset(store: ArtifactStore, dataset_id: str,
                  splits: Mapping[str, Sequence[tuple[str, torch.Tensor, torch.Tensor]]],
                  size: int, **fields: Any) -> Manifest:
    """Write a whole data set from tensors (tests and tools): ``splits`` maps a split to
    ``(photo, source [3, S, S], dream [3, S, S])`` triples; images are resized to ``size``.
    ``fields`` fill the other manifest fields. Returns the manifest, written last."""
    prefix = dataset_prefix(dataset_id)
    items = []
    for split, triples in splits.items():
        if split not in SPLITS:
            raise InvalidArgument(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
        for photo, source, dream in triples:
            index = len(items)
            keys = (f"{prefix}source/{index:05d}.png", f"{prefix}{split}/{index:05d}.png")
            for key, image in zip(keys, (source, dream), strict=True):
                if image.shape[-2:] != (size, size):
                    image = resize(image, (size, size)).clamp(0, 1)
                store.put_at(key, encode_png(image), content_type="image/png")
            items.append(DatasetItem(index, split, photo, *keys))
    manifest = Manifest(
        id=dataset_id, version=MANIFEST_VERSION, size=size,
        created=fields.pop("created", datetime.datetime.now(datetime.UTC).isoformat()),
        dream_config=fields.pop("dream_config", {}),
        source=fields.pop("source", {"kind": "folder", "name": "tensors"}),
        engine_digest=fields.pop("engine_digest", ""),
        holdout_fraction=fields.pop("holdout_fraction", _fraction(items)),
        items=items, failures=fields.pop("failures", {}))
    if fields:
        raise InvalidArgument(f"unknown manifest fields: {', '.join(sorted(fields))}")
    write_manifest(store, manifest)
    return manifest


def _fraction(items: list[DatasetItem]) -> float:
    return sum(i.split == "holdout" for i in items) / len(items) if items else 0.0
