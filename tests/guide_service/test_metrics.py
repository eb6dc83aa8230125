"""The guide service's /metrics and TorchServe's metrics endpoint count the calls."""

from __future__ import annotations

from dreamsuite.clients.guide import GuideClient


def test_cache_backend_and_grpc_metrics_count_the_calls(guide_torchserve, torchserve, pngs,
                                                        prom):
    guide_url = f"http://127.0.0.1:{guide_torchserve.metrics.port}/metrics"
    before, ts_before = prom.scrape(guide_url), prom.scrape(torchserve.metrics_url)
    with GuideClient(guide_torchserve.address) as client:
        client.activations(pngs["astronaut"], "", ["block_1", "block_2"], max_side=48)
        client.activations(pngs["astronaut"], "", ["block_1", "block_2"], max_side=48)
    after, ts_after = prom.scrape(guide_url), prom.scrape(torchserve.metrics_url)

    def grew(name: str, **labels: str) -> float:
        return prom.total(after, name, **labels) - prom.total(before, name, **labels)

    assert grew("guide_cache_misses_total", backbone="efficientnet_lite0") == 2  # two layers
    assert grew("guide_cache_hits_total", backbone="efficientnet_lite0") == 2  # second call
    assert grew("guide_backend_call_seconds_count", backend="torchserve", outcome="ok") == 1
    assert grew("grpc_server_handled_total", grpc_method="Activations", grpc_code="OK") == 2
    assert grew("grpc_server_started_total", grpc_service="dreamsuite.v1.GuideService") == 2
    assert (prom.total(ts_after, "ts_inference_requests_total")
            - prom.total(ts_before, "ts_inference_requests_total")) == 1


class _ReportingBackend:
    """The in-process backend, its responses relabelled with given batch figures (what a
    TorchServe handler reports), one pair per call in turn."""

    url = "torchserve://fake:7070"

    def __init__(self, figures: list[tuple[int, int]]):
        from dreamsuite.activations.backend import InProcessBackend

        self.inner = InProcessBackend(device="cpu")
        self.figures = iter(figures)

    async def activations(self, request):
        response = await self.inner.activations(request)
        response.batch_size, response.shared_forward = next(self.figures)
        return response

    async def close(self):
        await self.inner.close()


def test_backend_batch_figures_become_histograms(pngs):
    import asyncio

    from prometheus_client import CollectorRegistry

    from services.guide.core import GuideCore
    from services.guide.metrics import GuideMetrics

    registry = CollectorRegistry()
    # four guides, four backend calls: a batch of 4 (three shared a pass), a call alone, and
    # one from a handler that predates the fields (0: not reported, not recorded)
    backend = _ReportingBackend([(4, 3), (4, 1), (1, 1), (0, 0)])
    core = GuideCore(backend, GuideMetrics(registry, backend.url))
    asyncio.run(core.guide_weights(list(pngs.values()), "", {"block_2": 1.0}))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"backend": "torchserve", **labels})

    assert value("guide_backend_batch_size_count") == 3
    assert value("guide_backend_batch_size_sum") == 9
    assert value("guide_backend_batch_size_bucket", le="1.0") == 1
    assert value("guide_backend_batch_size_bucket", le="4.0") == 3
    assert value("guide_backend_batch_shared_forward_count") == 3
    assert value("guide_backend_batch_shared_forward_sum") == 5


def test_inprocess_calls_are_batches_of_one(guide_inprocess, pngs, prom):
    url = f"http://127.0.0.1:{guide_inprocess.metrics.port}/metrics"
    before = prom.scrape(url)
    with GuideClient(guide_inprocess.address) as client:
        client.activations(pngs["rocket"], "", ["block_1"], max_side=64)
    after = prom.scrape(url)

    def grew(name: str) -> float:
        return (prom.total(after, name, backend="inprocess")
                - prom.total(before, name, backend="inprocess"))

    assert grew("guide_backend_batch_size_count") == grew("guide_backend_batch_size_sum") == 1
    assert grew("guide_backend_batch_shared_forward_sum") == 1
