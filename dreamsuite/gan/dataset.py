"""Dreamed data sets: photos cropped to squares, each dreamed with one fixed dream config, stored
with a manifest (``datasets/<id>/``, see :mod:`dreamsuite.gan.data`).

Transport-free: :func:`build_dataset` takes ``dream`` (PNG bytes in, dreamed PNG bytes out), so
the GAN service sends the dreams through the dream service and a local command dreams in-process.

The id is a digest of the source images, the resolved dream config (defaults filled in), the
request's extra dream inputs (guides) and a digest of the engine's source, so changed dream
defaults make a new data set, and building an existing id again is a no-op. Train and holdout
are split by source photo, never by crop, so a memorisation rate means something.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import hashlib
import json
import random
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from skimage import data as skimage_data

import dreamsuite.engine
from dreamsuite.artifacts import ArtifactStore
from dreamsuite.engine.config import DreamConfig, check_config
from dreamsuite.errors import Cancelled, DreamsuiteError, InvalidArgument, NotFound, shorten
from dreamsuite.gan.data import DatasetItem, Manifest, dataset_prefix, read_manifest, write_manifest
from dreamsuite.images import IMAGE_SUFFIXES, encode_png, load_image, resize

__all__ = [
    "BUILTIN_SETS",
    "Photo",
    "BuildPlan",
    "BuildProgress",
    "builtin_photos",
    "folder_photos",
    "prefix_photos",
    "engine_digest",
    "check_numbers",
    "plan_dataset",
    "build_dataset",
]

#: Colour photos bundled with scikit-image (public domain / CC0) that load with no network:
#: a small, low-diversity set, enough to show the method, not to train a general model.
BUILTIN_SETS = {"skimage": ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                            "immunohistochemistry", "retina")}
MAX_SIZE = 512
MAX_CROPS_PER_PHOTO = 256
MAX_IMAGES = 20_000


@dataclass(frozen=True)
class Photo:
    """A source photo: its name (the split is by name) and ``[3, H, W]`` pixels in [0, 1]."""

    name: str
    image: torch.Tensor


@dataclass(frozen=True)
class PlannedItem:
    index: int
    split: str
    photo: str
    png: bytes  # the source crop, size x size


@dataclass(frozen=True)
class BuildPlan:
    """Everything a build will store, known before any dream: the id is final here."""

    dataset_id: str
    size: int
    holdout_fraction: float
    config: DreamConfig
    source: dict
    engine_digest: str
    items: list[PlannedItem]
    failures: dict[str, int] = field(default_factory=dict)  # source images skipped, by reason


@dataclass(frozen=True)
class BuildProgress:
    dataset_id: str
    done: int
    total: int
    failures: dict[str, int]
    existing: bool = False
    manifest: Manifest | None = None


def builtin_photos(name: str) -> list[Photo]:
    """The photos of a built-in set (:data:`BUILTIN_SETS`)."""
    if name not in BUILTIN_SETS:
        raise InvalidArgument(f"source.builtin: unknown set {shorten(name)!r}; choose one of "
                              f"{', '.join(BUILTIN_SETS)}")
    photos = []
    for photo in BUILTIN_SETS[name]:
        array = getattr(skimage_data, photo)()[..., :3]
        photos.append(Photo(photo, torch.from_numpy(np.ascontiguousarray(array))
                            .permute(2, 0, 1).float() / 255))
    return photos


def folder_photos(folder: str, roots: Sequence[Path], *,
                  max_pixels: int | None = None) -> tuple[list[Photo], dict[str, int]]:
    """The readable images of ``folder`` (sorted), which must lie below one of ``roots``; the
    unreadable ones are counted by reason, not fatal."""
    if not roots:
        raise InvalidArgument("source.folder: this server reads no folders (no folder roots are "
                              "configured); send an artifact prefix instead")
    path = Path(folder).resolve()
    allowed = [Path(r).resolve() for r in roots]
    if not any(path == root or root in path.parents for root in allowed):
        raise InvalidArgument(f"source.folder: {shorten(folder)!r} is not below a folder this "
                              f"server may read ({', '.join(map(str, allowed))})")
    if not path.is_dir():
        raise NotFound(f"source.folder: {shorten(folder)!r} is not a folder")
    photos, failures = [], Counter()
    for file in sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            photos.append(Photo(file.stem, load_image(file, max_pixels=max_pixels)))
        except InvalidArgument:
            failures["unreadable image"] += 1
    return photos, dict(failures)


def prefix_photos(store: ArtifactStore, prefix: str, *, limit: int = MAX_IMAGES,
                  max_pixels: int | None = None) -> tuple[list[Photo], dict[str, int]]:
    """The readable images under an artifact ``prefix`` (sorted by key)."""
    keys = [k for k in store.iter_keys(prefix) if k.lower().endswith(IMAGE_SUFFIXES)]
    if len(keys) > limit:
        raise InvalidArgument(f"source.prefix: {len(keys)} images, more than {limit}")
    photos, failures = [], Counter()
    for key in keys:
        try:
            photos.append(Photo(key, load_image(store.get(key), max_pixels=max_pixels)))
        except InvalidArgument:
            failures["unreadable image"] += 1
    return photos, dict(failures)


def engine_digest() -> str:
    """Digest of the engine's source: a new engine (or new dream defaults) makes new data sets."""
    digest = hashlib.sha256()
    for path in sorted(Path(dreamsuite.engine.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _crop(image: torch.Tensor, size: int, rng: random.Random, *, centre: bool) -> torch.Tensor:
    """A square crop (random side between half and all of the shorter side, or the central
    square) resized to ``size`` x ``size``."""
    h, w = image.shape[-2:]
    side = min(h, w) if centre else rng.randint(max(1, min(h, w) // 2), min(h, w))
    top = (h - side) // 2 if centre else rng.randint(0, h - side)
    left = (w - side) // 2 if centre else rng.randint(0, w - side)
    square = image[:, top:top + side, left:left + side]
    return resize(square, (size, size)).clamp(0, 1)


def check_numbers(size: int, holdout_fraction: float, crops_per_photo: int,
                  max_images: int) -> None:
    """The data set's numbers, checked before any photo is read (a build of a bad size
    decoded every photo first)."""
    if not 16 <= size <= MAX_SIZE:
        raise InvalidArgument(f"size must be between 16 and {MAX_SIZE} pixels, not {size}")
    if not 0.0 <= holdout_fraction < 1.0:  # NaN fails too
        raise InvalidArgument(f"holdout_fraction must be in [0, 1), not {holdout_fraction}")
    if not 1 <= crops_per_photo <= MAX_CROPS_PER_PHOTO:
        raise InvalidArgument(f"crops_per_photo must be between 1 and {MAX_CROPS_PER_PHOTO}")
    if not 0 <= max_images <= MAX_IMAGES:
        raise InvalidArgument(f"max_images must be between 0 (all) and {MAX_IMAGES}")


def plan_dataset(
    photos: Sequence[Photo], config: DreamConfig, *, source: dict, size: int = 64,
    holdout_fraction: float = 0.25, crops_per_photo: int = 1, max_images: int = 0,
    extra: bytes = b"", failures: dict[str, int] | None = None,
) -> BuildPlan:
    """Crop the photos, split them by photo and compute the data set's id.

    ``extra`` is whatever else determines the dreams (e.g. the serialised guides of the dream
    request); ``config.seed`` also seeds the crops and the split."""
    check_numbers(size, holdout_fraction, crops_per_photo, max_images)
    checked = check_config(config)
    resolved = dataclasses.replace(config, maplist=checked.maplist)
    if not photos:
        raise InvalidArgument("source: no readable photos")
    rng = random.Random(resolved.seed)
    names = sorted({p.name for p in photos})
    holdout_count = round(len(names) * holdout_fraction)
    if holdout_fraction > 0 and len(names) > 1:
        holdout_count = min(max(1, holdout_count), len(names) - 1)
    holdout = set(rng.sample(names, holdout_count)) if holdout_count else set()
    items: list[PlannedItem] = []
    for photo in photos:
        for _ in range(crops_per_photo):
            crop = _crop(photo.image, size, rng, centre=crops_per_photo == 1)
            items.append(PlannedItem(len(items), "holdout" if photo.name in holdout else "train",
                                     photo.name, encode_png(crop)))
    if max_images:
        items = items[:max_images]
    digest = hashlib.sha256()
    digest.update(json.dumps({"size": size, "holdout_fraction": holdout_fraction,
                              "config": resolved.to_dict()}, sort_keys=True).encode())
    digest.update(hashlib.sha256(extra).digest())
    engine = engine_digest()
    digest.update(engine.encode())
    for item in items:
        digest.update(f"{item.split}:{item.photo}:".encode() + hashlib.sha256(item.png).digest())
    return BuildPlan(digest.hexdigest()[:24], size, holdout_fraction, resolved, source, engine,
                     items, dict(failures or {}))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, DreamsuiteError):
        return type(exc).__name__
    return "error"


def build_dataset(
    plan: BuildPlan, store: ArtifactStore, dream: Callable[[bytes], bytes], *,
    concurrency: int = 4, progress: Callable[[BuildProgress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> Manifest:
    """Dream every planned crop (``concurrency`` at once) and store the data set; a failed
    dream is counted by reason and skipped. The manifest is written last."""
    if not 1 <= concurrency <= 64:
        raise InvalidArgument("concurrency must be between 1 and 64")
    emit = progress or (lambda _: None)
    try:
        existing = read_manifest(store, plan.dataset_id)
    except NotFound:
        existing = None
    if existing is not None:
        emit(BuildProgress(plan.dataset_id, len(existing.items), len(existing.items),
                           dict(existing.failures), existing=True, manifest=existing))
        return existing
    prefix = dataset_prefix(plan.dataset_id)
    failures: Counter[str] = Counter(plan.failures)
    done: list[DatasetItem] = []
    lock = threading.Lock()

    def one(item: PlannedItem) -> None:
        if should_cancel is not None and should_cancel():
            raise Cancelled("data set build cancelled")
        source_key = f"{prefix}source/{item.index:05d}.png"
        dream_key = f"{prefix}{item.split}/{item.index:05d}.png"
        try:
            dreamed = dream(item.png)
            image = load_image(dreamed)
            if tuple(image.shape[-2:]) != (plan.size, plan.size):
                image = resize(image, (plan.size, plan.size)).clamp(0, 1)
                dreamed = encode_png(image)
            store.put_at(source_key, item.png, content_type="image/png")
            store.put_at(dream_key, dreamed, content_type="image/png")
        except Cancelled:
            raise
        except Exception as exc:  # one bad dream is reported and skipped, not fatal
            with lock:
                failures[_reason(exc)] += 1
            return
        with lock:
            done.append(DatasetItem(item.index, item.split, item.photo, source_key, dream_key))

    total = len(plan.items)
    with concurrent.futures.ThreadPoolExecutor(concurrency, "dataset") as pool:
        futures = [pool.submit(one, item) for item in plan.items]
        try:
            for finished, future in enumerate(concurrent.futures.as_completed(futures), 1):
                future.result()
                emit(BuildProgress(plan.dataset_id, finished, total, dict(failures)))
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    if not done:
        raise InvalidArgument(f"no image of the data set could be dreamed ({dict(failures)})")
    manifest = Manifest(
        id=plan.dataset_id, version=1, size=plan.size,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        dream_config=plan.config.to_dict(), source=plan.source, engine_digest=plan.engine_digest,
        holdout_fraction=plan.holdout_fraction, items=sorted(done, key=lambda i: i.index),
        failures=dict(failures),
    )
    write_manifest(store, manifest)
    emit(BuildProgress(plan.dataset_id, total, total, dict(failures), manifest=manifest))
    return manifest
