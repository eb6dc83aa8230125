"""Client of the dream service: calls only, returning messages or raising library errors.

>>> with DreamClient("localhost:50051") as client:
...     result = client.run(request_from_config(config, image_bytes),
...                         on_update=lambda u: print(u.octave, u.loss))
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import grpc

from dreamsuite.clients import auth_metadata, open_channel
from dreamsuite.errors import InvalidArgument, Unavailable
from dreamsuite.v1 import common_pb2, dream_pb2, dream_pb2_grpc
from dreamsuite.wire.channels import DEFAULT_MAX_MESSAGE_BYTES
from dreamsuite.wire.convert import image_ref, request_from_config
from dreamsuite.wire.status import error_from_rpc

__all__ = ["DreamClient", "request_from_config", "image_ref", "fetch_url", "artifact_bytes"]


class DreamClient:
    """A blocking client of ``DreamService`` (TLS when ``tls_ca`` or ``$DREAMSUITE_TLS_CA`` is
    set; bearer token from ``token`` or ``$DREAMSUITE_TOKEN``)."""

    def __init__(self, target: str, *, token: str | None = None, tls_ca: str | None = None,
                 server_name: str | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES):
        self.target = target
        self.channel = open_channel(target, tls_ca=tls_ca, server_name=server_name,
                                    max_message_bytes=max_message_bytes)
        self.stub = dream_pb2_grpc.DreamServiceStub(self.channel)
        self.metadata = auth_metadata(token)

    def dream(self, request: dream_pb2.DreamRequest, *,
              timeout: float | None = None) -> Iterator[dream_pb2.DreamUpdate]:
        """The raw stream of updates, one per octave (``grpc.RpcError`` on failure); closing
        the iterator cancels the call."""
        call = self.stub.Dream(request, timeout=timeout, metadata=self.metadata)
        try:
            yield from call
        finally:
            call.cancel()

    def run(self, request: dream_pb2.DreamRequest, *,
            on_update: Callable[[dream_pb2.DreamUpdate], None] | None = None,
            timeout: float | None = None) -> dream_pb2.DreamResult:
        """Follow a dream to its end: ``on_update`` sees every update; returns the result or
        raises the library error the status code names."""
        result = None
        try:
            for update in self.dream(request, timeout=timeout):
                if on_update is not None:
                    on_update(update)
                if update.HasField("result"):
                    result = update.result
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.target) from None
        if result is None:
            raise Unavailable(f"{self.target}: the dream service ended the stream without a "
                              "result")
        return result

    def list_backbones(self, *, timeout: float | None = 30) -> dream_pb2.ListBackbonesResponse:
        try:
            return self.stub.ListBackbones(dream_pb2.ListBackbonesRequest(), timeout=timeout,
                                           metadata=self.metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.target) from None

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> DreamClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fetch_url(url: str, *, timeout: float = 60) -> bytes:
    """GET a presigned ``http(s)://`` URL, or read a ``file://`` URL of a local store."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)).read_bytes()
    if parsed.scheme not in ("http", "https"):
        raise InvalidArgument(f"cannot fetch {url!r}")
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (checked above)
        return response.read()


def artifact_bytes(inline: bytes, artifact: common_pb2.Artifact) -> bytes:
    """An image sent inline, or else fetched from its artifact's presigned URL."""
    return inline or fetch_url(artifact.presigned_url)
