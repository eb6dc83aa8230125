"""Data-set builds in the GAN service: photos from a built-in set, an allowed folder or an
artifact prefix, each dreamed through the dream service (several in flight, so dream replicas
scale the build), stored by :func:`dreamsuite.gan.dataset.build_dataset`."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from dreamsuite.artifacts import ArtifactStore
from dreamsuite.clients.dream import DreamClient, artifact_bytes
from dreamsuite.engine.config import field_errors
from dreamsuite.errors import InvalidArgument, Unavailable
from dreamsuite.gan.data import manifest_key
from dreamsuite.gan.dataset import (
    BuildProgress,
    build_dataset,
    builtin_photos,
    check_numbers,
    folder_photos,
    plan_dataset,
    prefix_photos,
)
from dreamsuite.v1 import common_pb2, dream_pb2
from dreamsuite.wire.convert import config_from_request
from services.gan.metrics import GanMetrics

__all__ = ["DatasetRequest", "DatasetBuilder"]


@dataclass(frozen=True)
class DatasetRequest:
    """A ``BuildDatasetRequest`` without transport: ``source`` is (kind, value)."""

    source: tuple[str, str]
    template: dream_pb2.DreamRequest
    size: int = 64
    holdout_fraction: float = 0.25
    crops_per_photo: int = 0  # 0: 24 for the built-in set, 1 otherwise
    max_images: int = 0
    concurrency: int = 4


class DatasetBuilder:
    """Builds data sets in ``store`` with dreams from the dream service at ``dream_target``."""

    def __init__(self, store: ArtifactStore, metrics: GanMetrics, *, dream_target: str | None,
                 folder_roots: Sequence[Path] = (), max_pixels: int | None = None):
        self.store = store
        self.metrics = metrics
        self.dream_target = dream_target
        self.folder_roots = tuple(folder_roots)
        self.max_pixels = max_pixels

    def manifest_uri(self, dataset_id: str) -> str:
        return self.store.stat(manifest_key(dataset_id)).uri

    def _photos(self, request: DatasetRequest):
        kind, value = request.source
        if kind == "builtin":
            return builtin_photos(value), {}, {"kind": kind, "name": value}
        if kind == "folder":
            photos, failures = folder_photos(value, self.folder_roots, max_pixels=self.max_pixels)
            return photos, failures, {"kind": kind, "name": value}
        if kind == "prefix":
            with field_errors("source.prefix"):
                photos, failures = prefix_photos(self.store, value, max_pixels=self.max_pixels)
            return photos, failures, {"kind": kind, "name": value}
        raise InvalidArgument("source: give builtin, folder or prefix")

    def _plan(self, request: DatasetRequest):
        if request.template.HasField("image"):
            raise InvalidArgument("dream.image: must be unset (the data set's photos are the "
                                  "images)")
        with field_errors("dream"):
            config = config_from_request(request.template)
        crops = request.crops_per_photo or (24 if request.source[0] == "builtin" else 1)
        check_numbers(request.size, request.holdout_fraction, crops, request.max_images)
        photos, failures, source = self._photos(request)
        extra = request.template.guidance.SerializeToString(deterministic=True)
        return plan_dataset(photos, config, source=source, size=request.size,
                            holdout_fraction=request.holdout_fraction, crops_per_photo=crops,
                            max_images=request.max_images, extra=extra, failures=failures)

    def _dreamer(self, template: dream_pb2.DreamRequest):
        if not self.dream_target:
            raise Unavailable("this GAN service knows no dream service (--dream HOST:PORT)")
        local = threading.local()
        clients: list[DreamClient] = []

        def dream(png: bytes) -> bytes:
            client = getattr(local, "client", None)
            if client is None:
                client = local.client = DreamClient(self.dream_target)
                clients.append(client)
            request = dream_pb2.DreamRequest()
            request.CopyFrom(template)
            request.image.CopyFrom(common_pb2.ImageRef(data=png))
            request.output.CopyFrom(dream_pb2.OutputOptions(
                preview_format=dream_pb2.PREVIEW_FORMAT_NONE, inline_images=True))
            try:
                result = client.run(request, timeout=600)
            except Exception:
                self.metrics.dataset_images.labels("failed").inc()
                raise
            self.metrics.dataset_images.labels("ok").inc()
            return artifact_bytes(result.image, result.artifact)

        def close() -> None:
            for client in clients:
                client.close()

        return dream, close

    async def build(self, request: DatasetRequest) -> AsyncIterator[BuildProgress]:
        """Progress of the build, the last one carrying the manifest; cancelling the iteration
        stops the build after the dreams in flight."""
        plan = await asyncio.to_thread(self._plan, request)
        dream, close = self._dreamer(request.template)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def progress(p: BuildProgress) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody listens
                loop.call_soon_threadsafe(events.put_nowait, p)

        def run():
            try:
                return build_dataset(plan, self.store, dream, concurrency=request.concurrency,
                                     progress=progress, should_cancel=cancel.is_set)
            finally:
                close()

        task = asyncio.ensure_future(asyncio.to_thread(run))
        try:
            while not (task.done() and events.empty()):
                try:
                    yield await asyncio.wait_for(events.get(), timeout=0.5)
                except TimeoutError:
                    continue
            task.result()  # the build's own error, if it failed
        finally:
            # A cancelled call stops the build after the dreams in flight; the thread closes
            # its clients when it ends.
            cancel.set()
