"""TorchServe's dynamic batching, observed: concurrent distinct calls through the guide service
on a real TorchServe share batches and forward passes when the archive allows it, the responses
say so, and the guide service's histograms (which the load tester reports) record it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from dreamsuite.activations.torchserve_client import TorchServeBackend
from dreamsuite.clients.guide import GuideClient
from dreamsuite.images import encode_png, sample_image
from dreamsuite.loadtest.server_metrics import ServerWatch
from dreamsuite.torchserve import TorchServe, require_java
from dreamsuite.v1 import activations_pb2 as pb
from handlers.archive import build_archive

BACKBONE = "efficientnet_lite0"
#: batch size -> max batch delay (ms): a generous delay, so concurrent calls meet in a batch.
SETTINGS = {4: 500, 1: 0}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, TorchServe]]:
    """A TorchServe per setting, keyed by batch size (started side by side)."""
    require_java()  # raises with instructions: these tests must not pass without Java
    made = {}
    for size, delay in SETTINGS.items():
        store = tmp_path_factory.mktemp(f"store-batch-{size}")
        build_archive(BACKBONE, store, batch_size=size, max_batch_delay=delay, workers=1)
        made[size] = TorchServe(store, [BACKBONE],
                                workdir=tmp_path_factory.mktemp(f"torchserve-batch-{size}"))
    try:
        with ThreadPoolExecutor(len(made)) as pool:
            for future in [pool.submit(server.start) for server in made.values()]:
                future.result()
        yield made
    finally:
        for server in made.values():
            server.stop()


def _distinct(count: int, start: int) -> list[bytes]:
    """``count`` PNGs of one size (64 x 96) with distinct bytes: no cache or single flight
    answers one for another."""
    base = sample_image("chelsea", size=64)
    out = []
    for i in range(start, start + count):
        image = base.clone()
        image[:, 0, 0] = image.new_tensor([i % 256, i // 256, 0]) / 255
        out.append(encode_png(image))
    return out


def _backend_calls(server: TorchServe, pngs: list[bytes]) -> list[pb.ActivationsResponse]:
    async def calls():
        backend = TorchServeBackend(server.grpc_target)
        try:
            return await asyncio.gather(*(backend.activations(pb.ActivationsRequest(
                image=png, backbone=BACKBONE, layers=["block_6"])) for png in pngs))
        finally:
            await backend.close()

    responses = asyncio.run(calls())
    assert not [r.error.message for r in responses if r.HasField("error")]
    return responses


def _guide_calls(guide, pngs: list[bytes], prom) -> tuple[dict, dict, dict]:
    """Concurrent ComputeGuideWeights calls, one guide each; the guide service's samples
    before and after, and what the load tester's server watch reported over them."""
    url = f"http://127.0.0.1:{guide.metrics.port}/metrics"
    watch = ServerWatch([url])
    before = prom.scrape(url)
    watch.start()
    with GuideClient(guide.address) as client, ThreadPoolExecutor(len(pngs)) as pool:
        list(pool.map(lambda png: client.guide_weights([png], "", [("block_6", 1.0)]), pngs))
    report = watch.finish()
    return before, prom.scrape(url), report


def _grew(prom, before: dict, after: dict, name: str, **labels: str) -> float:
    labels = {"backend": "torchserve", **labels}
    return prom.total(after, name, **labels) - prom.total(before, name, **labels)


def test_concurrent_requests_report_shared_batches_and_forward_passes(servers):
    same = _distinct(3, start=0)
    other = encode_png(sample_image("coffee", size=80))  # a size of its own
    responses = _backend_calls(servers[4], [*same, other])
    assert max(r.batch_size for r in responses) > 1
    for r in responses:
        assert 1 <= r.shared_forward <= r.batch_size <= 4
    assert responses[3].shared_forward == 1  # no other request had its size
    assert max(r.shared_forward for r in responses[:3]) > 1


def test_guide_service_histograms_show_the_batches(servers, guide_factory, prom):
    guide = guide_factory(f"torchserve://{servers[4].grpc_target}", cache_entries=0)
    before, after, report = _guide_calls(guide, _distinct(8, start=100), prom)
    count = _grew(prom, before, after, "guide_backend_batch_size_count")
    alone = _grew(prom, before, after, "guide_backend_batch_size_bucket", le="1.0")
    assert count == 8  # every call needed the backend: distinct guides
    assert alone < count  # some calls shared a batch
    assert _grew(prom, before, after, "guide_backend_batch_size_sum") > count
    assert _grew(prom, before, after, "guide_backend_batch_shared_forward_sum") > count
    batches = report["batch_sizes"]
    assert batches["guide_backend_batch_size"]["count"] == 8
    assert batches["guide_backend_batch_size"]["mean"] > 1
    assert batches["guide_backend_batch_shared_forward"]["mean"] > 1


def test_batch_size_one_never_batches(servers, guide_factory, prom):
    responses = _backend_calls(servers[1], _distinct(4, start=200))
    assert [(r.batch_size, r.shared_forward) for r in responses] == [(1, 1)] * 4
    guide = guide_factory(f"torchserve://{servers[1].grpc_target}", cache_entries=0)
    before, after, report = _guide_calls(guide, _distinct(6, start=300), prom)
    assert _grew(prom, before, after, "guide_backend_batch_size_count") == 6
    assert _grew(prom, before, after, "guide_backend_batch_size_bucket", le="1.0") == 6
    assert _grew(prom, before, after, "guide_backend_batch_size_sum") == 6
    assert report["batch_sizes"]["guide_backend_batch_size"] == {"count": 6, "mean": 1.0}


def test_bench_settings_and_guides():
    from dreamsuite.bench.guide import BatchSetting, distinct_guides, parse_setting
    from dreamsuite.errors import InvalidArgument

    assert parse_setting("8:5") == BatchSetting(8, 5)
    for bad in ("8", "0:5", "4:-1", "a:b"):
        with pytest.raises(InvalidArgument, match="BATCH:DELAY_MS|batch >= 1"):
            parse_setting(bad)
    guides = distinct_guides(40, 300)
    assert len(set(guides)) == 300  # none is another's, so none is answered by another
