"""A real S3 endpoint (moto) on loopback for the artifact-store tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto.server import ThreadedMotoServer


@pytest.fixture
def s3_endpoint(monkeypatch) -> Iterator[str]:
    """``host:port`` of a fresh moto S3 server; credentials in the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "artifact-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "artifact-secret")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"{host}:{port}"
    server.stop()
