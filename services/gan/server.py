"""Start the GAN service: artifact store, job manager on a launcher, sampler, data-set builder,
servicer and the common server."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from dreamsuite.artifacts import ArtifactStore, open_store
from dreamsuite.v1 import gan_pb2_grpc
from services.common.server import (
    RunningServer,
    ServiceBinding,
    serve_until_signalled,
    start_server,
)
from services.gan.config import GanServiceConfig
from services.gan.datasets import DatasetBuilder
from services.gan.jobs import JobManager, check_training
from services.gan.kube import KubernetesLauncher
from services.gan.launchers import Launcher, LocalLauncher
from services.gan.metrics import GanMetrics
from services.gan.publish import Publisher
from services.gan.sampling import Sampler
from services.gan.servicer import SERVICE_NAME, GanServicer

__all__ = ["GanServer", "start_gan_server", "serve", "SERVICE_NAME"]

log = logging.getLogger(__name__)


@dataclass
class GanServer:
    """A running GAN service."""

    running: RunningServer
    jobs: JobManager
    registry: CollectorRegistry
    store: ArtifactStore
    publisher: Publisher

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def address(self) -> str:
        return self.running.address

    async def stop(self, grace: float | None = None) -> None:
        await self.running.stop(grace)


def _launcher(config: GanServiceConfig, work_dir: Path | None) -> Launcher:
    if config.launcher == "kubernetes":
        return KubernetesLauncher(image=config.image, namespace=config.namespace)
    threads = config.trainer_thread_budget()
    log.info("local trainers get %d torch thread(s) each (%s)", threads,
             "--trainer-threads" if config.trainer_threads else
             f"available CPUs // (--max-jobs {config.max_jobs} + 1)")
    return LocalLauncher(work_dir, threads=threads)


async def start_gan_server(config: GanServiceConfig, *,
                           registry: CollectorRegistry | None = None,
                           launcher: Launcher | None = None,
                           work_dir: Path | None = None) -> GanServer:
    """Start the GAN service; unfinished jobs of an earlier run are resumed."""
    config.validate()
    registry = registry if registry is not None else CollectorRegistry()
    metrics = GanMetrics(registry)
    store = open_store(config.artifacts)
    scratch: Path | None = None  # the local trainers' folder when the caller gave none: ours
    if launcher is None:
        if work_dir is None and config.launcher == "local":
            work_dir = scratch = Path(tempfile.mkdtemp(prefix="dreamsuite-gan-"))
        launcher = _launcher(config, work_dir)
    jobs = JobManager(store, launcher, metrics,
                      max_jobs=config.max_jobs, max_restarts=config.max_restarts,
                      stop_grace=config.stop_grace, train_device=config.train_device,
                      deterministic=config.deterministic)
    datasets = DatasetBuilder(store, metrics, dream_target=config.dream,
                              folder_roots=config.folder_roots, max_pixels=config.max_pixels)
    sampler = Sampler(store, metrics, device=config.device)
    publisher = Publisher(store, management=config.torchserve_management,
                          key_file=config.torchserve_management_key_file,
                          key=config.torchserve_management_key,
                          model_store=config.torchserve_model_store,
                          resync=config.torchserve_resync, drain=config.torchserve_drain,
                          metrics=metrics)
    servicer = GanServicer(datasets, jobs, sampler, functools.partial(check_training, store),
                           publisher)
    binding = ServiceBinding(SERVICE_NAME, servicer, gan_pb2_grpc.add_GanServiceServicer_to_server)
    running = await start_server([binding], config.server, registry=registry)
    running.on_stop.append(jobs.close)
    if scratch is not None:  # after the trainers stopped (jobs.close): their configs and logs
        running.on_stop.append(functools.partial(asyncio.to_thread, shutil.rmtree, scratch,
                                                 ignore_errors=True))
    # Every TorchServe replica (started later, restarted) gets the published models.
    resync = asyncio.create_task(publisher.run_resync(), name="torchserve-resync")

    async def stop_resync() -> None:
        resync.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await resync

    running.on_stop.append(stop_resync)

    async def close_store() -> None:
        await asyncio.to_thread(store.close)

    running.on_stop.append(close_store)
    await jobs.resume_unfinished()
    return GanServer(running, jobs, registry, store, publisher)


async def serve(config: GanServiceConfig) -> None:
    """Run the GAN service until SIGTERM/SIGINT."""
    server = await start_gan_server(config)
    await serve_until_signalled(server.running)
