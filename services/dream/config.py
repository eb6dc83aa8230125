"""Configuration of the dream service: flags, each with a ``DREAMSUITE_*`` environment default."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from dreamsuite.artifacts import DEFAULT_ARTIFACTS
from dreamsuite.defaults import DEFAULT_BACKBONE, DEFAULT_MAX_PIXELS
from dreamsuite.errors import InvalidArgument
from services.common.config import (
    ServerConfig,
    add_env_argument,
    add_server_arguments,
    server_config_from_args,
)

__all__ = ["DreamServiceConfig", "add_arguments", "config_from_args", "DEFAULT_PORT",
           "DEFAULT_METRICS_PORT"]

DEFAULT_PORT = 50051
#: The ``--batching`` modes (as :data:`services.dream.runner.BATCHING_MODES`).
BATCHING = ("auto", "off", "always")
DEFAULT_METRICS_PORT = 9101


@dataclass(frozen=True)
class DreamServiceConfig:
    """Everything ``dreamsuite serve dream`` can be told."""

    server: ServerConfig = field(default_factory=ServerConfig)
    artifacts: str = DEFAULT_ARTIFACTS
    device: str | None = None
    queue_size: int = 4
    max_pixels: int = DEFAULT_MAX_PIXELS
    guide: str | None = None  # guide service HOST:PORT for guide weights (None: in-process)
    #: Backbones loaded before the server reports SERVING, so no request pays for loading.
    preload: tuple[str, ...] = ()
    #: Cross-request batching: ``auto`` (measured per size and device), ``off``, ``always``.
    batching: str = "auto"
    max_batch: int = 8
    batch_window_ms: float = 25.0
    #: TorchServe's gRPC inference API (``HOST:PORT``) for one-pass models (None: none), and
    #: its inference key where TorchServe's token authorization is on.
    torchserve: str | None = None
    torchserve_token: str | None = None

    def validate(self) -> DreamServiceConfig:
        self.server.validate()
        if self.queue_size < 0:
            raise InvalidArgument("--queue-size must be >= 0")
        if self.max_pixels < 1:
            raise InvalidArgument("--max-pixels must be positive")
        if self.batching not in BATCHING:
            raise InvalidArgument(f"--batching must be one of {', '.join(BATCHING)}")
        if not 1 <= self.max_batch <= 64:
            raise InvalidArgument("--max-batch must be between 1 and 64")
        if not 0 <= self.batch_window_ms <= 10_000:
            raise InvalidArgument("--batch-window-ms must be between 0 and 10000")
        return self


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``dreamsuite serve dream``."""
    add_server_arguments(parser, "dream", port=DEFAULT_PORT, metrics_port=DEFAULT_METRICS_PORT)
    add_env_argument(parser, "--artifacts", default=DEFAULT_ARTIFACTS,
                     help="artifact store: s3://BUCKET?endpoint=HOST:PORT&secure=false"
                          "[&public_endpoint=HOST:PORT], file:///PATH or a folder")
    add_env_argument(parser, "--device", help="cpu, cuda, cuda:1 (default: CUDA when present)")
    add_env_argument(parser, "--queue-size", default=4, cast=int,
                     help="dreams that may wait for the device; more are RESOURCE_EXHAUSTED")
    add_env_argument(parser, "--max-pixels", default=DEFAULT_MAX_PIXELS, cast=int,
                     help="largest input image (width x height)")
    add_env_argument(parser, "--guide", help="guide service HOST:PORT that computes guide "
                     "weights (default: computed in-process)")
    add_env_argument(parser, "--batching", default="auto",
                     help="step compatible queued dreams as one batch: auto (when measured "
                          "faster for the size on this device), off, always")
    add_env_argument(parser, "--max-batch", default=8, cast=int,
                     help="most dreams stepped together")
    add_env_argument(parser, "--batch-window-ms", default=25.0, cast=float,
                     help="how long a worker waits for compatible dreams to join a batch")
    add_env_argument(parser, "--torchserve", help="TorchServe gRPC inference HOST:PORT that "
                     "serves one-pass (dream2dream) models for requests naming a model "
                     "(default: none; such requests are UNAVAILABLE)")
    add_env_argument(parser, "--torchserve-token",
                     help="TorchServe inference key, where its token authorization is on")
    add_env_argument(parser, "--preload", default=DEFAULT_BACKBONE,
                     help="comma-separated backbones to load before serving ('' for none)")


def config_from_args(args: argparse.Namespace) -> DreamServiceConfig:
    artifacts = args.artifacts
    if "://" not in artifacts:  # a folder: make it absolute, as the store reports it
        artifacts = Path(artifacts).resolve().as_uri()
    return DreamServiceConfig(
        server=server_config_from_args(args), artifacts=artifacts, device=args.device,
        queue_size=args.queue_size, max_pixels=args.max_pixels, guide=args.guide or None,
        preload=tuple(name.strip() for name in args.preload.split(",") if name.strip()),
        batching=args.batching, max_batch=args.max_batch, batch_window_ms=args.batch_window_ms,
        torchserve=args.torchserve or None, torchserve_token=args.torchserve_token or None,
    ).validate()
