"""Shared fixtures: the embedded backbone, small sample images, and a real S3 endpoint.

The engine fixtures are session-scoped and read-only: tests that need to change an image clone
it. ``s3`` is a moto S3 server on loopback (a real HTTP S3 endpoint, reached through the same
``minio`` client code as MinIO), fresh for each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from dreamsuite.backbones import WEIGHTS_ENV, Backbone, get_backbone, loaded
from dreamsuite.images import sample_image

#: The embedded backbone with real ImageNet weights; every dream test uses it.
EMBEDDED = "efficientnet_lite0"


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
