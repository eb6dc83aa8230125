"""The server-side figures when a /metrics URL fails: the others still count, and a URL
without a baseline scrape is left out (its lifetime totals are not the run's). Real Prometheus
exposition over HTTP."""

from __future__ import annotations

import socket

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from dreamsuite.loadtest.server_metrics import ServerWatch


def _service() -> tuple[CollectorRegistry, Counter, Gauge]:
    registry = CollectorRegistry()
    handled = Counter("grpc_server_handled_total", "RPCs handled",
                      ["grpc_service", "grpc_method", "grpc_type", "grpc_code"],
                      registry=registry)
    depth = Gauge("dream_queue_depth", "dreams queued", registry=registry)
    return registry, handled, depth


def _dream_ok(handled: Counter):
    return handled.labels("dreamsuite.v1.DreamService", "Dream", "server_stream", "OK")


def _serve(registry: CollectorRegistry, port: int = 0):
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    return server, thread, f"http://127.0.0.1:{server.server_port}/metrics"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_url_without_a_baseline_is_left_out_and_the_others_still_count():
    up, up_handled, up_depth = _service()
    late, late_handled, late_depth = _service()
    _dream_ok(up_handled).inc(5)
    _dream_ok(late_handled).inc(100)  # its lifetime before the run: not the run's
    up_depth.set(2)
    late_depth.set(7)
    servers = [_serve(up)]
    late_port = _free_port()
    late_url = f"http://127.0.0.1:{late_port}/metrics"
    try:
        watch = ServerWatch([servers[0][2], late_url], timeout=2)
        watch.start()  # the late service does not answer yet
        watch.poll()  # nor now: the gauge is still sampled from the one that answers
        servers.append(_serve(late, late_port))
        watch.poll()
        _dream_ok(up_handled).inc(3)
        _dream_ok(late_handled).inc(7)
        report = watch.finish()
    finally:
        for server, thread, _ in servers:
            server.shutdown()
            server.server_close()
            thread.join(5)
    assert report["handled"] == {"Dream": {"OK": 3.0}}
    assert report["queue_depth"]["samples"] == 2
    assert report["queue_depth"]["max"] == 9.0  # both answered the second poll
    assert any(e.startswith(late_url) and "no scrape before the run" in e
               for e in report["errors"]), report["errors"]
