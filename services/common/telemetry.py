"""Prometheus metrics every service shares: gRPC server metrics and the ``/metrics`` endpoint.

Nothing is registered at import time: each server builds its metrics on a
:class:`~prometheus_client.CollectorRegistry` it owns (so several servers can live in one
process, e.g. in tests) and serves them with :func:`start_metrics_server` on their own port.

The gRPC families use the names of go-grpc-prometheus / grpc-ecosystem, so existing dashboards
work: ``grpc_server_started_total``, ``grpc_server_handled_total`` and
``grpc_server_handling_seconds`` labelled by ``grpc_service``, ``grpc_method``, ``grpc_type``
(and ``grpc_code`` with Go's code names: ``OK``, ``Canceled``, ``DeadlineExceeded``, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

__all__ = [
    "HANDLING_BUCKETS",
    "GrpcServerMetrics",
    "MetricsServer",
    "start_metrics_server",
    "wrap_handler",
    "code_name",
]

#: Handling-time buckets in seconds: milliseconds for ListBackbones, minutes for a big dream.
HANDLING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120,
                    300, 600, 1200, 1800)

_DEADLINE_SLACK_SECONDS = 0.05
_GO_NAMES = {grpc.StatusCode.OK: "OK", grpc.StatusCode.CANCELLED: "Canceled"}

Hook = Callable[[grpc.aio.ServicerContext], AbstractAsyncContextManager]


def code_name(code: grpc.StatusCode) -> str:
    """Go's name of a status code (``DEADLINE_EXCEEDED`` -> ``DeadlineExceeded``)."""
    return _GO_NAMES.get(code) or code.name.title().replace("_", "")


# --- wrapping handlers -------------------------------------------------------------------------


def wrap_handler(handler: grpc.RpcMethodHandler | None, hook: Hook) -> grpc.RpcMethodHandler | None:
    """``handler`` with every call run inside ``hook(context)``, an async context manager.

    Works for the four RPC kinds and for async, coroutine and async-generator behaviours; the
    hook sees the handler's exceptions (and may replace them, e.g. with ``context.abort``).
    Used by the metrics, auth and error-mapping interceptors."""
    if handler is None:
        return None
    kinds = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler, _around_unary),
        ("stream_unary", grpc.stream_unary_rpc_method_handler, _around_unary),
        ("unary_stream", grpc.unary_stream_rpc_method_handler, _around_stream),
        ("stream_stream", grpc.stream_stream_rpc_method_handler, _around_stream),
    )
    for attr, make, around in kinds:
        behaviour = getattr(handler, attr)
        if behaviour is not None:
            return make(around(behaviour, hook), handler.request_deserializer,
                        handler.response_serializer)
    return handler


def _around_unary(behaviour: Callable, hook: Hook) -> Callable:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with hook(context):
            result = behaviour(request, context)
            return await result if inspect.isawaitable(result) else result

    return call


def _around_stream(behaviour: Callable, hook: Hook) -> Callable:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async with hook(context):
            result = behaviour(request, context)
            if inspect.isawaitable(result):  # reader/writer API: the coroutine writes itself
                result = await result
            if result is not None:
                async for item in result:
                    yield item

    return call


def rpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


# --- gRPC server metrics ----------------------------------------------------------------------


class GrpcServerMetrics(grpc.aio.ServerInterceptor):
    """Counts RPCs started and handled (by code) and their handling time; an aio interceptor.

    Put it first in the interceptor list so it also counts calls that auth refuses."""

    def __init__(self, registry: CollectorRegistry):
        labels = ["grpc_service", "grpc_method", "grpc_type"]
        self.started = Counter("grpc_server_started_total", "RPCs started on the server.",
                               labels, registry=registry)
        self.handled = Counter("grpc_server_handled_total",
                               "RPCs completed on the server, regardless of success or failure.",
                               [*labels, "grpc_code"], registry=registry)
        self.handling = Histogram("grpc_server_handling_seconds",
                                  "Response latency of RPCs handled by the server.",
                                  labels, buckets=HANDLING_BUCKETS, registry=registry)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        labels = (service, method, rpc_type(handler))
        return wrap_handler(handler, lambda context: self._observe(labels, context))

    @contextlib.asynccontextmanager
    async def _observe(self, labels: tuple[str, str, str], context: grpc.aio.ServicerContext):
        self.started.labels(*labels).inc()
        start = time.perf_counter()
        done = False

        def finish(code: Callable[[], grpc.StatusCode]) -> None:
            nonlocal done
            if not done:
                done = True
                self.handled.labels(*labels, code_name(code())).inc()
                self.handling.labels(*labels).observe(time.perf_counter() - start)

        # A call cancelled while the server is not inside the handler never reaches the code
        # below; the done callback counts it.
        context.add_done_callback(lambda ctx: finish(lambda: _cancel_code(ctx)))
        try:
            yield
        except asyncio.CancelledError:
            finish(lambda: _cancel_code(context))
            raise
        except BaseException:
            finish(lambda: _code_of(context) or grpc.StatusCode.UNKNOWN)
            raise
        finish(lambda: _code_of(context) or grpc.StatusCode.OK)


def _code_of(context: grpc.aio.ServicerContext) -> grpc.StatusCode | None:
    code = context.code()
    if code is None or isinstance(code, grpc.StatusCode):
        return code
    return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)


def _cancel_code(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    code = _code_of(context)
    if code not in (None, grpc.StatusCode.OK):
        return code
    remaining = context.time_remaining()
    # The server's timer fires a hair before the client's deadline by the server's clock.
    if remaining is not None and remaining <= _DEADLINE_SLACK_SECONDS:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


# --- the /metrics endpoint --------------------------------------------------------------------


@dataclass
class MetricsServer:
    """A running ``/metrics`` HTTP server."""

    host: str
    port: int
    _server: Any
    _thread: Any

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(registry: CollectorRegistry, port: int,
                         host: str = "0.0.0.0") -> MetricsServer:
    """Serve ``registry`` at ``http://host:port/metrics`` (``port=0``: any free port)."""
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(host, server.server_port, server, thread)
