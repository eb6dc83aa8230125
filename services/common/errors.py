"""Library errors become gRPC status codes here, by the one table
(:data:`dreamsuite.wire.status.STATUS_CODES`) that clients read backwards.

:class:`ErrorMapping` is a server interceptor: a servicer raises
:mod:`dreamsuite.errors` exceptions (or lets the library raise them) and the client receives the
matching status code with the exception's message. Anything else is ``INTERNAL``, logged with
its traceback on the server and never shown to the client.
"""

from __future__ import annotations

import contextlib
import logging

import grpc

from dreamsuite.errors import ResourceExhausted
from dreamsuite.wire.status import status_for
from services.common.telemetry import wrap_handler

__all__ = ["ErrorMapping", "PUSHBACK_KEY"]

#: Trailing metadata with the milliseconds a client should wait before retrying (gRPC A6).
PUSHBACK_KEY = "grpc-retry-pushback-ms"

log = logging.getLogger(__name__)


class ErrorMapping(grpc.aio.ServerInterceptor):
    """Turns exceptions escaping a handler into ``context.abort(code, message)``."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        return wrap_handler(handler, lambda context: _map_errors(method, context))


@contextlib.asynccontextmanager
async def _map_errors(method: str, context: grpc.aio.ServicerContext):
    try:
        yield
    except (grpc.aio.AbortError, grpc.RpcError):
        raise
    except Exception as exc:
        code, message = status_for(exc)
        if isinstance(exc, ResourceExhausted):
            # Clients with a retry policy wait this long before their next attempt; a refusal
            # with no retry time is for good (a size cap) and -1 tells them not to retry. 0 ms
            # would stall grpcio's retry until the deadline, hence at least 1.
            retry_after = exc.retry_after
            pushback = "-1" if retry_after is None else str(max(1, round(1000 * retry_after)))
            context.set_trailing_metadata(((PUSHBACK_KEY, pushback),))
        if code == grpc.StatusCode.INTERNAL:
            log.error("%s failed", method, exc_info=exc)
        else:
            log.info("%s: %s: %s", method, code.name, message)
        await context.abort(code, message)
