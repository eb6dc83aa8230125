"""The clients' service config on a real loopback server: refused calls to the suite's services
are retried with the server's pushback, load-test users and servers never retry, and every
channel balances round-robin."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest

from dreamsuite.clients import open_channel
from dreamsuite.loadtest.connect import user_channel
from dreamsuite.v1 import activations_pb2, common_pb2, dream_pb2, gan_pb2, guide_pb2, style_pb2
from dreamsuite.wire.channels import (
    RETRY_POLICY,
    SUITE_SERVICES,
    channel_options,
    service_config,
)

SELECT = "/dreamsuite.v1.GuideService/SelectNeurons"
DREAM = "/dreamsuite.v1.DreamService/Dream"
START_TRAINING = "/dreamsuite.v1.GanService/StartTraining"
PUBLISH_MODEL = "/dreamsuite.v1.GanService/PublishModel"
# Longer than the first backoff (0.5 s, jittered) can be: only the pushback explains the wait.
PUSHBACK_MS = 700
FULL = grpc.StatusCode.RESOURCE_EXHAUSTED


class Refusing:
    """Answers ``RESOURCE_EXHAUSTED`` (with ``pushback_ms`` in the trailers) to the first
    ``refuse`` attempts, then echoes the request (unary) or streams it back twice."""

    # 1 ms, not 0: with grpcio 1.85 a pushback of 0 ms stalls the retry until the deadline.
    def __init__(self, refuse: int, pushback_ms: int = 1):
        self.refuse = refuse
        self.pushback_ms = pushback_ms
        self.attempts: list[float] = []

    def _attempt(self, context: grpc.ServicerContext) -> None:
        self.attempts.append(time.monotonic())
        if len(self.attempts) <= self.refuse:
            context.set_trailing_metadata((("grpc-retry-pushback-ms", str(self.pushback_ms)),))
            context.abort(FULL, "the queue is full")

    def unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._attempt(context)
        return request

    def stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        self._attempt(context)
        yield request
        yield request


def _serve(methods: dict[str, Callable[[Refusing], grpc.RpcMethodHandler]],
           behaviour: Refusing) -> tuple[grpc.Server, str]:
    by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for path, make in methods.items():
        service, method = path.strip("/").split("/")
        by_service.setdefault(service, {})[method] = make(behaviour)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    for service, handlers in by_service.items():
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def _unary(b: Refusing) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(b.unary)


def _stream(b: Refusing) -> grpc.RpcMethodHandler:
    return grpc.unary_stream_rpc_method_handler(b.stream)


@pytest.fixture
def serve():
    servers: list[grpc.Server] = []

    def start(behaviour: Refusing, methods=None) -> str:
        server, address = _serve(methods or {SELECT: _unary, DREAM: _stream,
                                             START_TRAINING: _unary, PUBLISH_MODEL: _unary},
                                 behaviour)
        servers.append(server)
        return address

    yield start
    for server in servers:
        server.stop(None)


def test_a_refused_call_is_retried_after_the_servers_pushback(serve):
    behaviour = Refusing(refuse=1, pushback_ms=PUSHBACK_MS)
    with open_channel(serve(behaviour)) as channel:
        started = time.monotonic()
        reply = channel.unary_unary(SELECT)(b"neurons", timeout=10)
        elapsed = time.monotonic() - started
    assert reply == b"neurons"
    assert len(behaviour.attempts) == 2
    assert behaviour.attempts[1] - behaviour.attempts[0] >= PUSHBACK_MS / 1000 - 0.01
    assert elapsed >= PUSHBACK_MS / 1000


def test_a_request_above_the_default_retry_buffer_is_retried_too(serve):
    behaviour = Refusing(refuse=1)
    image = bytes(1024 * 1024)  # > gRPC's 256 KiB default, which would commit the call
    with open_channel(serve(behaviour)) as channel:
        assert channel.unary_unary(SELECT)(image, timeout=10) == image
    assert len(behaviour.attempts) == 2


def test_a_dream_refused_before_its_first_update_is_retried(serve):
    behaviour = Refusing(refuse=1)
    with open_channel(serve(behaviour)) as channel:
        updates = list(channel.unary_stream(DREAM)(b"dream", timeout=10))
    assert updates == [b"dream", b"dream"]
    assert len(behaviour.attempts) == 2


def test_a_dream_unavailable_before_its_first_update_is_not_replayed(serve):
    attempts = []

    def stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        attempts.append(request)
        context.abort(grpc.StatusCode.UNAVAILABLE, "the server is stopping")
        yield request

    address = serve(Refusing(0), {DREAM: lambda _: grpc.unary_stream_rpc_method_handler(stream)})
    with open_channel(address) as channel, pytest.raises(grpc.RpcError) as caught:
        list(channel.unary_stream(DREAM)(b"dream", timeout=10))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(attempts) == 1


def test_a_dream_that_fails_after_an_update_is_not_run_again(serve):
    attempts = []

    def stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        attempts.append(request)
        yield request
        context.abort(grpc.StatusCode.UNAVAILABLE, "the device worker died")

    address = serve(Refusing(0), {DREAM: lambda _: grpc.unary_stream_rpc_method_handler(stream)})
    with open_channel(address) as channel:
        call = channel.unary_stream(DREAM)(b"dream", timeout=10)
        assert next(call) == b"dream"
        with pytest.raises(grpc.RpcError) as caught:
            next(call)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(attempts) == 1


def test_a_server_that_keeps_refusing_is_tried_max_attempts_times(serve):
    behaviour = Refusing(refuse=100)
    with open_channel(serve(behaviour)) as channel, pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(SELECT)(b"neurons", timeout=10)
    assert caught.value.code() == FULL
    assert len(behaviour.attempts) == RETRY_POLICY["maxAttempts"]


def test_a_negative_pushback_tells_the_client_not_to_retry(serve):
    # How a server refuses for good (e.g. a response over the size cap): pushback -1.
    behaviour = Refusing(refuse=100, pushback_ms=-1)
    with open_channel(serve(behaviour)) as channel, pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(SELECT)(b"neurons", timeout=10)
    assert caught.value.code() == FULL
    assert len(behaviour.attempts) == 1


@pytest.mark.parametrize("opener", [lambda t: open_channel(t, retries=False), user_channel],
                         ids=["open_channel(retries=False)", "loadtest user_channel"])
def test_without_retries_the_first_refusal_is_the_answer(serve, opener):
    behaviour = Refusing(refuse=1)
    with opener(serve(behaviour)) as channel, pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(SELECT)(b"neurons", timeout=10)
    assert caught.value.code() == FULL
    assert len(behaviour.attempts) == 1


@pytest.mark.parametrize("method", [START_TRAINING, PUBLISH_MODEL])
def test_start_training_and_publish_model_are_never_retried(serve, method):
    # A replay would start a second training, or publish (build, register) another version.
    behaviour = Refusing(refuse=1)
    with open_channel(serve(behaviour)) as channel, pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(method)(b"config", timeout=10)
    assert caught.value.code() == FULL
    assert len(behaviour.attempts) == 1
    with open_channel(serve(Refusing(refuse=1))) as channel:  # a retried method, for contrast
        assert channel.unary_unary(SELECT)(b"again", timeout=10) == b"again"


def test_the_service_config_balances_round_robin_and_names_every_suite_service():
    config = json.loads(service_config())
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    retried, dreams, not_retried = config["methodConfig"]
    assert retried["retryPolicy"]["retryableStatusCodes"] == ["RESOURCE_EXHAUSTED", "UNAVAILABLE"]
    assert 2 <= retried["retryPolicy"]["maxAttempts"] <= 5  # gRPC caps it at 5
    # Dreams only when refused for capacity: one cut off by a stopping server is not replayed.
    assert dreams["name"] == [{"service": "dreamsuite.v1.DreamService"},
                              {"service": "dreamsuite.v1.StyleService"}]
    assert dreams["retryPolicy"]["retryableStatusCodes"] == ["RESOURCE_EXHAUSTED"]
    # Every service the protos define, by its full name, so a renamed one breaks this test.
    services = {s.full_name for module in (activations_pb2, common_pb2, dream_pb2, gan_pb2,
                                           guide_pb2, style_pb2)
                for s in module.DESCRIPTOR.services_by_name.values()}
    assert ({n["service"] for n in retried["name"] + dreams["name"]} == set(SUITE_SERVICES)
            == services)
    gan = gan_pb2.DESCRIPTOR.services_by_name["GanService"]
    for name in not_retried["name"]:
        assert name["method"] in gan.methods_by_name and name["service"] == gan.full_name
    assert "retryPolicy" not in not_retried
    assert json.loads(service_config(retries=False)) == {
        "loadBalancingConfig": [{"round_robin": {}}]}


def test_servers_get_no_service_config():
    # services/common/server.py passes channel_options(max_message_bytes) to grpc.aio.server.
    names = {name for name, _ in channel_options(1024)}
    assert names == {"grpc.max_send_message_length", "grpc.max_receive_message_length"}
