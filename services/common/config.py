"""Server settings every service shares, from flags with environment-variable defaults.

Every flag ``--some-flag`` of ``dreamsuite serve SERVICE`` also reads ``DREAMSUITE_SOME_FLAG``
(ports read ``DREAMSUITE_<SERVICE>_PORT`` / ``DREAMSUITE_<SERVICE>_METRICS_PORT`` so that
services on one machine do not collide). Flags win over the environment.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dreamsuite.cpus import MAX_THREADS
from dreamsuite.errors import InvalidArgument
from dreamsuite.wire.channels import DEFAULT_MAX_MESSAGE_BYTES

__all__ = ["ServerConfig", "add_server_arguments", "server_config_from_args",
           "env_name", "apply_torch_threads", "DEFAULT_MAX_CONNECTION_AGE_SECONDS"]

#: Five minutes: a replica the autoscaler adds gets its share of long-lived clients that soon.
DEFAULT_MAX_CONNECTION_AGE_SECONDS = 300.0


@dataclass(frozen=True)
class ServerConfig:
    """How a gRPC server listens. ``port=0`` picks a free port; ``metrics_port=None`` serves no
    metrics, ``0`` any free port."""

    host: str = "0.0.0.0"
    port: int = 0
    metrics_host: str = "0.0.0.0"
    metrics_port: int | None = None
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    grace_seconds: float = 30.0
    reflection: bool = True
    #: Connections older than this are asked to close (GOAWAY) once their calls are done, so
    #: round-robin clients re-resolve and reach replicas added since (0: never).
    max_connection_age_seconds: float = DEFAULT_MAX_CONNECTION_AGE_SECONDS
    #: torch threads of the process (0: ``$OMP_NUM_THREADS``, else the CPUs it may use, the
    #: cgroup quota included); :func:`apply_torch_threads` sets them when a service starts.
    torch_threads: int = 0

    def validate(self) -> ServerConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InvalidArgument("TLS needs both --tls-cert and --tls-key")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not Path(path).is_file():
                raise InvalidArgument(f"TLS file {str(path)!r} does not exist")
        if self.max_message_bytes < 1024:
            raise InvalidArgument("--max-message-bytes must be at least 1024")
        if self.grace_seconds < 0:
            raise InvalidArgument("--grace-seconds must be >= 0")
        if not 0 <= self.torch_threads <= MAX_THREADS:
            raise InvalidArgument(f"--torch-threads must be between 1 and {MAX_THREADS}, or 0 (the CPUs "
                                  "this process may use)")
        if not 0 <= self.max_connection_age_seconds <= 86_400 * 365:
            raise InvalidArgument("--max-connection-age must be between 0 (never) and a year "
                                  "of seconds")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def env_name(flag: str) -> str:
    """``--queue-size`` -> ``DREAMSUITE_QUEUE_SIZE``."""
    return "DREAMSUITE_" + flag.lstrip("-").upper().replace("-", "_")


def add_env_argument(parser: argparse.ArgumentParser, flag: str, *, default: Any = None,
                     cast: Callable[[str], Any] = str, env: str | None = None,
                     help: str = "", **kwargs: Any) -> None:
    """``parser.add_argument(flag)`` whose default comes from ``env`` (``DREAMSUITE_<FLAG>``).

    The variable's text is converted by argparse like a flag's, and only when this (sub)command
    runs, so a bad value for one service cannot break the other commands."""
    env = env or env_name(flag)
    parser.add_argument(flag, type=cast, default=os.environ.get(env) or default,
                        help=f"{help} [env {env}; default {default}]", **kwargs)


def add_server_arguments(parser: argparse.ArgumentParser, service: str, *, port: int,
                         metrics_port: int) -> None:
    """The flags every ``dreamsuite serve SERVICE`` takes."""
    prefix = f"DREAMSUITE_{service.upper()}_"
    add_env_argument(parser, "--host", default="0.0.0.0", help="address to listen on")
    add_env_argument(parser, "--port", default=port, cast=int, env=prefix + "PORT",
                     help="gRPC port (0: any free port)")
    add_env_argument(parser, "--metrics-port", default=metrics_port, cast=int,
                     env=prefix + "METRICS_PORT", help="Prometheus /metrics port (-1: off)")
    add_env_argument(parser, "--token", help="require 'authorization: Bearer TOKEN' on every RPC "
                     "but health checks (prefer the environment variable: flags are visible)")
    add_env_argument(parser, "--tls-cert", help="PEM certificate; TLS when given with --tls-key")
    add_env_argument(parser, "--tls-key", help="PEM private key")
    add_env_argument(parser, "--max-message-bytes", default=DEFAULT_MAX_MESSAGE_BYTES, cast=int,
                     help="send and receive limit per message")
    add_env_argument(parser, "--grace-seconds", default=30.0, cast=float,
                     help="on SIGTERM, how long in-flight calls may finish before cancellation")
    add_env_argument(parser, "--max-connection-age", default=DEFAULT_MAX_CONNECTION_AGE_SECONDS,
                     cast=float, help="seconds after which a client connection is asked to "
                     "reconnect (its calls in flight finish first), so clients spread over "
                     "replicas added since; 0: never")
    add_env_argument(parser, "--torch-threads", default=0, cast=int,
                     env="DREAMSUITE_TORCH_THREADS",
                     help="torch threads of the service (0: $OMP_NUM_THREADS, else the CPUs "
                     "it may use, cgroup CPU limit included: torch alone would start one "
                     "per core of the machine, in a pod every core of the node)")


def server_config_from_args(args: argparse.Namespace) -> ServerConfig:
    """A validated :class:`ServerConfig` from the flags of :func:`add_server_arguments`."""
    return ServerConfig(
        host=args.host, port=args.port, metrics_host=args.host,
        metrics_port=None if args.metrics_port < 0 else args.metrics_port,
        token=args.token or None,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
        max_message_bytes=args.max_message_bytes, grace_seconds=args.grace_seconds,
        max_connection_age_seconds=args.max_connection_age,
        torch_threads=args.torch_threads,
    ).validate()


def apply_torch_threads(config: ServerConfig) -> tuple[int, str]:
    """Set the process's torch threads from ``config.torch_threads`` (see
    :func:`dreamsuite.cpus.resolve_threads`) and log them; ``(threads, where from)``. A
    service's command calls it once before it starts serving (tests that start servers
    in-process leave their own process's threads alone)."""
    from dreamsuite.cpus import apply_threads, resolve_threads

    threads, source = resolve_threads(config.torch_threads or None)
    applied = apply_threads(threads), "--torch-threads" if config.torch_threads else source
    logging.getLogger(__name__).info("torch threads: %d (%s)", *applied)
    return applied
