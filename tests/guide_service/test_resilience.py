"""TorchServe's worker or whole process dying: UNAVAILABLE, the guide service stays SERVING,
and requests succeed again once TorchServe is back."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dreamsuite.clients.guide import GuideClient
from dreamsuite.errors import Unavailable
from dreamsuite.images import encode_png, resize, sample_image

pytestmark = pytest.mark.slow


def fresh_png(size: int) -> bytes:
    """An image no other test sends (the guide service caches what it has computed)."""
    return encode_png(resize(sample_image("astronaut"), (size, size)).clamp(0, 1))


def serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="dreamsuite.v1.GuideService"), timeout=5)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def call_in_background(address: str, png: bytes) -> tuple[threading.Thread, list]:
    outcome: list = []

    def call() -> None:
        try:
            # One attempt: the test watches what the service answers (the suite's clients
            # would retry an UNAVAILABLE call once the worker is back).
            with GuideClient(address, retries=False) as client:
                outcome.append(client.activations(png, "", ["head"]))
        except Exception as exc:  # noqa: BLE001  (the test inspects it)
            outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    return thread, outcome


@contextlib.contextmanager
def request_held_by_a_stopped_worker(torchserve, address: str, png: bytes) -> Iterator[tuple]:
    """A guide-service call that TorchServe has handed to its worker, which is stopped
    (SIGSTOP) and so cannot answer: what the test does next happens mid-request, however fast
    the machine. Yields the worker's pid, the calling thread and its outcome list."""
    [worker] = torchserve.worker_pids()
    log = torchserve.workdir / "logs" / "ts_log.log"
    since = log.stat().st_size
    os.kill(worker, signal.SIGSTOP)
    try:
        thread, outcome = call_in_background(address, png)
        deadline = time.monotonic() + 60
        # The frontend logs this as it writes the request to the worker's socket.
        while b"Flushing req.cmd PREDICT" not in log.read_bytes()[since:]:
            assert time.monotonic() < deadline, "TorchServe never handed the request over"
            assert thread.is_alive(), outcome
            time.sleep(0.05)
        yield worker, thread, outcome
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGCONT)


def succeeds_again(address: str, png: bytes, within: float) -> None:
    deadline = time.monotonic() + within
    with GuideClient(address) as client:
        while True:
            try:
                client.activations(png, "", ["block_4"])
                return
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)


def test_worker_killed_mid_request(guide_torchserve, torchserve, pngs):
    with request_held_by_a_stopped_worker(torchserve, guide_torchserve.address,
                                          fresh_png(200)) as (worker, thread, outcome):
        os.kill(worker, signal.SIGKILL)
        thread.join(120)
    assert isinstance(outcome[0], Unavailable), outcome
    assert "worker died while computing" in str(outcome[0])
    assert serving(guide_torchserve.address)
    succeeds_again(guide_torchserve.address, pngs["rocket"], within=120)


def test_torchserve_down_and_back(guide_torchserve, torchserve, pngs, prom):
    guide_url = f"http://127.0.0.1:{guide_torchserve.metrics.port}/metrics"
    errors_before = prom.total(prom.scrape(guide_url), "guide_backend_errors_total")
    with request_held_by_a_stopped_worker(torchserve, guide_torchserve.address,
                                          fresh_png(208)) as (_, thread, outcome):
        torchserve.stop()
        thread.join(120)
    assert isinstance(outcome[0], Unavailable), outcome
    with GuideClient(guide_torchserve.address) as client, \
         pytest.raises(Unavailable, match="TorchServe at .* is unavailable after 3 attempts"):
        client.activations(pngs["chelsea"], "", ["block_4"])
    assert serving(guide_torchserve.address)
    assert prom.total(prom.scrape(guide_url), "guide_backend_errors_total") >= errors_before + 4
    torchserve.start()  # the same ports: the guide service reconnects by itself
    succeeds_again(guide_torchserve.address, pngs["chelsea"], within=60)
