"""The shared server bootstrap: TLS, reflection, health names, message limits, flags and the
error -> status mapping."""

from __future__ import annotations

import datetime
import ipaddress

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from dreamsuite import errors
from dreamsuite.cli import build_parser
from dreamsuite.clients import open_channel
from dreamsuite.wire.status import status_for
from services.common.config import ServerConfig
from services.dream.config import config_from_args
from services.dream.server import SERVICE_NAME


def _self_signed(tmp_path) -> tuple:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.mark.slow
def test_tls_with_token(dream_server, tmp_path, svc):
    cert, key = _self_signed(tmp_path)
    server = dream_server(server=ServerConfig(host="127.0.0.1", port=0, metrics_port=0,
                                              tls_cert=cert, tls_key=key, token="t0ken",
                                              grace_seconds=0))
    with server.client(tls_ca=str(cert), token="t0ken") as client:
        assert client.list_backbones().backbones
    assert server.health(tls_ca=str(cert)) == 1
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
    assert server.health("") == server.health(SERVICE_NAME) == 1
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
    import asyncio

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
