"""How the dream service fails: cancellation, deadlines, bad input, capacity, the artifact store
going away, shutdown. Every case ends with the server healthy (or cleanly stopped)."""

from __future__ import annotations

import asyncio
import gc
import math
import threading
import time

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2

from dreamsuite.images import encode_png, sample_image
from dreamsuite.v1 import common_pb2, dream_pb2, dream_pb2_grpc
from dreamsuite.wire.channels import RETRY_POLICY
from services.dream.jobs import PreparedJob
from services.dream.server import SERVICE_NAME

pytestmark = pytest.mark.slow

SERVING = health_pb2.HealthCheckResponse.SERVING
#: Steps enough to take minutes: a test that waits for such a dream only passes if it stopped.
ENDLESS = 5000


def wait_until(predicate, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def start_endless(server, cat_png, svc, **call) -> tuple[grpc.Future, threading.Thread]:
    """Start a dream that would run for minutes; returns once it is on the device."""
    client = server.client()
    call_ = client.stub.Dream(svc.small_request(cat_png, octaves=1, steps=ENDLESS), **call)
    errors: list[grpc.RpcError] = []

    def drain() -> None:
        try:
            for _ in call_:
                pass
        except grpc.RpcError as exc:
            errors.append(exc)

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    wait_until(lambda: server.sample("dream_in_flight") == 1 or not thread.is_alive())
    call_.errors = errors  # type: ignore[attr-defined]
    return call_, thread


def test_cancel_frees_the_worker_and_is_counted(dream_server, cat_png, svc):
    server = dream_server(queue_size=1)
    call, thread = start_endless(server, cat_png, svc)
    call.cancel()
    thread.join(timeout=30)
    with server.client() as client:
        updates = list(client.dream(svc.small_request(cat_png), timeout=120))
    assert updates[-1].HasField("result")
    assert server.sample("dream_job_seconds_count",
                         {"backbone": "efficientnet_lite0", "kind": "dream", "outcome": "cancelled"}) == 1
    gc.collect()  # nothing holds on to a finished or cancelled job and its tensors
    assert not [o for o in gc.get_objects() if type(o) is PreparedJob]
    metrics = server.metrics()
    assert ('grpc_server_handled_total{grpc_code="Canceled",grpc_method="Dream",'
            'grpc_service="dreamsuite.v1.DreamService",grpc_type="server_stream"} 1.0') in metrics


def test_expired_deadline_gives_deadline_exceeded(dream_server, cat_png, svc):
    server = dream_server(queue_size=0)
    with server.client() as client:
        svc.expect_code(lambda: list(client.dream(
            svc.small_request(cat_png, octaves=1, steps=ENDLESS), timeout=1.5)),
            grpc.StatusCode.DEADLINE_EXCEEDED)
        # queue_size=0: this is only accepted once the expired dream has left the device.
        wait_until(lambda: server.sample("dream_in_flight") == 0)
        assert list(client.dream(svc.small_request(cat_png), timeout=120))[-1].HasField("result")
    assert server.sample("grpc_server_handled_total", {
        "grpc_service": "dreamsuite.v1.DreamService", "grpc_method": "Dream",
        "grpc_type": "server_stream", "grpc_code": "DeadlineExceeded"}) == 1


def _bad_requests(png: bytes, big_png: bytes, svc) -> dict[str, tuple[dream_pb2.DreamRequest, str]]:
    def req(**changes) -> dream_pb2.DreamRequest:
        request = svc.small_request(png)
        for path, value in changes.items():
            *parents, leaf = path.split("__")
            target = request
            for parent in parents:
                target = getattr(target, parent)
            setattr(target, leaf, value)
        return request

    unknown_channel = svc.small_request(png)
    unknown_channel.maplist.layers[0].channels.add(channel=999, weight=1.0)
    nan_weight = svc.small_request(png)
    nan_weight.maplist.layers[0].weight = math.nan
    return {
        "corrupt bytes": (req(image__data=b"\x89PNG not really"), "image"),
        "over the pixel limit": (req(image__data=big_png), "pixels"),
        "unknown backbone": (req(backbone="resnet9000"), "backbone"),
        "unknown layer": (_layer(png, svc), "maplist.layers[0]"),
        "unknown channel": (unknown_channel, "channel"),
        "zero octaves": (req(schedule__octaves=0), "octaves"),
        "NaN step size": (req(schedule__step_size=math.nan), "step_size"),
        "infinite tv": (req(regularisers__tv=math.inf), "tv"),
        "NaN layer weight": (nan_weight, "maplist.layers[0].weight"),
        "empty request": (dream_pb2.DreamRequest(), "image"),
        "unknown enum value": (req(guidance__mode=42), "guidance.mode"),
    }


def _layer(png: bytes, svc) -> dream_pb2.DreamRequest:
    request = svc.small_request(png)
    request.maplist.layers[0].layer = "block_99"
    return request


def test_each_bad_input_is_invalid_argument_naming_the_field(dream_server, cat_png, svc):
    server = dream_server(max_pixels=100 * 100)
    big = encode_png(sample_image("rocket", size=128))
    with server.client() as client:
        for case, (request, field) in _bad_requests(cat_png, big, svc).items():
            error = svc.expect_code(lambda r=request: list(client.dream(r, timeout=60)),
                                    grpc.StatusCode.INVALID_ARGUMENT)
            assert field in error.details(), (case, error.details())
            assert server.health() == SERVING, case
        assert list(client.dream(svc.small_request(cat_png), timeout=120))[-1].HasField("result")
    # Refused before the queue: none of them reached the device worker.
    assert server.sample("dream_job_seconds_count",
                         {"backbone": "efficientnet_lite0", "kind": "dream", "outcome": "error"}) == 0


def test_more_dreams_than_capacity_are_resource_exhausted(dream_server, cat_png, svc):
    server = dream_server(queue_size=0)
    call, thread = start_endless(server, cat_png, svc)
    with server.client() as client:
        error = svc.expect_code(lambda: list(client.dream(svc.small_request(cat_png))),
                                grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "at capacity" in error.details()
    # Each refusal says when to come back; the suite's client honoured it and retried.
    pushback = dict(error.trailing_metadata() or ())["grpc-retry-pushback-ms"]
    assert 100 <= int(pushback) <= 60_000
    assert server.sample("dream_rejected_total") == RETRY_POLICY["maxAttempts"]
    call.cancel()
    thread.join(timeout=30)


def test_out_of_memory_is_resource_exhausted_and_the_client_retries_it(
        dream_server, cat_png, svc, monkeypatch):
    """A device running out of memory is load, not a bug: RESOURCE_EXHAUSTED with a retry
    hint, which the suite's client honours (the retried dream arrives)."""
    from services.dream import runner

    real_run = runner.DreamRun.run
    attempts = []

    def out_of_memory_once(self, *args, **kwargs):
        attempts.append(1)
        if len(attempts) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(runner.DreamRun, "run", out_of_memory_once)
    server = dream_server(batching="off")
    with server.client() as client:
        updates = list(client.dream(svc.small_request(cat_png), timeout=120))
    assert updates[-1].HasField("result")
    assert len(attempts) == 2
    assert ('grpc_server_handled_total{grpc_code="ResourceExhausted",grpc_method="Dream",'
            'grpc_service="dreamsuite.v1.DreamService",grpc_type="server_stream"} 1.0'
            ) in server.metrics()
    # Without the retry, the caller reads why and when to come back.
    attempts.clear()
    with grpc.insecure_channel(server.address) as channel:
        stub = dream_pb2_grpc.DreamServiceStub(channel)
        error = svc.expect_code(lambda: list(stub.Dream(svc.small_request(cat_png), timeout=120)),
                                grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "ran out of memory" in error.details()
    assert int(dict(error.trailing_metadata())["grpc-retry-pushback-ms"]) >= 100


def test_out_of_memory_while_planning_is_resource_exhausted_too(dream_server, cat_png, svc,
                                                               monkeypatch):
    """Planning runs on the device as well (neuron selection, guide features)."""
    from services.dream import runner

    real_prepare = runner.prepare_dream
    attempts = []

    def out_of_memory_once(*args, **kwargs):
        attempts.append(1)
        if len(attempts) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB (injected)")
        return real_prepare(*args, **kwargs)

    monkeypatch.setattr(runner, "prepare_dream", out_of_memory_once)
    server = dream_server(batching="off")
    with server.client() as client:
        assert list(client.dream(svc.small_request(cat_png), timeout=120))[-1].HasField("result")
    assert len(attempts) == 2
    assert ('grpc_server_handled_total{grpc_code="ResourceExhausted",grpc_method="Dream",'
            'grpc_service="dreamsuite.v1.DreamService",grpc_type="server_stream"} 1.0'
            ) in server.metrics()


def test_a_batch_that_fails_as_a_whole_fails_each_of_its_dreams(dream_server, cat_png, svc,
                                                                monkeypatch):
    """A bug outside any one dream's steps still ends every dream of the batch with an error,
    none is left waiting for an answer, and the next dreams run."""
    from services.dream import runner

    def broken(*args, **kwargs):
        raise ValueError("the batch broke (injected)")

    monkeypatch.setattr(runner, "dream_together", broken)
    server = dream_server(batching="always", max_batch=2, batch_window_ms=2000, queue_size=2)
    errors: list[grpc.RpcError] = []

    def one() -> None:
        with server.client() as client:
            try:
                list(client.dream(svc.small_request(cat_png), timeout=60))
            except grpc.RpcError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert [e.code() for e in errors] == [grpc.StatusCode.INTERNAL] * 2
    assert server.sample("dream_batch_size_sum") == 2  # they were one batch
    monkeypatch.undo()
    with server.client() as client:
        assert list(client.dream(svc.small_request(cat_png), timeout=120))[-1].HasField("result")


def test_bearer_token(dream_server, svc):
    from services.common.config import ServerConfig

    server = dream_server(server=ServerConfig(host="127.0.0.1", port=0, metrics_port=0,
                                              token="s3cret", grace_seconds=0))
    for token in (None, "wrong"):
        with server.client(token=token or "") as client:
            error = svc.expect_code(lambda: _raw_list(client), grpc.StatusCode.UNAUTHENTICATED)
            assert "bearer token" in error.details()
    with server.client(token="s3cret") as client:
        assert "efficientnet_lite0" in [b.name for b in client.list_backbones().backbones]
    assert server.health() == SERVING  # probes need no token
    assert server.sample("grpc_server_handled_total", {
        "grpc_service": "dreamsuite.v1.DreamService", "grpc_method": "ListBackbones",
        "grpc_type": "unary", "grpc_code": "Unauthenticated"}) == 2


def test_metrics_endpoint_shows_every_family(dream_server, cat_png, svc):
    server = dream_server()
    with server.client() as client:
        list(client.dream(svc.small_request(cat_png), timeout=120))
    text = server.metrics()
    for family in ("grpc_server_started_total", "grpc_server_handled_total",
                   "grpc_server_handling_seconds_bucket", "dream_octave_seconds_bucket",
                   "dream_job_seconds_bucket", "dream_queue_depth", "dream_in_flight",
                   "dream_device_memory_bytes", "dream_artifact_store_seconds_bucket",
                   "dream_artifact_store_errors_total"):
        assert f"\n{family}" in text or f"# TYPE {family}" in text, family
    assert 'grpc_server_handling_seconds_bucket{grpc_method="Dream"' in text
    assert 'le="1800.0"' in text  # handling-time buckets reach minutes
    assert 'grpc_code="OK",grpc_method="Dream"' in text


def test_s3_unreachable_gives_unavailable_then_recovers(dream_server, s3, cat_png, svc):
    server = dream_server(artifacts=svc.s3_url(s3.endpoint, "recover", retries="2"))
    with server.client() as client:
        first = list(client.dream(svc.small_request(cat_png), timeout=120))[-1]
        assert first.result.artifact.uri.startswith("s3://recover/")
        s3.stop()
        error = svc.expect_code(lambda: list(client.dream(svc.small_request(cat_png, steps=3),
                                                          timeout=120)),
                                grpc.StatusCode.UNAVAILABLE)
        assert "artifact store" in error.details() and "after 2 attempts" in error.details()
        assert server.health() == SERVING
        assert server.sample("dream_artifact_store_errors_total", {"operation": "put"}) >= 1
        s3.start()
        result = list(client.dream(svc.small_request(cat_png, steps=3), timeout=120))[-1]
        assert result.result.artifact.uri.startswith("s3://recover/")


def test_graceful_shutdown_lets_a_dream_finish_then_refuses(dream_server, cat_png, svc):
    server = dream_server()
    with server.client() as client:
        updates = client.dream(svc.small_request(cat_png, octaves=2, steps=30), timeout=120)
        first = next(updates)
        stopper = threading.Thread(target=server.stop, kwargs={"grace": 60})
        stopper.start()
        rest = list(updates)
        stopper.join(timeout=90)
    assert first.octave == 0 and rest[-1].HasField("result")
    with server.client() as client:
        svc.expect_code(lambda: _raw_list(client), grpc.StatusCode.UNAVAILABLE)
    health = server.server.running.health
    status = asyncio.run(health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), None))
    assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_shutdown_cancels_dreams_that_outlive_the_grace_period(dream_server, cat_png, svc):
    server = dream_server()
    call, thread = start_endless(server, cat_png, svc)
    started = time.monotonic()
    server.stop(grace=0.5)  # returns only once the device worker is free again
    thread.join(timeout=30)
    assert time.monotonic() - started < 60
    assert call.errors and call.errors[0].code() in (grpc.StatusCode.CANCELLED,
                                                     grpc.StatusCode.UNAVAILABLE)
    assert server.sample("dream_job_seconds_count",
                         {"backbone": "efficientnet_lite0", "kind": "dream", "outcome": "cancelled"}) == 1


def test_image_by_artifact_uri_and_missing_artifact(dream_server, cat_png, svc):
    server = dream_server()
    with server.client() as client:
        first = list(client.dream(svc.small_request(cat_png), timeout=120))[-1].result
        request = svc.small_request(b"")
        request.image.CopyFrom(common_pb2.ImageRef(uri=first.input_artifact.uri))
        again = list(client.dream(request, timeout=120))[-1].result
        assert again.artifact.uri == first.artifact.uri  # same input, same seed: same dream
        request.image.uri = first.input_artifact.uri.replace(first.input_artifact.sha256[:8],
                                                             "00000000")
        error = svc.expect_code(lambda: list(client.dream(request, timeout=60)),
                                grpc.StatusCode.NOT_FOUND)
        assert "image" in error.details()


def _raw_list(client, timeout=30):
    """``ListBackbones`` on the client's stub: the raw status code, not the library error."""
    from dreamsuite.v1 import dream_pb2

    return client.stub.ListBackbones(dream_pb2.ListBackbonesRequest(), timeout=timeout,
                                     metadata=client.metadata)
