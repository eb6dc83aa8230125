"""The management gateway refuses requests that would take TorchServe's key elsewhere or read
without end (no TorchServe needed: nothing may reach it)."""

from __future__ import annotations

import http.client
import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from dreamsuite.torchserve_gateway import Gateway


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        _Recorder.seen.append(self.headers.get("Authorization", ""))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


def _serve(server) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def servers() -> Iterator[tuple[Gateway, http.server.HTTPServer]]:
    elsewhere = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    with socket.socket() as s:  # the gateway's upstream: never reached in these tests
        s.bind(("127.0.0.1", 0))
        upstream = f"http://127.0.0.1:{s.getsockname()[1]}"
    gateway = Gateway(("127.0.0.1", 0), upstream=upstream, key=lambda: "suite-key",
                      upstream_key=lambda: "torchserve-secret")
    for server in (elsewhere, gateway):
        _serve(server)
    _Recorder.seen = []
    yield gateway, elsewhere
    for server in (elsewhere, gateway):
        server.shutdown()
        server.server_close()


def _raw(gateway: Gateway, path: str, headers: dict[str, str]) -> int:
    connection = http.client.HTTPConnection(*gateway.server_address, timeout=10)
    try:
        connection.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        for name, value in {"Authorization": "Bearer suite-key", **headers}.items():
            connection.putheader(name, value)
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def test_a_path_that_names_another_host_is_refused_and_the_key_stays_home(servers):
    """``GET @host:port/`` was forwarded to ``upstream + path``: a URL whose host is
    ``host:port``, with TorchServe's management key."""
    gateway, elsewhere = servers
    status = _raw(gateway, f"@127.0.0.1:{elsewhere.server_address[1]}/models", {})
    assert status == 400
    assert _Recorder.seen == []


def test_a_negative_content_length_is_refused(servers):
    """``Content-Length: -1`` passed the size check and was read to the end of the stream."""
    gateway, _ = servers
    assert _raw(gateway, "/models", {"Content-Length": "-1"}) == 413
