"""Client of the dream service's ``StyleService``: calls only, returning messages or raising
library errors.

>>> with StyleClient("localhost:50051") as client:
...     result = client.run(client.stub.Stylize, stylize_request,
...                         on_progress=lambda p: print(p.iteration, p.loss))
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from dreamsuite.clients import auth_metadata, open_channel
from dreamsuite.errors import Unavailable
from dreamsuite.v1 import style_pb2, style_pb2_grpc
from dreamsuite.wire.status import error_from_rpc

__all__ = ["StyleClient"]


class StyleClient:
    """A blocking client of ``StyleService`` (TLS and token as :func:`open_channel`)."""

    def __init__(self, target: str, *, token: str | None = None):
        self.target = target
        self.channel = open_channel(target)
        self.stub = style_pb2_grpc.StyleServiceStub(self.channel)
        self.metadata = auth_metadata(token)

    def run(self, method, request, *,
            on_progress: Callable[[style_pb2.StyleProgress], None] | None = None,
            timeout: float | None = None) -> style_pb2.StyleResult:
        """Follow ``method`` (``stub.Stylize`` or ``stub.Reconstruct``) to its result."""
        result = None
        call = method(request, timeout=timeout, metadata=self.metadata)
        try:
            for update in call:
                if on_progress is not None and update.HasField("progress"):
                    on_progress(update.progress)
                if update.HasField("result"):
                    result = update.result
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.target) from None
        finally:
            call.cancel()
        if result is None:
            raise Unavailable(f"{self.target}: the stream ended without a result")
        return result

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> StyleClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
