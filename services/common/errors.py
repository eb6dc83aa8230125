"""The one place where library errors become gRPC status codes.

:class:`ErrorMapping` is a server interceptor: a servicer raises
:mod:`dreamsuite.errors` exceptions (or lets the library raise them) and the client receives the
matching status code with the exception's message. Anything else is ``INTERNAL``, logged with
its traceback on the server and never shown to the client.
"""

from __future__ import annotations

import contextlib
import logging

import grpc

from dreamsuite import errors
from dreamsuite.telemetry import wrap_handler

__all__ = ["STATUS_CODES", "status_for", "ErrorMapping"]

log = logging.getLogger(__name__)

#: Library error -> status code; the first matching class wins (subclasses first).
STATUS_CODES: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),  # includes UnknownName
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.WeightsMissing, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.Cancelled, grpc.StatusCode.CANCELLED),
)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and client-facing message for ``exc``."""
    for cls, code in STATUS_CODES:
        if isinstance(exc, cls):
            return code, str(exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the server log"


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
        if code == grpc.StatusCode.INTERNAL:
            log.error("%s failed", method, exc_info=exc)
        else:
            log.info("%s: %s: %s", method, code.name, message)
        await context.abort(code, message)
