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
Every publication is a new TorchServe model version (the archive's MANIFEST gets a version of
its own, the publication's UTC time, also kept in ``published/<name>.json``). Publishing a name
TorchServe already serves replaces it without a gap: the new version is registered beside the
old one, which keeps answering ``/predictions/<name>`` (the default version) until the new one
has its workers and is made the default; then the old versions are unregistered, once the
requests they had accepted are through (their queue empty, then ``drain`` seconds). When the
new version fails to register (an archive TorchServe cannot load, a replica that is down), the
old one keeps serving, the model store gets the old archive back and the error says so; the
store's ``published/<name>.*`` are only replaced when some replica serves the new version.
Replicas that start later, restart, lack a published model or serve another version of it get
the published version from :meth:`Publisher.resync_now`, which runs at start and every
``resync`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dreamsuite.artifacts import Artifact, ArtifactStore
from dreamsuite.errors import (
    DreamsuiteError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    shorten,
)
from dreamsuite.torchserve import (
    MODEL_NAME,
    PUBLISHED_PREFIX,
    describe_model,
    management_endpoints,
    model_versions,
    read_management_key,
    register_model,
    served_models,
    set_default_version,
    unregister_model,
)
from dreamsuite.torchserve_gateway import upload_archive
from handlers import DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCH_DELAY_MS
from handlers.archive import build_dream2dream_archive, dream2dream_record
from services.gan.metrics import GanMetrics

__all__ = ["PUBLISHED_PREFIX", "MAX_BATCH_SIZE", "PublishRequest", "Published", "Publisher"]

log = logging.getLogger(__name__)

MAX_BATCH_SIZE = 256
_ARCHIVE_TYPE = "application/java-archive"
_MANIFEST = "MAR-INF/MANIFEST.json"


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
    #: The TorchServe model version now served (the publication's UTC time).
    version: str = ""


class PartlyPublished(Unavailable):
    """Some TorchServe replicas serve the new version, others failed (``UNAVAILABLE``)."""


class Publisher:
    """Builds, stores and registers archives (thread-safe; one publication at a time)."""

    def __init__(self, store: ArtifactStore, *, management: str | None = None,
                 key_file: Path | None = None, key: str | None = None,
                 model_store: Path | None = None, resync: float = 0.0,
                 register_timeout: float = 300.0, drain: float = 2.0,
                 metrics: GanMetrics | None = None):
        self.store = store
        self.metrics = metrics
        self.management = management
        self.key_file = key_file
        self.key = key
        self.model_store = model_store
        self.resync_seconds = resync
        self.register_timeout = register_timeout
        self.drain_seconds = drain
        self._lock = threading.Lock()

    # -- PublishModel ---------------------------------------------------------------------------

    async def publish(self, request: PublishRequest) -> Published:
        return await asyncio.to_thread(self._counted, request)

    def _counted(self, request: PublishRequest) -> Published:
        """:meth:`publish_now`, timed and counted by outcome (when the service has metrics)."""
        started, outcome = time.monotonic(), "error"
        try:
            published = self.publish_now(request)
            outcome = "ok"
            return published
        except PartlyPublished:
            outcome = "partial"
            raise
        except DreamsuiteError as exc:  # the request or the service's set-up, not TorchServe
            outcome = "error" if isinstance(exc, Unavailable) else "refused"
            raise
        finally:
            if self.metrics is not None:
                self.metrics.publications.labels(outcome).inc()
                self.metrics.publish_seconds.observe(time.monotonic() - started)

    def publish_now(self, request: PublishRequest) -> Published:
        """Build ``request.model``'s archive as a new version, register it everywhere, store
        it (when some replica serves it)."""
        if not self.management:
            raise FailedPrecondition(
                "PublishModel needs TorchServe's management API: start the GAN service with "
                "--torchserve-management http://HOST:8081 and the management key "
                "(--torchserve-management-key-file, or DREAMSUITE_TORCHSERVE_MANAGEMENT_KEY)")
        record = dream2dream_record(self.store, request.model)  # checked before the lock
        with self._lock, tempfile.TemporaryDirectory(prefix="dreamsuite-publish-") as tmp:
            version = _publication_version()
            path = build_dream2dream_archive(
                self.store, request.model, Path(tmp), name=request.name,
                batch_size=request.batch_size, max_batch_delay=request.max_batch_delay_ms,
                record=record, version=version)
            data = path.read_bytes()
            registered, failed = self._serve_everywhere(request.name, data)
            if not registered:  # the published archive stays the one that is served
                raise Unavailable("; ".join(failed))
            archive = self.store.put_at(f"{PUBLISHED_PREFIX}{request.name}.mar", data,
                                        content_type=_ARCHIVE_TYPE)
            conditions = [str(c.get("name", "?")) for c in record.get("conditions") or []]
            # The list resync keeps every replica to.
            self.store.put_at(f"{PUBLISHED_PREFIX}{request.name}.json", json.dumps({
                "name": request.name, "model": request.model, "step": record.get("step"),
                "version": version, "archive": archive.uri, "sha256": archive.sha256,
                "conditions": conditions, "batch_size": request.batch_size,
                "max_batch_delay_ms": request.max_batch_delay_ms,
                "published": time.time()}, indent=1).encode(),
                content_type="application/json")
        if failed:
            raise PartlyPublished(f"{'; '.join(failed)}; {request.name!r} version {version} "
                                  f"is served by {', '.join(registered)}")
        log.info("published %s version %s (model %s) on %s", request.name, version,
                 request.model, registered)
        return Published(request.name, archive, self.store.presign(archive.uri), registered,
                         conditions, version)

    def _serve_everywhere(self, name: str, data: bytes) -> tuple[list[str], list[str]]:
        """Serve ``data`` on every replica: the endpoints that serve it now, and why others
        failed."""
        registered, failed = [], []
        for endpoint in self._endpoints():
            try:
                self._serve(endpoint, name, data)
                registered.append(endpoint)
            except Unavailable as exc:
                failed.append(str(exc))
        return registered, failed

    # -- every replica serves every published model ----------------------------------------------

    def resync_now(self) -> dict[str, list[str]]:
        """Register each published model on each replica that lacks it or serves another
        version of it by default; ``{endpoint: names registered}``. A replica that fails
        (unreachable, its key unreadable) is logged and tried again next time; so is a model
        whose registration fails for another reason (its archive missing, a reply not
        understood), without holding up the others."""
        if not self.management:
            return {}
        done: dict[str, list[str]] = {}
        with self._lock:
            published = self._published()
            if not published:
                return {}
            for endpoint in self._endpoints():
                try:
                    key = self._key()
                    served = set(served_models(endpoint, key))
                except Exception as exc:  # noqa: BLE001 (any: the loop must go on)
                    log.warning("resync of %s failed: %s", endpoint, exc)
                    continue
                done[endpoint] = []
                for name, version in sorted(published.items()):
                    try:
                        if name in served and not (version and version != _default_version(
                                describe_model(endpoint, name, key))):
                            continue
                        self._serve(endpoint, name, self.store.get(f"{PUBLISHED_PREFIX}{name}.mar"))
                    except Unavailable as exc:  # the replica went away: next time
                        log.warning("resync of %s failed at %s: %s", endpoint, name, exc)
                        break
                    except Exception as exc:  # noqa: BLE001 (this model's trouble alone)
                        log.warning("resync of %s on %s failed: %s", name, endpoint, exc)
                        continue
                    done[endpoint].append(name)
                    if self.metrics is not None:
                        self.metrics.resync_registrations.inc()
        if any(done.values()):
            log.info("registered published models: %s", done)
        return done

    async def run_resync(self) -> None:
        """Resync at start and then every ``resync_seconds`` (when > 0), until cancelled."""
        while True:
            try:
                await asyncio.to_thread(self.resync_now)
            except Exception:  # a bug: logged, and the next period tries again
                log.exception("resync of the published models failed")
            if self.resync_seconds <= 0:
                return
            await asyncio.sleep(self.resync_seconds)

    # -- one replica ------------------------------------------------------------------------------

    def _serve(self, endpoint: str, name: str, data: bytes) -> None:
        """Make the archive ``data`` (of ``name``, its MANIFEST's version) the version that
        ``endpoint`` serves as ``name``, without a gap: register it beside the versions there,
        wait for its workers, make it the default, then retire the others. On failure the old
        default keeps serving, the model store gets its archive back, and :class:`Unavailable`
        says so."""
        key = self._key()
        version = _archive_version(data)
        old = model_versions(endpoint, name, key)
        restore: Callable[[], None] = _nothing
        try:
            restore = self._place(endpoint, name, data, key)
            register_model(endpoint, f"{name}.mar", key, timeout=self.register_timeout)
            self._wait_for_workers(endpoint, name, version, key)
            set_default_version(endpoint, name, version, key)
        except Unavailable as exc:
            self._undo(endpoint, name, version, key, old, restore)
            kept = f"; version {old[0]} of {name!r} keeps serving there" if old else ""
            raise Unavailable(f"{exc}{kept}") from None
        self._retire(endpoint, name, [v for v in old if v != version], key)

    def _place(self, endpoint: str, name: str, data: bytes,
               key: str | None) -> Callable[[], None]:
        """Write ``data`` as ``NAME.mar`` where ``endpoint``'s TorchServe registers it from
        (and loads it at its next start); returns what puts the archive before it back."""
        if self.model_store is not None:
            target = self.model_store / f"{name}.mar"
            before = target.read_bytes() if target.is_file() else None
            _write_atomically(target, data)
            if before is None:
                return lambda: target.unlink(missing_ok=True)
            return lambda: _write_atomically(target, before)
        upload_archive(endpoint, name, data, key)

        def restore() -> None:  # the gateway deletes nothing: put back what is published
            with contextlib.suppress(NotFound):
                upload_archive(endpoint, name,
                               self.store.get(f"{PUBLISHED_PREFIX}{name}.mar"), key)
        return restore

    def _wait_for_workers(self, endpoint: str, name: str, version: str, key: str | None) -> None:
        deadline = time.monotonic() + self.register_timeout
        while not any(w.get("status") == "READY" for entry in describe_model(
                endpoint, name, key, version=version) for w in entry.get("workers", [])):
            if time.monotonic() > deadline:
                raise Unavailable(f"version {version} of {name!r} at {endpoint} had no ready "
                                  f"worker after {self.register_timeout:.0f} s")
            time.sleep(0.2)

    def _undo(self, endpoint: str, name: str, version: str, key: str | None, old: list[str],
              restore: Callable[[], None]) -> None:
        """After a failed registration: unregister the new version where TorchServe kept it,
        put the model store's old archive back (each step on its own, logged when it fails)."""
        steps = [restore]
        if version not in old:
            steps.insert(0, lambda: unregister_model(endpoint, name, key, version=version))
        for step in steps:
            try:
                step()
            except (DreamsuiteError, OSError) as exc:
                log.warning("cleaning up after the failed registration of %s version %s at %s: "
                            "%s", name, version, endpoint, exc)

    def _retire(self, endpoint: str, name: str, versions: list[str], key: str | None) -> None:
        """Unregister the former ``versions`` once their queues are empty and ``drain`` seconds
        more have passed (TorchServe fails the requests a version's workers still hold when it
        is unregistered); one that cannot be unregistered is logged and left registered."""
        if not versions:
            return
        try:
            deadline = time.monotonic() + self.register_timeout
            while time.monotonic() < deadline and any(
                    entry.get("jobQueueStatus", {}).get("pendingRequests", 0)
                    for v in versions for entry in describe_model(endpoint, name, key, version=v)):
                time.sleep(0.2)
            time.sleep(self.drain_seconds)
            for version in versions:
                unregister_model(endpoint, name, key, version=version)
        except Unavailable as exc:  # the new version serves: the next publication retires them
            log.warning("former version(s) %s of %s stay registered at %s: %s", versions, name,
                        endpoint, exc)

    # -- helpers ----------------------------------------------------------------------------------

    def _published(self) -> dict[str, str | None]:
        """``{name: version}`` of the published models (``None``: published before versions)."""
        published = {}
        for key in self.store.iter_keys(PUBLISHED_PREFIX):
            if key.endswith(".json"):
                try:
                    record = json.loads(self.store.get(key))
                    version = record.get("version")
                except (ValueError, AttributeError, NotFound) as exc:  # cut short, not an object
                    log.warning("published record %s is unreadable, skipped: %s", key, exc)
                    continue
                published[key.removeprefix(PUBLISHED_PREFIX).removesuffix(".json")] = version
        return published

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


def _publication_version() -> str:
    """A TorchServe model version for a publication made now: its UTC time to the
    millisecond (``20250317.112057.123``), new for every publication of one GAN service."""
    now = time.time()
    return f"{time.strftime('%Y%m%d.%H%M%S', time.gmtime(now))}.{int(now * 1000) % 1000:03d}"


def _archive_version(data: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return str(json.loads(archive.read(_MANIFEST))["model"]["modelVersion"])


def _nothing() -> None:
    pass


def _default_version(described: list[dict]) -> str | None:
    return str(described[0]["modelVersion"]) if described else None


def _write_atomically(path: Path, data: bytes) -> None:
    part = path.with_name(f".{path.name}.part")
    part.write_bytes(data)
    part.replace(path)
