"""Optional bearer-token authentication for every RPC except the health service.

Clients send ``authorization: Bearer <token>`` metadata
(:func:`dreamsuite.clients.auth_metadata`); a missing or wrong token gives ``UNAUTHENTICATED``.
Health checks stay open so load balancers and Kubernetes gRPC probes need no secret.
"""

from __future__ import annotations

import contextlib
import hmac

import grpc

from services.common.telemetry import wrap_handler

__all__ = ["BearerTokenAuth", "OPEN_PREFIXES"]

#: Methods that need no token.
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


class BearerTokenAuth(grpc.aio.ServerInterceptor):
    """Refuses calls whose ``authorization`` metadata is not ``Bearer <token>``."""

    def __init__(self, token: str):
        if not token:
            raise ValueError("an empty token would accept everyone")
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler_call_details.method.startswith(OPEN_PREFIXES):
            return handler
        given = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                given = value if isinstance(value, str) else value.decode("latin-1")
        if hmac.compare_digest(given.encode(), self._expected):
            return handler
        reason = "missing" if not given else "wrong"
        return wrap_handler(handler, lambda context: _refuse(context, reason))


@contextlib.asynccontextmanager
async def _refuse(context: grpc.aio.ServicerContext, reason: str):
    await context.abort(
        grpc.StatusCode.UNAUTHENTICATED,
        f"{reason} bearer token: send metadata 'authorization: Bearer <token>' "
        "(the CLI reads DREAMSUITE_TOKEN)",
    )
    yield  # never reached: abort raises
