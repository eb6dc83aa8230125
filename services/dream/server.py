"""Start the dream service: artifact store, device runner, servicer and the common server."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from dreamsuite.artifacts import open_store
from dreamsuite.clients.guide import RemoteGuideWeights
from dreamsuite.v1 import dream_pb2_grpc, style_pb2_grpc
from services.common.server import (
    RunningServer,
    ServiceBinding,
    serve_until_signalled,
    start_server,
)
from services.dream.config import DreamServiceConfig
from services.dream.metrics import DreamMetrics
from services.dream.one_pass import OnePass
from services.dream.runner import DreamRunner, GuideWeightsProvider
from services.dream.servicer import SERVICE_NAME, DreamServicer
from services.dream.style import SERVICE_NAME as STYLE_SERVICE_NAME
from services.dream.style import StyleServicer

__all__ = ["DreamServer", "start_dream_server", "serve", "SERVICE_NAME"]


@dataclass
class DreamServer:
    """A running dream service."""

    running: RunningServer
    runner: DreamRunner
    registry: CollectorRegistry

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def address(self) -> str:
        return self.running.address

    async def stop(self, grace: float | None = None) -> None:
        await self.running.stop(grace)


async def start_dream_server(
    config: DreamServiceConfig,
    *,
    registry: CollectorRegistry | None = None,
    guide_provider: GuideWeightsProvider | None = None,
) -> DreamServer:
    """Start the dream service; ``guide_provider`` computes guide weights elsewhere (None:
    in-process)."""
    config.validate()
    registry = registry if registry is not None else CollectorRegistry()
    if guide_provider is None and config.guide:
        guide_provider = RemoteGuideWeights(config.guide)
    # Inline images leave room for the rest of the message under the send limit.
    inline_limit = max(0, config.server.max_message_bytes - (1 << 20))
    runner = DreamRunner(open_store(config.artifacts), DreamMetrics(registry),
                         device=config.device, queue_size=config.queue_size,
                         max_pixels=config.max_pixels, inline_limit=inline_limit,
                         guide_provider=guide_provider, batching=config.batching,
                         max_batch=config.max_batch,
                         batch_window=config.batch_window_ms / 1000)
    await asyncio.to_thread(runner.preload, config.preload)
    one_pass = OnePass(config.torchserve, runner.publisher, runner.metrics,
                       max_pixels=config.max_pixels, token=config.torchserve_token)
    bindings = [
        ServiceBinding(SERVICE_NAME, DreamServicer(runner, one_pass),
                       dream_pb2_grpc.add_DreamServiceServicer_to_server),
        ServiceBinding(STYLE_SERVICE_NAME, StyleServicer(runner),
                       style_pb2_grpc.add_StyleServiceServicer_to_server),
    ]
    running = await start_server(bindings, config.server, registry=registry)
    running.on_stop.append(runner.close)
    running.on_stop.append(one_pass.close)
    return DreamServer(running, runner, registry)


async def serve(config: DreamServiceConfig) -> None:
    """Run the dream service until SIGTERM/SIGINT."""
    server = await start_dream_server(config)
    await serve_until_signalled(server.running)
