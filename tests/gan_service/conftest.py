"""Fixtures shared by the GAN service's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gan_service.test_kube import FakeApi, _serve


@pytest.fixture
def api() -> Iterator[FakeApi]:
    """The fake Kubernetes API server of :mod:`tests.gan_service.test_kube`, on loopback."""
    fake = FakeApi()
    server, thread = _serve(fake)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield fake
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
