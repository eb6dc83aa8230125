"""The guide service's /metrics and TorchServe's metrics endpoint count the calls."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from dreamsuite.clients.guide import GuideClient


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of a Prometheus endpoint."""
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, lab), v in samples.items()
               if n == name and set(labels.items()) <= set(lab))


def test_cache_backend_and_grpc_metrics_count_the_calls(guide_torchserve, torchserve, pngs):
    guide_url = f"http://127.0.0.1:{guide_torchserve.metrics.port}/metrics"
    before, ts_before = scrape(guide_url), scrape(torchserve.metrics_url)
    with GuideClient(guide_torchserve.address) as client:
        client.activations(pngs["astronaut"], "", ["block_1", "block_2"], max_side=48)
        client.activations(pngs["astronaut"], "", ["block_1", "block_2"], max_side=48)
    after, ts_after = scrape(guide_url), scrape(torchserve.metrics_url)

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert grew("guide_cache_misses_total", backbone="efficientnet_lite0") == 2  # two layers
    assert grew("guide_cache_hits_total", backbone="efficientnet_lite0") == 2  # second call
    assert grew("guide_backend_call_seconds_count", backend="torchserve", outcome="ok") == 1
    assert grew("grpc_server_handled_total", grpc_method="Activations", grpc_code="OK") == 2
    assert grew("grpc_server_started_total", grpc_service="dreamsuite.v1.GuideService") == 2
    assert (total(ts_after, "ts_inference_requests_total")
            - total(ts_before, "ts_inference_requests_total")) == 1
