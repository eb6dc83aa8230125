"""Graceful shutdown of a real ``dreamsuite serve dream`` process on a real SIGTERM, with a dream
in flight: health turns NOT_SERVING, new calls are refused, the dream finishes within the grace
period (or is cancelled at its end) and the process exits 0."""

from __future__ import annotations

import signal
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2

from dreamsuite.clients.dream import DreamClient
from dreamsuite.images import load_image
from dreamsuite.v1 import dream_pb2

pytestmark = pytest.mark.slow

SERVICE = "dreamsuite.v1.DreamService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def slow_request(svc, png: bytes, *, octaves: int, steps: int) -> dream_pb2.DreamRequest:
    """Octaves of nearly the same size (scale 1.01), so each takes about as long as the first:
    after the first update the rest of the dream is still ahead."""
    request = svc.small_request(png, octaves=octaves, steps=steps, inline_images=True,
                                preview_format=dream_pb2.PREVIEW_FORMAT_NONE)
    request.schedule.octave_scale = 1.01
    return request


def refused(address: str, svc) -> float:
    """New calls (unary and streaming) are refused with UNAVAILABLE; returns when they were."""
    with DreamClient(address) as client:
        svc.expect_code(lambda: client.stub.ListBackbones(dream_pb2.ListBackbonesRequest(),
                                                          timeout=10),
                        grpc.StatusCode.UNAVAILABLE)
        svc.expect_code(lambda: list(client.dream(svc.small_request(b"x"), timeout=10)),
                        grpc.StatusCode.UNAVAILABLE)
    return time.monotonic()


def test_sigterm_lets_the_dream_in_flight_finish_and_refuses_new_calls(
        serve, follow, cat_png, svc):
    # One torch thread: a 2-thread dream's OpenMP spin-waits slow it several-fold when another
    # process holds a core (README, "Sharing a machine"), and the dream must finish within the
    # grace period; the long grace costs nothing, since the server exits when the dream is done.
    server = serve("dream", "--grace-seconds", "300", env={"OMP_NUM_THREADS": "1"})
    watch = follow.health(server.address, SERVICE)
    assert watch.wait_for(SERVING)
    with DreamClient(server.address) as client:
        dream = follow.stream(client.stub.Dream(slow_request(svc, cat_png, octaves=3,
                                                             steps=100), timeout=600))
        assert dream.first.wait(300) and dream.messages, dream.error
        server.signal(signal.SIGTERM)
        assert watch.wait_for(NOT_SERVING, timeout=30), (watch.statuses, watch.error)
        refused_at = refused(server.address, svc)
        dream.join(600)
    assert dream.error is None, dream.error
    assert [u.octave for u in dream.messages] == [0, 1, 2]
    assert [u.HasField("result") for u in dream.messages] == [False, False, True]
    # The dream was still running while health said NOT_SERVING and new calls were refused.
    assert dream.arrived[-1] > refused_at
    result = dream.messages[-1].result
    assert load_image(result.image).shape == (3, 64, 96)
    assert result.artifact.uri.startswith("file://")
    # The process ends once the dream is done, not when the 300 s grace runs out.
    assert server.wait(timeout=60) == 0
    assert time.monotonic() - dream.arrived[-1] < 30
    watch.close()
    log = server.output()
    assert "shutting down: NOT_SERVING" in log and "Traceback" not in log


def test_sigterm_cancels_a_dream_that_outlives_the_grace_period(serve, follow, cat_png, svc):
    grace = 2.0
    server = serve("dream", "--grace-seconds", str(grace))
    with DreamClient(server.address) as client:
        # 16 octaves of 100 steps: the 15 still to come take many times the grace period.
        dream = follow.stream(client.stub.Dream(slow_request(svc, cat_png, octaves=16,
                                                             steps=100), timeout=600))
        assert dream.first.wait(300) and dream.messages, dream.error
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        code = server.wait(timeout=grace + 60)
        exited = time.monotonic()
        dream.join(30)
    assert code == 0, server.output()
    assert grace - 0.5 <= exited - signalled <= grace + 10
    assert dream.error is not None
    assert dream.error.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    assert not any(u.HasField("result") for u in dream.messages)
    assert len(dream.messages) < 16
    log = server.output()
    assert "shutting down: NOT_SERVING" in log and "Traceback" not in log
