"""Shared fixtures: the embedded backbone, small sample images, and a real S3 endpoint.

The engine fixtures are session-scoped and read-only: tests that need to change an image clone
it. ``s3`` is a moto S3 server on loopback (a real HTTP S3 endpoint, reached through the same
``minio`` client code as MinIO), fresh for each test.
"""

from __future__ import annotations

import datetime
import ipaddress
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
import torch
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from dreamsuite.backbones import WEIGHTS_ENV, Backbone, get_backbone, loaded
from dreamsuite.clients import open_channel
from dreamsuite.clients.dream import DreamClient
from dreamsuite.defaults import DEFAULT_BACKBONE
from dreamsuite.images import encode_png, sample_image
from dreamsuite.v1 import common_pb2, dream_pb2
from services.common.config import ServerConfig
from services.common.loop_thread import LoopThread
from services.dream.config import DreamServiceConfig
from services.dream.server import SERVICE_NAME, DreamServer, start_dream_server

#: The embedded backbone with real ImageNet weights; every dream test uses it.
EMBEDDED = DEFAULT_BACKBONE


@pytest.fixture(scope="session")
def lite0() -> Backbone:
    """EfficientNet-Lite0 with its real (embedded) weights, on the CPU."""
    return get_backbone(EMBEDDED, device="cpu")


@pytest.fixture(scope="session")
def chelsea() -> torch.Tensor:
    """scikit-image's cat, shorter side 96 px, ``[3, 96, 144]``."""
    return sample_image("chelsea", size=96)


@pytest.fixture(scope="session")
def coffee() -> torch.Tensor:
    """scikit-image's espresso cup, shorter side 96 px, ``[3, 96, 128]``."""
    return sample_image("coffee", size=96)


@pytest.fixture(scope="session")
def astronaut() -> torch.Tensor:
    """scikit-image's astronaut, ``[3, 96, 96]``."""
    return sample_image("astronaut", size=96)


@pytest.fixture(scope="session")
def rocket() -> torch.Tensor:
    """scikit-image's rocket, shorter side 96 px."""
    return sample_image("rocket", size=96)


@pytest.fixture
def isolated_weights(tmp_path, monkeypatch):
    """Empty weights directory and torch hub cache, and a fresh backbone cache."""
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    monkeypatch.setenv(WEIGHTS_ENV, str(weights_dir))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(loaded, "_CACHE", {})
    return weights_dir


class S3Endpoint:
    """A moto S3 server on a loopback port that a test can take down and bring back."""

    def __init__(self) -> None:
        self._server = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        """``host:port`` for ``s3://bucket?endpoint=...``."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> S3Endpoint:
        """Start (again, on the same port once it has one)."""
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.port = int(self._server.get_host_and_port()[1])
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@pytest.fixture
def s3(monkeypatch) -> Iterator[S3Endpoint]:
    """A fresh S3 endpoint with test credentials in the environment; stopped afterwards."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "dreamsuite-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "dreamsuite-secret")
    endpoint = S3Endpoint().start()
    yield endpoint
    endpoint.stop()


# --- real dream servers on loopback (dream service, common server, fuzz tests) -------------


class ServerThread:
    """A dream server on its own event loop in a daemon thread."""

    def __init__(self, config: DreamServiceConfig, **kwargs):
        self.loop = LoopThread()
        self.registry = CollectorRegistry()
        self.server: DreamServer = self.call(
            start_dream_server(config, registry=self.registry, **kwargs))
        self.stopped = False

    def call(self, coro, timeout: float = 120):
        return self.loop.run(coro, timeout)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def client(self, **kwargs) -> DreamClient:
        return DreamClient(self.address, **kwargs)

    def health(self, service: str = SERVICE_NAME, **kwargs) -> int:
        with open_channel(self.address, **kwargs) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.server.running.metrics.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value

    def stop(self, grace: float = 0) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.call(self.server.stop(grace))
        self.loop.close()


@pytest.fixture
def dream_server(tmp_path) -> Iterator[Callable[..., ServerThread]]:
    """``dream_server(**config_fields)`` starts a server on a free loopback port, CPU, metrics on
    a free port and a local store under ``tmp_path`` unless told otherwise."""
    started: list[ServerThread] = []

    def start(*, server: ServerConfig | None = None, guide_provider=None, **fields) -> ServerThread:
        base = DreamServiceConfig(
            server=server or ServerConfig(host="127.0.0.1", port=0, metrics_host="127.0.0.1",
                                          metrics_port=0, grace_seconds=0),
            artifacts=(tmp_path / "artifacts").as_uri(), device="cpu", queue_size=2)
        thread = ServerThread(replace(base, **fields), guide_provider=guide_provider)
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.stop()


@pytest.fixture(scope="session")
def cat_png() -> bytes:
    """scikit-image's cat as a 96x64 PNG."""
    return encode_png(sample_image("chelsea", size=64))


def small_request(image: bytes, *, octaves: int = 2, steps: int = 2,
                  **output) -> dream_pb2.DreamRequest:
    """A quick dream: the embedded backbone, few octaves and steps."""
    return dream_pb2.DreamRequest(
        image=common_pb2.ImageRef(data=image),
        backbone="efficientnet_lite0",
        maplist=common_pb2.Maplist(layers=[common_pb2.LayerTerm(layer="block_6")]),
        schedule=dream_pb2.OctaveSchedule(octaves=octaves, steps=steps, octave_scale=1.3),
        regularisers=dream_pb2.Regularisers(jitter=4),
        seed=7,
        output=dream_pb2.OutputOptions(**output),
    )


def expect_code(fn: Callable[[], object], code: grpc.StatusCode) -> grpc.RpcError:
    """Run ``fn`` and return the RpcError it must raise with ``code``."""
    with pytest.raises(grpc.RpcError) as info:
        fn()
    assert info.value.code() == code, info.value.details()
    return info.value


def s3_url(endpoint: str, bucket: str, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"endpoint": endpoint, "secure": "false",
                                              **params}.items())
    return f"s3://{bucket}?{query}"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for ``localhost`` and ``127.0.0.1`` (it is its own CA) and its
    key, as PEM files ``cert.pem`` and ``key.pem`` in ``folder``."""
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
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def tls_pair(tmp_path) -> tuple[Path, Path]:
    """``(cert.pem, key.pem)``: a self-signed certificate for 127.0.0.1 and its key."""
    return self_signed(tmp_path / "tls")


@pytest.fixture(scope="session")
def svc() -> SimpleNamespace:
    """The helpers above, for test modules (conftest is not importable under importlib mode)."""
    return SimpleNamespace(small_request=small_request, expect_code=expect_code,
                           s3_url=s3_url, self_signed=self_signed)
