"""Build and start the guide service: activation backend, cache, metrics, artifact store."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from dreamsuite.activations.backend import backend_from_url
from dreamsuite.artifacts import open_store
from dreamsuite.v1 import guide_pb2_grpc
from services.common import RunningServer, ServerConfig, ServiceBinding, start_server
from services.guide.cache import StatsCache
from services.guide.core import GuideCore
from services.guide.metrics import GuideMetrics
from services.guide.servicer import GuideServicer
from services.guide.sources import ImageSources

__all__ = ["GuideConfig", "SERVICE_NAME", "start_guide_server"]

SERVICE_NAME = "dreamsuite.v1.GuideService"


@dataclass(frozen=True)
class GuideConfig:
    """What the guide service computes with.

    ``activations``: ``torchserve://HOST:PORT`` or ``inprocess``; ``torchserve_token``:
    TorchServe's inference key where its token authorization is on; ``artifacts``: the store
    that artifact URIs and prefixes refer to (None: inline images only)."""

    activations: str = "inprocess"
    torchserve_token: str | None = None
    artifacts: str | None = None
    cache_entries: int = 4096
    device: str | None = None


async def start_guide_server(
    config: ServerConfig, guide: GuideConfig, *, registry: CollectorRegistry | None = None
) -> RunningServer:
    """Start the guide service; ``running.stop()`` also closes its backend and store."""
    registry = registry if registry is not None else CollectorRegistry()
    metrics = GuideMetrics(registry, guide.activations)
    backend = backend_from_url(guide.activations, token=guide.torchserve_token,
                               observe=metrics.observe_call, device=guide.device)
    store = None
    if guide.artifacts:
        store = open_store(guide.artifacts)
    core = GuideCore(backend, metrics, cache=StatsCache(guide.cache_entries))
    servicer = GuideServicer(core, ImageSources(store))
    binding = ServiceBinding(SERVICE_NAME, servicer,
                             guide_pb2_grpc.add_GuideServiceServicer_to_server)
    try:
        running = await start_server([binding], config, registry=registry)
    except BaseException:
        await backend.close()
        raise
    running.on_stop.append(backend.close)
    if store is not None:
        async def close_store() -> None:
            store.close()

        running.on_stop.append(close_store)
    return running
