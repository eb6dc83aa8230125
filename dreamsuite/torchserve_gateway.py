"""A key-checking gateway to TorchServe's management API, for TorchServe in containers.

TorchServe 0.12 takes no keys from outside: with token authorization on it generates new keys
at every start, one set per replica, and asks for them on the inference API too, which the
guide and dream services reach through one headless Service. So in compose and Kubernetes
TorchServe keeps token authorization off (its inference API is admitted to those two services
only), listens for management on loopback, and this gateway, beside it in the same pod (or
network namespace), is the management API the network sees:

- every request must carry ``Authorization: Bearer KEY``, the management key of the suite (a
  Secret shared with the GAN service only); anything else gets 401;
- it forwards the request to TorchServe's loopback management API, with TorchServe's own
  management key when that has token authorization on (``upstream_key_file``);
- ``PUT /dreamsuite/archives/NAME.mar`` writes an archive into this replica's model store, so
  a registration of ``NAME.mar`` finds it (:func:`upload_archive`): the GAN service publishes
  to replicas that share no folder with it.

Run it as ``python -m dreamsuite.torchserve_gateway --listen 0.0.0.0:8081 --upstream
http://127.0.0.1:8085 --model-store DIR`` with the key in ``--key-file`` or
``DREAMSUITE_TORCHSERVE_MANAGEMENT_KEY``.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from dreamsuite.errors import Unavailable
from dreamsuite.torchserve import MODEL_NAME, read_management_key

__all__ = ["ARCHIVES_PATH", "KEY_ENV", "Gateway", "upload_archive", "main"]

log = logging.getLogger(__name__)

#: Where the gateway takes archives (``PUT ARCHIVES_PATH + NAME.mar``).
ARCHIVES_PATH = "/dreamsuite/archives/"
KEY_ENV = "DREAMSUITE_TORCHSERVE_MANAGEMENT_KEY"
_MAX_ARCHIVE_BYTES = 4 * 1024**3


class Gateway(ThreadingHTTPServer):
    """The gateway on ``listen`` (HOST, PORT); ``key()`` is read at every request."""

    daemon_threads = True

    def __init__(self, listen: tuple[str, int], *, upstream: str, key: Callable[[], str],
                 model_store: Path | None = None, upstream_key: Callable[[], str | None] = None,
                 timeout: float = 600.0):
        super().__init__(listen, _Handler)
        self.upstream = upstream.rstrip("/")
        self.key = key
        self.upstream_key = upstream_key or (lambda: None)
        self.model_store = model_store
        self.timeout = timeout

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: Gateway

    def _authorised(self) -> bool:
        given = self.headers.get("Authorization", "")
        key = self.server.key()  # an empty key (an empty key file) admits nobody
        return bool(key) and hmac.compare_digest(given.encode(), f"Bearer {key}".encode())

    def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 <= length <= _MAX_ARCHIVE_BYTES:  # -1 read to the end of the stream
            raise ValueError("too large")
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        if not self._authorised():
            self._answer(401, b'{"message": "the management key is missing or wrong"}')
            return
        try:
            body = self._body()
        except ValueError:
            self._answer(413, b'{"message": "too large"}')
            return
        if not self.path.startswith("/"):  # "@host/..." would send TorchServe's key elsewhere
            self._answer(400, b'{"message": "the path must start with /"}')
            return
        if self.path.startswith(ARCHIVES_PATH):
            self._store_archive(self.path.removeprefix(ARCHIVES_PATH), body)
            return
        request = urllib.request.Request(self.server.upstream + self.path, data=body or None,
                                         method=self.command)
        upstream_key = self.server.upstream_key()
        if upstream_key:
            request.add_header("Authorization", f"Bearer {upstream_key}")
        try:
            with urllib.request.urlopen(request, timeout=self.server.timeout) as reply:
                status, answer = reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            status, answer = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            status, answer = 502, f'{{"message": "TorchServe is unreachable: {exc}"}}'.encode()
        self._answer(status, answer)

    def _store_archive(self, file_name: str, data: bytes) -> None:
        store = self.server.model_store
        name = file_name.removesuffix(".mar")
        if self.command != "PUT" or store is None:
            self._answer(405, b'{"message": "this gateway takes no archives"}')
            return
        if not file_name.endswith(".mar") or not MODEL_NAME.match(name):
            self._answer(400, b'{"message": "PUT /dreamsuite/archives/NAME.mar"}')
            return
        part = store / f".{file_name}.part"
        part.write_bytes(data)
        part.replace(store / file_name)
        self._answer(200, b'{"status": "stored"}')

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  (stdlib name)
        log.info("%s %s", self.address_string(), format % args)


def upload_archive(management_url: str, name: str, data: bytes, key: str | None, *,
                   timeout: float = 300.0) -> None:
    """Write ``data`` as ``NAME.mar`` into the model store of the replica whose gateway is
    ``management_url``; :class:`Unavailable` when it refuses or is no gateway."""
    request = urllib.request.Request(f"{management_url}{ARCHIVES_PATH}{name}.mar", data=data,
                                     method="PUT")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise Unavailable(f"the management gateway at {management_url} refused the "
                              "archive (401): the management key is missing or wrong") from None
        raise Unavailable(
            f"{management_url} took no archive ({exc.code}): it is no dreamsuite management "
            "gateway (python -m dreamsuite.torchserve_gateway); give the GAN service "
            "--torchserve-model-store, a folder TorchServe reads, instead") from None
    except (urllib.error.URLError, OSError) as exc:
        raise Unavailable(f"TorchServe's management API at {management_url} is unreachable "
                          f"({exc})") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dreamsuite.torchserve_gateway",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="0.0.0.0:8081", help="HOST:PORT (default 0.0.0.0:8081)")
    parser.add_argument("--upstream", default="http://127.0.0.1:8085",
                        help="TorchServe's management API (default http://127.0.0.1:8085)")
    parser.add_argument("--key-file", help=f"a file with the management key (else ${KEY_ENV})")
    parser.add_argument("--upstream-key-file",
                        help="TorchServe's key_file.json, where its token authorization is on")
    parser.add_argument("--model-store", help="TorchServe's model store (takes archives)")
    args = parser.parse_args(argv)
    if args.key_file:
        key = lambda: read_management_key(args.key_file)  # noqa: E731  (read at each request)
    elif os.environ.get(KEY_ENV):
        fixed = os.environ[KEY_ENV]
        key = lambda: fixed  # noqa: E731
    else:
        parser.error(f"give --key-file or ${KEY_ENV}: the gateway never runs without a key")
    upstream_key = (lambda: read_management_key(args.upstream_key_file)) \
        if args.upstream_key_file else None
    host, _, port = args.listen.rpartition(":")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    gateway = Gateway((host or "0.0.0.0", int(port)), upstream=args.upstream, key=key,
                      model_store=Path(args.model_store) if args.model_store else None,
                      upstream_key=upstream_key)
    log.info("management gateway on %s -> %s", args.listen, args.upstream)
    # PID 1 of a container ignores SIGTERM unless it handles it.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=gateway.shutdown).start())
    try:
        gateway.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        gateway.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
