"""The load tester's server-side figures include the guide service's batch histograms: scraped
from a real /metrics endpoint, reported as differences over the run, shown in the table."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server

from dreamsuite.loadtest.server_metrics import ServerWatch
from dreamsuite.loadtest.summary import format_table, summarise
from dreamsuite.v1 import activations_pb2 as pb
from services.guide.metrics import GuideMetrics


def test_guide_batch_histograms_reach_the_report():
    registry = CollectorRegistry()
    metrics = GuideMetrics(registry, "torchserve://127.0.0.1:7070")
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        metrics.observe_response(pb.ActivationsResponse(batch_size=8, shared_forward=8))  # before
        watch = ServerWatch([url])
        watch.start()
        for batch, shared in [(4, 3), (4, 1), (2, 2), (0, 0)]:  # (0, 0): an old handler
            metrics.observe_response(pb.ActivationsResponse(batch_size=batch,
                                                            shared_forward=shared))
        report = watch.finish()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert report["errors"] == []
    assert report["batch_sizes"] == {
        "guide_backend_batch_shared_forward": {"count": 3, "mean": 2.0},
        "guide_backend_batch_size": {"count": 3, "mean": 10 / 3},
    }
    snapshot = {"duration_s": 1.0, "entries": [], "errors": []}
    table = format_table(summarise(snapshot, server=report))
    assert "server guide_backend_batch_size: 3 batches, mean 3.33" in table
