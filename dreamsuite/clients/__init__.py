"""gRPC clients of the suite's services: calls only, each returning values or raising the
library error that the status code names (:mod:`dreamsuite.wire.status`).

Message limits are set explicitly on both ends: servers and clients use the same
:data:`dreamsuite.wire.DEFAULT_MAX_MESSAGE_BYTES` unless configured otherwise. Channels balance
round-robin over every address a target resolves to and retry refused calls
(:data:`dreamsuite.wire.channels.RETRY_POLICY`) unless told not to.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import grpc

from dreamsuite.errors import InvalidArgument
from dreamsuite.wire.channels import DEFAULT_MAX_MESSAGE_BYTES, channel_options

__all__ = [
    "TOKEN_ENV",
    "TLS_CA_ENV",
    "open_channel",
    "auth_metadata",
    "tls_credentials",
]

#: Bearer token a client sends (``authorization: Bearer <token>``) when set.
TOKEN_ENV = "DREAMSUITE_TOKEN"
#: PEM file of the CA (or self-signed certificate) that makes a client use TLS.
TLS_CA_ENV = "DREAMSUITE_TLS_CA"


def tls_credentials(tls_ca: str | os.PathLike | None) -> grpc.ChannelCredentials | None:
    """TLS credentials trusting the PEM file ``tls_ca``; :class:`InvalidArgument` naming the
    file when it cannot be read or holds no certificate (a traceback before; a file of junk
    was only seen as every server being unreachable)."""
    if tls_ca is None:
        return None
    try:
        pem = Path(tls_ca).read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"TLS CA file {str(tls_ca)!r} (${TLS_CA_ENV}): "
                              f"{exc.strerror or exc}") from None
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise InvalidArgument(f"TLS CA file {str(tls_ca)!r} (${TLS_CA_ENV}) holds "
                              "no PEM certificate")
    return grpc.ssl_channel_credentials(root_certificates=pem)


def open_channel(target: str, *, tls_ca: str | os.PathLike | None = None,
                 server_name: str | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 retries: bool = True, aio: bool = False):
    """A channel to ``target`` (``host:port``, or ``dns:///host:port`` for every address):
    TLS when ``tls_ca`` is given (default ``$DREAMSUITE_TLS_CA``), plaintext otherwise;
    round-robin over the addresses; calls to the suite's services that end ``UNAVAILABLE`` or
    ``RESOURCE_EXHAUSTED`` tried again with backoff (or the server's pushback) unless
    ``retries=False``; ``aio=True`` for a ``grpc.aio`` channel."""
    tls_ca = tls_ca if tls_ca is not None else (os.environ.get(TLS_CA_ENV) or None)
    options = channel_options(max_message_bytes, server_name, round_robin=True,
                              retries=retries)
    credentials = tls_credentials(tls_ca)
    module = grpc.aio if aio else grpc
    if credentials is None:
        return module.insecure_channel(target, options=options)
    return module.secure_channel(target, credentials, options=options)


def auth_metadata(token: str | None = None) -> Sequence[tuple[str, str]]:
    """Call metadata carrying the bearer token (default ``$DREAMSUITE_TOKEN``), if any."""
    token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
    return (("authorization", f"Bearer {token}"),) if token else ()
