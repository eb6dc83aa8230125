"""PublishModel: a dream2dream model's TorchServe archive, stored and registered with every
TorchServe replica, so that the dream service's fast path (``DreamRequest.model``) serves it
without a restart.

The archive is ``dreamsuite gan export``'s (:func:`handlers.archive.build_dream2dream_archive`:
the EMA network of the model's latest checkpoint). It is kept in the artifact store as
``published/<name>.mar`` beside ``published/<name>.json`` (the model, its step and conditions,
the batch settings), which is the list of what every replica should serve.

TorchServe gets the archive either from a model store folder it shares with this service
(``NAME.mar`` written there; the launcher, compose) or, with no shared folder, uploaded into
each replica's own model store through the management gateway beside it
(:mod:`dreamsuite.torchserve_gateway`; Kubernetes); either way it is registered by file name.
Publishing a name TorchServe already serves replaces it: the old model is unregistered, then
the new archive registered (the name answers NOT_FOUND for the moment between). Replicas that
start later, or restart, get the published models from :meth:`Publisher.resync`, which runs at
start and every ``resync`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from dreamsuite.artifacts import Artifact, ArtifactStore
from dreamsuite.errors import (
    DreamsuiteError,
    FailedPrecondition,
    InvalidArgument,
    Unavailable,
    shorten,
)
from dreamsuite.gan.records import read_model
from dreamsuite.torchserve import (
    MODEL_NAME,
    management_endpoints,
    read_management_key,
    register_model,
    served_models,
    unregister_model,
)
from dreamsuite.torchserve_gateway import upload_archive
from handlers import DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCH_DELAY_MS
from handlers.archive import build_dream2dream_archive

__all__ = ["PUBLISHED_PREFIX", "MAX_BATCH_SIZE", "PublishRequest", "Published", "Publisher"]

log = logging.getLogger(__name__)

#: Where published archives and their records live in the artifact store.
PUBLISHED_PREFIX = "published/"
MAX_BATCH_SIZE = 256
_ARCHIVE_TYPE = "application/java-archive"


@dataclass(frozen=True)
class PublishRequest:
    """A checked PublishModel request (name and batch settings resolved to their defaults)."""

    model: str
    name: str
    batch_size: int = DEFAULT_BATCH_SIZE
    max_batch_delay_ms: int = DEFAULT_MAX_BATCH_DELAY_MS

    @classmethod
    def checked(cls, model: str, name: str = "", batch_size: int = 0,
                max_batch_delay_ms: int = 0) -> PublishRequest:
        """Defaults for 0 / empty fields; :class:`InvalidArgument` naming the bad field."""
        if not model:
            raise InvalidArgument("model is empty: name a dream2dream model (ListModels)")
        name = name or model
        if not MODEL_NAME.match(name):
            raise InvalidArgument(f"name {shorten(name)!r} is no TorchServe model name (letters, "
                                  "digits, '_', '-', '.'; a letter or digit first)")
        if not 0 <= batch_size <= MAX_BATCH_SIZE:
            raise InvalidArgument(f"batch_size must be 1..{MAX_BATCH_SIZE} (0: default "
                                  f"{DEFAULT_BATCH_SIZE}), not {batch_size}")
        if not 0 <= max_batch_delay_ms <= 60_000:
            raise InvalidArgument("max_batch_delay_ms must be 0..60000 (0: default "
                                  f"{DEFAULT_MAX_BATCH_DELAY_MS})")
        return cls(model, name, batch_size or DEFAULT_BATCH_SIZE,
                   max_batch_delay_ms or DEFAULT_MAX_BATCH_DELAY_MS)


@dataclass(frozen=True)
class Published:
    """A published model: its TorchServe name, the stored archive (and a presigned URL of it),
    the management endpoints that serve it now and its conditions in index order."""

    name: str
    archive: Artifact
    url: str
    registered: list[str]
    conditions: list[str]


class Publisher:
    """Builds, stores and registers archives (thread-safe; one publication at a time)."""

    def __init__(self, store: ArtifactStore, *, management: str | None = None,
                 key_file: Path | None = None, key: str | None = None,
                 model_store: Path | None = None, resync: float = 0.0,
                 register_timeout: float = 300.0):
        self.store = store
        self.management = management
        self.key_file = key_file
        self.key = key
        self.model_store = model_store
        self.resync_seconds = resync
        self.register_timeout = register_timeout
        self._lock = threading.Lock()

    # -- PublishModel ---------------------------------------------------------------------------

    async def publish(self, request: PublishRequest) -> Published:
        return await asyncio.to_thread(self.publish_now, request)

    def publish_now(self, request: PublishRequest) -> Published:
        """Build ``request.model``'s archive, store it and register it everywhere."""
        if not self.management:
            raise FailedPrecondition(
                "PublishModel needs TorchServe's management API: start the GAN service with "
                "--torchserve-management http://HOST:8081 and the management key "
                "(--torchserve-management-key-file, or DREAMSUITE_TORCHSERVE_MANAGEMENT_KEY)")
        record = read_model(self.store, request.model)  # NotFound names ListModels
        if record.get("kind") != "dream2dream":
            raise InvalidArgument(f"model {shorten(request.model)!r} is a {record.get('kind')!r} "
                                  "model; only dream2dream models are published to TorchServe")
        with self._lock, tempfile.TemporaryDirectory(prefix="dreamsuite-publish-") as tmp:
            path = build_dream2dream_archive(
                self.store, request.model, Path(tmp), name=request.name,
                batch_size=request.batch_size, max_batch_delay=request.max_batch_delay_ms)
            data = path.read_bytes()
            archive = self.store.put_at(f"{PUBLISHED_PREFIX}{request.name}.mar", data,
                                        content_type=_ARCHIVE_TYPE)
            conditions = [str(c.get("name", "?")) for c in record.get("conditions") or []]
            registered, failed = self._register_everywhere(request.name, archive, data)
            if registered:  # the list resync keeps every replica to
                self.store.put_at(f"{PUBLISHED_PREFIX}{request.name}.json", json.dumps({
                    "name": request.name, "model": request.model, "step": record.get("step"),
                    "archive": archive.uri, "sha256": archive.sha256, "conditions": conditions,
                    "batch_size": request.batch_size,
                    "max_batch_delay_ms": request.max_batch_delay_ms,
                    "published": time.time()}, indent=1).encode(),
                    content_type="application/json")
        if failed:
            served = f"; {request.name!r} is served by {', '.join(registered)}" if registered \
                else ""
            raise Unavailable(f"{'; '.join(failed)}{served}")
        log.info("published %s (model %s) on %s", request.name, request.model, registered)
        return Published(request.name, archive, self.store.presign(archive.uri), registered,
                         conditions)

    def _register_everywhere(self, name: str, archive: Artifact,
                             data: bytes) -> tuple[list[str], list[str]]:
        """Register on every replica: the endpoints that serve it now, and why others failed."""
        registered, failed = [], []
        for endpoint in self._endpoints():
            try:
                self._register(endpoint, name, archive, data, replace=True)
                registered.append(endpoint)
            except Unavailable as exc:
                failed.append(str(exc))
        return registered, failed

    # -- every replica serves every published model ----------------------------------------------

    def resync_now(self) -> dict[str, list[str]]:
        """Register each published model on each replica that lacks it; ``{endpoint: names
        registered}``. A replica that fails is logged and tried again next time."""
        if not self.management:
            return {}
        done: dict[str, list[str]] = {}
        with self._lock:
            names = self._published()
            if not names:
                return {}
            for endpoint in self._endpoints():
                try:
                    missing = sorted(set(names) - set(served_models(endpoint, self._key())))
                    for name in missing:
                        archive = self.store.stat(f"{PUBLISHED_PREFIX}{name}.mar")
                        self._register(endpoint, name, archive, None, replace=False)
                    done[endpoint] = missing
                except DreamsuiteError as exc:
                    log.warning("resync of %s failed: %s", endpoint, exc)
        if any(done.values()):
            log.info("registered published models: %s", done)
        return done

    async def run_resync(self) -> None:
        """Resync at start and then every ``resync_seconds`` (when > 0), until cancelled."""
        while True:
            with contextlib.suppress(DreamsuiteError):
                await asyncio.to_thread(self.resync_now)
            if self.resync_seconds <= 0:
                return
            await asyncio.sleep(self.resync_seconds)

    # -- helpers ----------------------------------------------------------------------------------

    def _published(self) -> list[str]:
        return [key.removeprefix(PUBLISHED_PREFIX).removesuffix(".json")
                for key in self.store.iter_keys(PUBLISHED_PREFIX) if key.endswith(".json")]

    def _key(self) -> str | None:
        if self.key_file is not None:
            try:
                return read_management_key(self.key_file)
            except OSError as exc:
                raise FailedPrecondition(
                    f"cannot read TorchServe's management key from --torchserve-management-key-"
                    f"file {self.key_file} ({exc.strerror or exc})") from None
        return self.key

    def _endpoints(self) -> list[str]:
        assert self.management
        return management_endpoints(self.management)

    def _register(self, endpoint: str, name: str, archive: Artifact, data: bytes | None, *,
                  replace: bool) -> None:
        """Register ``archive`` as ``name`` on one replica, unregistering an old ``name``
        first when ``replace``."""
        key = self._key()
        if replace:
            unregister_model(endpoint, name, key)
        if self.model_store is not None:
            target = self.model_store / f"{name}.mar"
            if data is not None or not target.is_file():
                _write_atomically(target, data if data is not None else
                                  self.store.get(archive.uri))
        else:
            upload_archive(endpoint, name, data if data is not None else
                           self.store.get(archive.uri), key)
        register_model(endpoint, f"{name}.mar", key, timeout=self.register_timeout)


def _write_atomically(path: Path, data: bytes) -> None:
    part = path.with_name(f".{path.name}.part")
    part.write_bytes(data)
    part.replace(path)
