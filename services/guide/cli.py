"""``dreamsuite serve guide``: the guide-weight service.

    dreamsuite serve guide --activations torchserve://127.0.0.1:7070   # or inprocess
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from services.common.config import (
    add_env_argument,
    add_server_arguments,
    apply_torch_threads,
    server_config_from_args,
)
from services.common.server import serve_until_signalled

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(serve_sub: argparse._SubParsersAction) -> None:
    p = serve_sub.add_parser(
        "guide", help="the guide-weight service (guide weights, neuron selection, statistics)")
    add_server_arguments(p, "guide", port=50052, metrics_port=9102)
    add_env_argument(p, "--activations", default="inprocess",
                     help="activation backend: torchserve://HOST:PORT (TorchServe's gRPC "
                     "inference API) or inprocess")
    add_env_argument(p, "--torchserve-token",
                     help="TorchServe inference key, where its token authorization is on")
    add_env_argument(p, "--artifacts",
                     help="artifact store for image URIs and prefixes (s3://... or file:///...)")
    add_env_argument(p, "--cache-entries", default=4096, cast=int,
                     help="layer statistics kept in the cache (0: no cache)")
    add_env_argument(p, "--device", help="device of the in-process backend (cpu, cuda, ...)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # heavy (torch): the server loads the engine; building the CLI's parser must not.
    from services.guide.server import GuideConfig, start_guide_server

    config = server_config_from_args(args)
    apply_torch_threads(config)
    guide = GuideConfig(activations=args.activations, torchserve_token=args.torchserve_token,
                        artifacts=args.artifacts, cache_entries=args.cache_entries,
                        device=args.device)

    async def serve() -> None:
        running = await start_guide_server(config, guide)
        log.info("guide service on %s, activations from %s", running.address, guide.activations)
        await serve_until_signalled(running)

    asyncio.run(serve())
    return 0
