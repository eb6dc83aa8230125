"""dreamsuite.gan.data: the data set layout, the manifest and loading images."""

from __future__ import annotations

import json

import pytest
import torch

from dreamsuite.artifacts import open_store
from dreamsuite.errors import InvalidArgument, NotFound
from dreamsuite.gan.data import (
    Manifest,
    dataset_prefix,
    load_images,
    load_split,
    read_manifest,
    write_dataset,
    write_manifest,
)


def _images(n: int, size: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, size, size, generator=g) for _ in range(n)]


@pytest.fixture
def store(tmp_path):
    return open_store(tmp_path.as_uri())


@pytest.fixture
def dataset(store):
    sources, dreams = _images(5, 32, 0), _images(5, 32, 1)
    splits = {"train": [(f"photo{i // 2}", sources[i], dreams[i]) for i in range(4)],
              "holdout": [("photo9", sources[4], dreams[4])]}
    manifest = write_dataset(store, "d1", splits, 32, dream_config={"steps": 3},
                             source={"kind": "builtin", "name": "skimage"}, engine_digest="abc")
    return manifest, sources, dreams


def test_manifest_round_trips_and_counts_splits(store, dataset):
    manifest, _, _ = dataset
    again = read_manifest(store, "d1")
    assert again == manifest
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert again.counts == {"train": 4, "holdout": 1}
    assert again.dream_config == {"steps": 3} and again.engine_digest == "abc"
    assert again.holdout_fraction == pytest.approx(0.2)
    item = again.split("holdout")[0]
    assert (item.index, item.photo) == (4, "photo9")
    assert item.source == "datasets/d1/source/00004.png"
    assert item.dream == "datasets/d1/holdout/00004.png"


def test_every_item_key_exists_and_the_manifest_lists_exactly_them(store, dataset):
    manifest, _, _ = dataset
    stored = set(store.iter_keys(dataset_prefix("d1")))
    listed = {k for item in manifest.items for k in (item.source, item.dream)}
    assert stored == listed | {"datasets/d1/manifest.json"}


def test_load_split_returns_the_dreams_and_sources_in_index_order(store, dataset):
    manifest, sources, dreams = dataset
    train = load_split(store, manifest, "train")
    assert train.shape == (4, 3, 32, 32) and train.dtype == torch.float32
    # PNG keeps 8 bits: within half a level of what was written
    assert (train - torch.stack(dreams[:4])).abs().max() <= 0.5 / 255 + 1e-6
    holdout_sources = load_split(store, manifest, "holdout", kind="source")
    assert (holdout_sources[0] - sources[4]).abs().max() <= 0.5 / 255 + 1e-6


def test_load_images_resizes_to_the_asked_size(store, dataset):
    manifest, _, _ = dataset
    images = load_images(store, [manifest.items[0].dream], 16)
    assert images.shape == (1, 3, 16, 16)
    assert images.min() >= 0 and images.max() <= 1


def test_missing_data_set_names_itself(store):
    with pytest.raises(NotFound, match="'nope'"):
        read_manifest(store, "nope")


@pytest.mark.parametrize("bad", ["", "a/b", "..", "has space"])
def test_bad_data_set_ids_are_refused(bad):
    with pytest.raises(InvalidArgument):
        dataset_prefix(bad)


def test_malformed_or_future_manifests_are_refused(store, dataset):
    manifest, _, _ = dataset
    raw = json.loads(manifest.to_json())
    with pytest.raises(InvalidArgument, match="malformed"):
        Manifest.from_json(json.dumps({k: v for k, v in raw.items() if k != "size"}))
    with pytest.raises(InvalidArgument, match="version 2"):
        Manifest.from_json(json.dumps({**raw, "version": 2}))
    raw["items"][0]["split"] = "test"
    with pytest.raises(InvalidArgument, match="unknown split"):
        Manifest.from_json(json.dumps(raw))
    with pytest.raises(InvalidArgument, match="kind"):
        load_split(store, manifest, "train", kind="mask")


def test_write_manifest_replaces_the_manifest(store, dataset):
    manifest, _, _ = dataset
    write_manifest(store, Manifest(**{**manifest.__dict__, "failures": {"too small": 2}}))
    assert read_manifest(store, "d1").failures == {"too small": 2}
