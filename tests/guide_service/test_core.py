"""The guide service's data plane without a server: arithmetic, cache, sources."""

from __future__ import annotations

import asyncio

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


class _GatedBackend:
    """An activation backend that counts its calls and answers only once the gate opens."""

    url = "gated"

    def __init__(self):
        from dreamsuite.activations.backend import InProcessBackend

        self.inner = InProcessBackend(device="cpu")
        self.calls = 0
        self.gate = asyncio.Event()

    async def activations(self, request):
        self.calls += 1
        await self.gate.wait()
        return await self.inner.activations(request)

    async def close(self):
        await self.inner.close()


def test_identical_concurrent_requests_share_one_backend_call(pngs):
    from prometheus_client import CollectorRegistry

    from services.guide.core import GuideCore
    from services.guide.metrics import GuideMetrics

    async def scenario():
        backend = _GatedBackend()
        core = GuideCore(backend, GuideMetrics(CollectorRegistry(), "gated"))
        png = next(iter(pngs.values()))
        first = asyncio.ensure_future(core.guide_weights([png], "", {"block_9": 1.0}))
        second = asyncio.ensure_future(core.guide_weights([png], "", {"block_9": 1.0}))
        await asyncio.sleep(0.05)  # both are now waiting: one on the backend, one on it
        backend.gate.set()
        a, b = await asyncio.gather(first, second)
        third = await core.guide_weights([png], "", {"block_9": 1.0})  # from the cache
        return backend.calls, a, b, third, core.metrics

    calls, a, b, third, metrics = asyncio.run(scenario())
    assert calls == 1
    assert torch.equal(a.weights["block_9"], b.weights["block_9"])
    assert torch.equal(a.weights["block_9"], third.weights["block_9"])
    assert metrics.cache_misses.labels("efficientnet_lite0")._value.get() == 1
    assert metrics.cache_hits.labels("efficientnet_lite0")._value.get() == 2


class _RandomWeightsBackend:
    """The in-process computation on random weights (Inception V3's are not embedded); records
    the layers each request asks for."""

    url = "random"

    def __init__(self):
        self.asked: list[list[str]] = []

    async def activations(self, request):
        from dreamsuite.activations.compute import compute_batch

        self.asked.append(list(request.layers))
        backbone = get_backbone(request.backbone, weights="random", device="cpu")
        return compute_batch(backbone, [request], kind="inprocess")[0]

    async def close(self):
        return None


def test_aliases_are_resolved_before_the_backend_and_the_cache(pngs):
    from prometheus_client import CollectorRegistry

    from dreamsuite.errors import InvalidArgument
    from services.guide.core import GuideCore
    from services.guide.metrics import GuideMetrics

    async def scenario():
        backend = _RandomWeightsBackend()
        core = GuideCore(backend, GuideMetrics(CollectorRegistry(), "random"))
        png = pngs["coffee"]
        by_alias = await core.guide_weights([png], "inception_v3", {"mixed3": 2.0})
        by_name = await core.guide_weights([png], "inception_v3", {"mixed_6a": 2.0})  # cached
        refused = ""
        try:
            await core.guide_weights([png], "inception_v3", {"mixed3": 1.0, "mixed_6a": 1.0})
        except InvalidArgument as exc:
            refused = str(exc)
        return backend.asked, by_alias, by_name, refused

    asked, by_alias, by_name, refused = asyncio.run(scenario())
    assert asked == [["mixed_6a"]]
    assert list(by_alias.weights) == ["mixed_6a"]
    assert torch.equal(by_alias.weights["mixed_6a"], by_name.weights["mixed_6a"])
    assert by_alias.maplist.layers == ["mixed_6a"] and by_alias.maplist.terms[0].weight == 2.0
    assert "'mixed3' and 'mixed_6a' name the same layer" in refused
