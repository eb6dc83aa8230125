"""TorchServe's worker or whole process dying: UNAVAILABLE, the guide service stays SERVING,
and requests succeed again once TorchServe is back."""

from __future__ import annotations

import os
import signal
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dreamsuite.clients.guide import GuideClient
from dreamsuite.errors import Unavailable
from dreamsuite.images import encode_png, resize, sample_image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def big_png() -> bytes:
    """A 1280 x 1280 image: a forward pass long enough to die in the middle of."""
    return encode_png(resize(sample_image("astronaut"), (1280, 1280)).clamp(0, 1))


def serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="dreamsuite.v1.GuideService"), timeout=5)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def call_in_background(address: str, png: bytes) -> tuple[threading.Thread, list]:
    outcome: list = []

    def call() -> None:
        try:
            with GuideClient(address) as client:
                outcome.append(client.activations(png, "", ["head"]))
        except Exception as exc:  # noqa: BLE001  (the test inspects it)
            outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    return thread, outcome


def wait_until_computing(torchserve, since: int, timeout: float = 60) -> None:
    """Block until the worker logs that it received a request after byte ``since`` of its log."""
    log = torchserve.workdir / "logs" / "model_log.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log, "rb") as f:
            f.seek(since)
            if b"Backend received inference" in f.read():
                time.sleep(0.2)  # into the forward pass
                return
        time.sleep(0.05)
    raise AssertionError("the worker never received the request")


def log_size(torchserve) -> int:
    return (torchserve.workdir / "logs" / "model_log.log").stat().st_size


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


def test_worker_killed_mid_request(guide_torchserve, torchserve, big_png, pngs):
    since = log_size(torchserve)
    thread, outcome = call_in_background(guide_torchserve.address, big_png)
    wait_until_computing(torchserve, since)
    [worker] = torchserve.worker_pids()
    os.kill(worker, signal.SIGKILL)
    thread.join(120)
    assert isinstance(outcome[0], Unavailable), outcome
    assert "worker died while computing" in str(outcome[0])
    assert serving(guide_torchserve.address)
    succeeds_again(guide_torchserve.address, pngs["rocket"], within=120)


def test_torchserve_down_and_back(guide_torchserve, torchserve, big_png, pngs, prom):
    guide_url = f"http://127.0.0.1:{guide_torchserve.metrics.port}/metrics"
    errors_before = prom.total(prom.scrape(guide_url), "guide_backend_errors_total")
    since = log_size(torchserve)
    thread, outcome = call_in_background(guide_torchserve.address, big_png)
    wait_until_computing(torchserve, since)
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
