"""The guide service's data plane without a server: arithmetic, cache, sources."""

from __future__ import annotations

import torch

from dreamsuite.activations.compute import LayerStats
from dreamsuite.artifacts import open_store
from dreamsuite.backbones import get_backbone
from dreamsuite.clients.guide import GuideClient
from dreamsuite.engine.guide import (
    combine_guide_means,
    guide_weights,
    map_means,
    prepare_guide,
    select_neurons,
    selection_from_means,
)
from dreamsuite.images import load_image
from services.guide.cache import StatsCache, StatsKey

LAYERS = ["block_2", "block_9"]


def test_weights_and_selection_arithmetic_is_the_engines(pngs):
    backbone = get_backbone("efficientnet_lite0", device="cpu")
    images = [load_image(png) for png in pngs.values()]
    guide_means = [map_means(backbone, prepare_guide(i), LAYERS) for i in images]
    ours = combine_guide_means(guide_means, LAYERS)
    engine = guide_weights(backbone, images, LAYERS)
    for layer in LAYERS:
        assert torch.equal(ours[layer], engine[layer])
    means = [map_means(backbone, i, LAYERS) for i in images]
    selection = selection_from_means(means, LAYERS, top_k=3, bottom_k=2)
    direct = select_neurons(backbone, images, LAYERS, top_k=3, bottom_k=2)
    assert (selection.top, selection.bottom) == (direct.top, direct.bottom)


def test_cache_evicts_the_least_recently_used():
    cache = StatsCache(max_entries=2)
    stats = LayerStats(torch.zeros(1), torch.zeros(1), torch.zeros(1))
    keys = [StatsKey(f"sha{i}", "b", "l", 0, "v") for i in range(3)]
    cache.put(keys[0], stats)
    cache.put(keys[1], stats)
    assert cache.get(keys[0]) is stats  # keys[1] is now the least recently used
    cache.put(keys[2], stats)
    assert cache.get(keys[1]) is None and len(cache) == 2
    assert cache.get(StatsKey("sha0", "b", "l", 0, "other version")) is None


def test_selection_over_an_s3_prefix(s3, guide_factory, pngs):
    url = f"s3://guides?endpoint={s3.endpoint}&secure=false"
    store = open_store(url)
    for png in pngs.values():
        store.put(png)
    running = guide_factory("inprocess", artifacts=url)
    with GuideClient(running.address) as client:
        _, by_prefix = client.select([], "", LAYERS, top_k=2, bottom_k=1,
                                     prefix="s3://guides/sha256/")
        _, inline = client.select(list(pngs.values()), "", LAYERS, top_k=2, bottom_k=1)
    assert (by_prefix.top, by_prefix.bottom) == (inline.top, inline.bottom)
