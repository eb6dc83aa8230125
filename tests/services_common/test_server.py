"""The shared server bootstrap: TLS, reflection, health names, message limits, flags and the
error -> status mapping."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry

from dreamsuite import errors
from dreamsuite.cli import build_parser
from dreamsuite.clients import open_channel
from dreamsuite.wire.status import status_for
from services.common.config import ServerConfig
from services.common.server import ServiceBinding, start_server
from services.dream.config import config_from_args
from services.dream.server import SERVICE_NAME
from tests.conftest import self_signed

SERVING = health_pb2.HealthCheckResponse.SERVING

@pytest.mark.slow
def test_tls_with_token(dream_server, tls_pair, svc):
    cert, key = tls_pair
    server = dream_server(server=ServerConfig(host="127.0.0.1", port=0, metrics_port=0,
                                              tls_cert=cert, tls_key=key, token="t0ken",
                                              grace_seconds=0))
    with server.client(tls_ca=str(cert), token="t0ken") as client:
        names = [b.name for b in client.list_backbones().backbones]
    assert "efficientnet_lite0" in names
    assert server.health(tls_ca=str(cert)) == SERVING
    with server.client(token="t0ken") as plaintext:  # a plaintext client cannot talk to it
        svc.expect_code(lambda: _raw_list(plaintext, timeout=5), grpc.StatusCode.UNAVAILABLE)


@pytest.mark.slow
def test_reflection_health_names_and_message_limit(dream_server, cat_png, svc):
    server = dream_server(server=ServerConfig(host="127.0.0.1", port=0, metrics_port=0,
                                              max_message_bytes=8_000, grace_seconds=0))
    with open_channel(server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        answer = next(stub.ServerReflectionInfo(iter([request]), timeout=10))
        names = {s.name for s in answer.list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names
    assert server.health("") == server.health(SERVICE_NAME) == SERVING
    with server.client() as client:  # the 14 kB image is over the 8 kB limit
        svc.expect_code(lambda: list(client.dream(svc.small_request(cat_png), timeout=30)),
                        grpc.StatusCode.RESOURCE_EXHAUSTED)


def test_flags_read_the_environment_and_flags_win(monkeypatch, tmp_path):
    monkeypatch.setenv("DREAMSUITE_DREAM_PORT", "6001")
    monkeypatch.setenv("DREAMSUITE_QUEUE_SIZE", "9")
    monkeypatch.setenv("DREAMSUITE_ARTIFACTS", str(tmp_path / "store"))
    monkeypatch.setenv("DREAMSUITE_TOKEN", "from-env")
    args = build_parser().parse_args(["serve", "dream", "--queue-size", "3",
                                      "--metrics-port", "-1"])
    config = config_from_args(args)
    assert config.server.port == 6001 and config.queue_size == 3
    assert config.server.metrics_port is None and config.server.token == "from-env"
    assert config.artifacts == (tmp_path / "store").as_uri()
    assert config.preload == ("efficientnet_lite0",)


def test_a_bad_environment_value_only_breaks_its_own_command(monkeypatch, capsys):
    monkeypatch.setenv("DREAMSUITE_QUEUE_SIZE", "many")
    parser = build_parser()
    assert parser.parse_args(["backbones"]).command == "backbones"
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "dream"])
    assert "--queue-size: invalid int value: 'many'" in capsys.readouterr().err


def test_tls_needs_cert_and_key(tmp_path):
    with pytest.raises(errors.InvalidArgument, match="both"):
        ServerConfig(tls_cert=tmp_path / "cert.pem").validate()


@pytest.mark.parametrize(("error", "code"), [
    (errors.InvalidArgument("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (errors.UnknownName("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound("x"), grpc.StatusCode.NOT_FOUND),
    (errors.WeightsMissing("x"), grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ResourceExhausted("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
    (errors.Cancelled("x"), grpc.StatusCode.CANCELLED),
    (RuntimeError("secret detail"), grpc.StatusCode.INTERNAL),
])
def test_status_for(error, code):
    mapped, message = status_for(error)
    assert mapped == code
    assert ("secret" not in message) if code == grpc.StatusCode.INTERNAL else message == "x"


def test_closing_the_dream_runner_closes_its_guide_connection(tmp_path):
    from prometheus_client import CollectorRegistry

    from dreamsuite.artifacts import open_store
    from services.dream.metrics import DreamMetrics
    from services.dream.runner import DreamRunner

    class GuideConnection:
        closed = False

        def guide_weights(self, backbone, weights, guides, layers):
            raise AssertionError("not called")

        def close(self) -> None:
            self.closed = True

    connection = GuideConnection()
    runner = DreamRunner(open_store(tmp_path.as_uri()), DreamMetrics(CollectorRegistry()),
                         device="cpu", guide_provider=connection)
    asyncio.run(runner.close())
    assert connection.closed


def _raw_list(client, timeout=30):
    """``ListBackbones`` on the client's stub: the raw status code, not the library error."""
    from dreamsuite.v1 import dream_pb2

    return client.stub.ListBackbones(dream_pb2.ListBackbonesRequest(), timeout=timeout,
                                     metadata=client.metadata)


def test_health_watchers_see_not_serving_and_do_not_hold_the_shutdown(dream_server):
    server = dream_server()
    with open_channel(server.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=60)
        assert next(watch).status == SERVING
        started = time.monotonic()
        server.stop(grace=30)  # nothing in flight but the watch: returns at once
        assert time.monotonic() - started < 10
        # The watcher hears NOT_SERVING, then its stream ends cleanly.
        assert [reply.status for reply in watch] == [health_pb2.HealthCheckResponse.NOT_SERVING]
        assert watch.code() == grpc.StatusCode.OK


def test_a_watch_ends_with_not_serving_even_when_shutdown_comes_during_a_write():
    from services.common.health import HealthServicer

    async def scenario() -> list[int]:
        servicer, written, gate = HealthServicer(), [], asyncio.Event()

        class Context:  # the first write is still on its way when the shutdown comes
            async def write(self, reply: health_pb2.HealthCheckResponse) -> None:
                written.append(reply.status)
                if len(written) == 1:
                    await gate.wait()

        watch = asyncio.ensure_future(
            servicer.Watch(health_pb2.HealthCheckRequest(service=""), Context()))
        while not written:
            await asyncio.sleep(0)
        await servicer.enter_graceful_shutdown()
        gate.set()
        await asyncio.wait_for(watch, 5)  # it ends by itself
        return written

    assert asyncio.run(scenario()) == [SERVING, health_pb2.HealthCheckResponse.NOT_SERVING]


def _peer_binding():
    """A service with one unary method that answers the caller's address, and one that
    streams a message every 0.1 s for as long as the request says."""

    async def who(request: bytes, context) -> bytes:
        return context.peer().encode()

    async def tick(request: bytes, context):
        for _ in range(int(request.decode())):
            await asyncio.sleep(0.1)
            yield context.peer().encode()

    handler = grpc.method_handlers_generic_handler("test.Peer", {
        "Who": grpc.unary_unary_rpc_method_handler(who),
        "Tick": grpc.unary_stream_rpc_method_handler(tick),
    })
    return ServiceBinding("test.Peer", None,
                          lambda servicer, server: server.add_generic_rpc_handlers((handler,)))


def test_old_connections_are_asked_to_reconnect_without_cutting_calls():
    async def scenario():
        server = await start_server(
            [_peer_binding()],
            ServerConfig(host="127.0.0.1", port=0, max_connection_age_seconds=0.5,
                         grace_seconds=0),
            registry=CollectorRegistry())
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                who = channel.unary_unary("/test.Peer/Who")
                tick = channel.unary_stream("/test.Peer/Tick")
                first = await who(b"", timeout=10)
                # A stream that outlives the connection's age runs to its end on it.
                ticks = [peer async for peer in tick(b"15", timeout=30)]
                later = await who(b"", timeout=10)
        finally:
            await server.stop(0)
        return first, ticks, later

    first, ticks, later = asyncio.run(scenario())
    assert len(ticks) == 15 and set(ticks) == {first}
    assert later != first  # a fresh connection (another client port) after the GOAWAY


def test_max_connection_age_flag_and_its_bounds(monkeypatch):
    monkeypatch.setenv("DREAMSUITE_MAX_CONNECTION_AGE", "60")
    args = build_parser().parse_args(["serve", "dream", "--metrics-port", "-1"])
    assert config_from_args(args).server.max_connection_age_seconds == 60
    with pytest.raises(errors.InvalidArgument, match="max-connection-age"):
        ServerConfig(max_connection_age_seconds=-1).validate()


def test_a_tls_pair_that_is_not_one_is_a_clear_error(tls_pair, tmp_path):
    """Junk or a key that is not the certificate's: gRPC said only "Failed to bind to
    address" (a RuntimeError, printed as a traceback)."""
    cert, key = tls_pair
    _, other_key = self_signed(tmp_path / "other")
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    for bad_cert, bad_key in ((junk, key), (cert, other_key), (cert, junk)):
        config = ServerConfig(host="127.0.0.1", port=0, tls_cert=bad_cert, tls_key=bad_key)
        with pytest.raises(errors.InvalidArgument, match="not a PEM certificate and its"):
            asyncio.run(start_server([_peer_binding()], config, registry=CollectorRegistry()))


def test_a_metrics_port_in_use_is_a_clear_error_and_serves_nothing():
    """The gRPC server had already started, reported SERVING and was never stopped when the
    metrics port turned out to be taken (an OSError traceback)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        grpc_port = _free_port()
        config = ServerConfig(host="127.0.0.1", port=grpc_port, metrics_port=port,
                              metrics_host="127.0.0.1")
        with pytest.raises(errors.InvalidArgument, match=f"--metrics-port {port}"):
            asyncio.run(start_server([_peer_binding()], config, registry=CollectorRegistry()))
    with socket.socket() as probe:  # nothing listens on the gRPC port
        assert probe.connect_ex(("127.0.0.1", grpc_port)) != 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def torch_threads():
    """Leave the test process's torch threads as they were."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_torch_threads_come_from_the_flag_then_omp_then_the_cpus(monkeypatch, torch_threads):
    import torch

    from dreamsuite.cpus import available_cpus
    from services.common.config import apply_torch_threads

    monkeypatch.setenv("DREAMSUITE_TORCH_THREADS", "3")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    for service in ("dream", "gan"):
        args = build_parser().parse_args(["serve", service])
        assert args.torch_threads == 3
    config = config_from_args(build_parser().parse_args(["serve", "dream", "--torch-threads",
                                                         "1"]))
    assert apply_torch_threads(config.server) == (1, "--torch-threads")
    assert torch.get_num_threads() == 1
    assert apply_torch_threads(ServerConfig()) == (2, "OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert apply_torch_threads(ServerConfig()) == (available_cpus(), "available CPUs")
    assert torch.get_num_threads() == available_cpus()
    with pytest.raises(errors.InvalidArgument, match="--torch-threads"):
        ServerConfig(torch_threads=-1).validate()


class _Started(Exception):
    """Raised in place of serving, once the threads were seen."""


@pytest.mark.parametrize("service", ["dream", "gan", "guide"])
def test_each_service_command_sets_its_threads_before_it_serves(service, monkeypatch,
                                                                torch_threads, tmp_path):
    import torch

    seen = []

    async def fake_serve(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise _Started

    torch.set_num_threads(2)
    if service == "guide":
        monkeypatch.setattr("services.guide.server.start_guide_server", fake_serve)
    else:
        monkeypatch.setattr(f"services.{service}.server.serve", fake_serve)
    argv = ["serve", service, "--torch-threads", "1", "--metrics-port", "-1",
            "--artifacts", str(tmp_path / "store")]
    args = build_parser().parse_args(argv)
    with pytest.raises(_Started):
        args.func(args)
    assert seen == [1]
