"""Start any of the suite's services: a ``grpc.aio`` server with health, reflection, metrics,
optional bearer-token auth and TLS, explicit message limits and graceful shutdown.

>>> running = await start_server([ServiceBinding(name, servicer, add_fn)], config,
...                              registry=CollectorRegistry())
>>> await running.stop(grace=5)       # health NOT_SERVING, then server.stop(grace)
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from dreamsuite.errors import InvalidArgument
from dreamsuite.wire.channels import channel_options
from services.common.auth import BearerTokenAuth
from services.common.config import ServerConfig
from services.common.errors import ErrorMapping
from services.common.health import HealthServicer
from services.common.telemetry import GrpcServerMetrics, MetricsServer, start_metrics_server

__all__ = ["ServiceBinding", "RunningServer", "start_server", "serve_until_signalled"]

log = logging.getLogger(__name__)
SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer, the generated function that adds it to a server, and its full name
    (``dreamsuite.v1.DreamService``), used for health and reflection."""

    name: str
    servicer: Any
    add_to_server: Callable[[Any, grpc.aio.Server], None]


@dataclass
class RunningServer:
    """A started server: its bound port, health servicer and metrics endpoint."""

    server: grpc.aio.Server
    port: int
    health: HealthServicer
    config: ServerConfig
    metrics: MetricsServer | None = None
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _stopped: bool = False

    @property
    def address(self) -> str:
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "::", "[::]") else self.config.host
        return f"{host}:{self.port}"

    async def stop(self, grace: float | None = None) -> None:
        """Health turns NOT_SERVING (health watches hear it and end), new calls are refused,
        in-flight calls get ``grace`` seconds (default from the config) and are then cancelled;
        then ``on_stop`` hooks run."""
        if self._stopped:
            return
        self._stopped = True
        grace = self.config.grace_seconds if grace is None else grace
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        for hook in self.on_stop:
            await hook()
        if self.metrics is not None:
            self.metrics.close()

    async def wait(self) -> None:
        await self.server.wait_for_termination()


def _credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """The server's TLS credentials; :class:`InvalidArgument` naming the files when they are
    not a PEM certificate and its private key (gRPC said only "Failed to bind" then)."""
    if not config.tls:
        return None
    assert config.tls_cert is not None and config.tls_key is not None
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            config.tls_cert, config.tls_key)
        pair = (config.tls_key.read_bytes(), config.tls_cert.read_bytes())
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise InvalidArgument(f"--tls-cert {config.tls_cert} and --tls-key {config.tls_key} "
                              f"are not a PEM certificate and its private key ({reason})"
                              ) from None
    return grpc.ssl_server_credentials([pair])


def _interceptors(config: ServerConfig, registry: CollectorRegistry,
                  extra: Sequence[grpc.aio.ServerInterceptor]) -> list[grpc.aio.ServerInterceptor]:
    # Metrics first (they count refused calls too), then auth, then error mapping.
    chain: list[grpc.aio.ServerInterceptor] = [GrpcServerMetrics(registry)]
    if config.token:
        chain.append(BearerTokenAuth(config.token))
    chain.append(ErrorMapping())
    return [*chain, *extra]


async def start_server(
    bindings: Sequence[ServiceBinding],
    config: ServerConfig,
    *,
    registry: CollectorRegistry,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> RunningServer:
    """Build, bind and start a server for ``bindings``; every service reports SERVING."""
    config.validate()
    metrics = None
    if config.metrics_port is not None:  # first: a port in use leaves nothing else behind
        try:
            metrics = start_metrics_server(registry, config.metrics_port, config.metrics_host)
        except OSError as exc:
            raise InvalidArgument(f"--metrics-port {config.metrics_port}: cannot listen on "
                                  f"{config.metrics_host} ({exc.strerror or exc})") from None
    try:
        return await _start_grpc(bindings, config, registry, interceptors, metrics)
    except BaseException:
        if metrics is not None:
            metrics.close()
        raise


async def _start_grpc(bindings: Sequence[ServiceBinding], config: ServerConfig,
                      registry: CollectorRegistry,
                      interceptors: Sequence[grpc.aio.ServerInterceptor],
                      metrics: MetricsServer | None) -> RunningServer:
    options = [*channel_options(config.max_message_bytes), ("grpc.so_reuseport", 0)]
    if config.max_connection_age_seconds > 0:  # no age grace: a long dream is never cut
        options.append(("grpc.max_connection_age_ms",
                        max(1, round(config.max_connection_age_seconds * 1000))))
    server = grpc.aio.server(interceptors=_interceptors(config, registry, interceptors),
                             options=options)
    for binding in bindings:
        binding.add_to_server(binding.servicer, server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [b.name for b in bindings]
    if config.reflection:
        reflection.enable_server_reflection(
            [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    address = f"{config.host}:{config.port}"
    credentials = _credentials(config)
    port = (server.add_secure_port(address, credentials) if credentials
            else server.add_insecure_port(address))
    await server.start()
    for name in ["", *names]:
        await health_servicer.set(name, SERVING)
    log.info("serving %s on %s:%d (%s)%s", ", ".join(names), config.host, port,
             "TLS" if credentials else "plaintext",
             f", metrics on :{metrics.port}" if metrics else "")
    return RunningServer(server, port, health_servicer, config, metrics)


async def serve_until_signalled(running: RunningServer) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.ensure_future(running.wait())
    await asyncio.wait([waiter, asyncio.ensure_future(stop.wait())],
                       return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down: NOT_SERVING, up to %.0f s for in-flight calls",
             running.config.grace_seconds)
    await running.stop()
    waiter.cancel()
