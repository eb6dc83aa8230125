"""The artifact store interface, content-addressed keys and bounded retries.

A store keeps immutable objects under content-addressed keys (``sha256/ab/<hex>.png``) with
string metadata, and hands out URIs (``s3://bucket/key``, ``file:///srv/dreams/key``) and presigned
GET URLs. Failures to reach the backing store raise :class:`~dreamsuite.errors.Unavailable`, a
missing object :class:`~dreamsuite.errors.NotFound`.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from dreamsuite.errors import InvalidArgument, Unavailable

__all__ = [
    "Artifact",
    "ArtifactStore",
    "RetryPolicy",
    "content_key",
    "suffix_for",
    "METADATA_LIMIT_BYTES",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: S3 allows 2 KiB of user metadata per object; metadata is trimmed to fit.
METADATA_LIMIT_BYTES = 2000

_SUFFIXES = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "application/json": ".json",
}


def suffix_for(content_type: str) -> str:
    """File suffix of a MIME type (``.bin`` when unknown)."""
    return _SUFFIXES.get(content_type, ".bin")


def content_key(data: bytes, suffix: str = ".png") -> tuple[str, str]:
    """``(key, sha256 hex)`` of ``data``: ``sha256/ab/<hex><suffix>``."""
    digest = hashlib.sha256(data).hexdigest()
    return f"sha256/{digest[:2]}/{digest}{suffix}", digest


@dataclass(frozen=True)
class Artifact:
    """A stored object: its URI, key, digest, size, MIME type and metadata."""

    uri: str
    key: str
    sha256: str
    size: int
    content_type: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and jitter."""

    attempts: int = 3
    base_delay: float = 0.1
    max_delay: float = 2.0

    def run(self, what: str, fn: Callable[[], T], retryable: Callable[[Exception], bool]) -> T:
        """``fn()``, retried while ``retryable(error)``; then :class:`Unavailable`."""
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except Exception as exc:
                if not retryable(exc):
                    raise
                if attempt == self.attempts:
                    raise Unavailable(
                        f"{what} failed after {self.attempts} attempts: {_brief(exc)}"
                    ) from None
                delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
                log.warning("%s failed (attempt %d of %d), retrying: %s",
                            what, attempt, self.attempts, _brief(exc))
                time.sleep(delay * (0.5 + random.random() / 2))
        raise AssertionError("unreachable")


def _brief(exc: Exception) -> str:
    exc = getattr(exc, "reason", None) or exc  # urllib3 wraps the cause (connection refused...)
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:300]}"


#: Longest artifact URI or key accepted.
MAX_URI_LENGTH = 2048


def check_uri(uri: str) -> str:
    """``uri`` if it is a plausible artifact URI or key; :class:`InvalidArgument` for empty,
    overlong, or control-character (NUL included) URIs."""
    if not uri:
        raise InvalidArgument("artifact URI is empty")
    if len(uri) > MAX_URI_LENGTH:
        raise InvalidArgument(f"artifact URI is {len(uri)} characters long; at most "
                              f"{MAX_URI_LENGTH}")
    if _has_control(uri):
        raise InvalidArgument(f"artifact URI {uri[:80]!r} contains control characters")
    return uri


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def check_decoded(text: str, uri: str) -> str:
    """``text``, the percent-decoded path of ``uri``, if it holds no control characters (a
    ``%00`` passes :func:`check_uri`); :class:`InvalidArgument` otherwise."""
    if _has_control(text):
        raise InvalidArgument(f"artifact URI {uri[:200]!r} encodes control characters")
    return text


@dataclass(frozen=True)
class Listing:
    """One page of keys under a prefix (sorted); ``next_after`` continues the listing, empty
    when this page is the last."""

    keys: list[str]
    next_after: str = ""


class ArtifactStore(ABC):
    """Where results and inputs are kept. Implementations are thread-safe."""

    #: The store's own URL, e.g. ``s3://dreams?endpoint=minio:9000`` (no secrets).
    url: str

    @abstractmethod
    def put(self, data: bytes, *, content_type: str = "image/png",
            metadata: Mapping[str, str] | None = None) -> Artifact:
        """Store ``data`` under its content key (a no-op if already there) and return it.

        The object appears whole or not at all."""

    @abstractmethod
    def put_at(self, key: str, data: bytes, *, content_type: str = "application/octet-stream",
               metadata: Mapping[str, str] | None = None) -> Artifact:
        """Store ``data`` under ``key`` (replacing what is there) and return it: for named
        objects such as data sets, checkpoints and ``latest`` pointers. The object appears
        whole or not at all, so a reader never sees half of it."""

    @abstractmethod
    def get(self, uri: str) -> bytes:
        """The bytes of the artifact ``uri`` (or key); :class:`NotFound` if absent."""

    @abstractmethod
    def stat(self, uri: str) -> Artifact:
        """The artifact ``uri`` (or key) with its metadata; :class:`NotFound` if absent."""

    @abstractmethod
    def presign(self, uri: str, *, expires_seconds: int = 3600) -> str:
        """A GET URL for ``uri`` that a client can fetch without credentials."""

    @abstractmethod
    def key_of(self, uri: str) -> str:
        """The key of ``uri`` in this store (a bare key passes through);
        :class:`InvalidArgument` if the URI belongs to another store."""

    @abstractmethod
    def list(self, prefix: str = "", *, limit: int = 1000, start_after: str = "") -> Listing:
        """Up to ``limit`` keys that start with ``prefix`` (a key prefix or a URI of this
        store), sorted, after ``start_after``."""

    def iter_keys(self, prefix: str = "", *, page: int = 1000) -> Iterator[str]:
        """Every key under ``prefix``, page by page."""
        after = ""
        while True:
            listing = self.list(prefix, limit=page, start_after=after)
            yield from listing.keys
            if not listing.next_after:
                return
            after = listing.next_after

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Release connections."""


def check_key(key: str) -> str:
    """A key for :meth:`ArtifactStore.put_at`: relative, no ``..``, no empty parts."""
    check_uri(key)
    parts = key.split("/")
    if "://" in key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InvalidArgument(f"artifact key {key[:200]!r} must be a relative path without "
                              "empty, '.' or '..' parts")
    return key


def clean_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Metadata as S3 accepts it: lower-case ASCII keys and values, trimmed to the size limit."""
    out: dict[str, str] = {}
    used = 0
    for raw_key, raw_value in (metadata or {}).items():
        key = "".join(c if c.isalnum() or c == "-" else "-" for c in raw_key.lower())
        value = str(raw_value).encode("ascii", "replace").decode("ascii")
        value = "".join(c if 32 <= ord(c) < 127 else "?" for c in value)
        room = METADATA_LIMIT_BYTES - used - len(key)
        if room <= 0:
            break
        value = value[:room]
        out[key] = value
        used += len(key) + len(value)
    return out
