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
