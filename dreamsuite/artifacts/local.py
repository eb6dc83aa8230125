"""A local-directory artifact store (``file:///path``), the embedded default.

Objects are written to a temporary file and renamed into place, so a reader never sees half an
object; metadata lives next to each object in ``<key>.meta.json``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlparse

from dreamsuite.artifacts.base import (
    Artifact,
    ArtifactStore,
    Listing,
    check_decoded,
    check_key,
    check_uri,
    clean_metadata,
    content_key,
    suffix_for,
)
from dreamsuite.errors import InvalidArgument, NotFound, Unavailable, shorten

__all__ = ["LocalStore"]

#: What the OS says about a path a caller made up (too long, through a file, a symlink loop):
#: no such artifact, not a failing disk.
_NO_SUCH_PATH = {errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP, errno.EINVAL}


class LocalStore(ArtifactStore):
    """Artifacts under ``root``; URIs are ``file://`` URLs of the object files."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.url = self.root.as_uri()

    def _path(self, key: str) -> Path:
        path = _resolve(self.root / key, key)
        if self.root not in path.parents:
            raise InvalidArgument(f"artifact key {shorten(key)!r} is outside the store")
        return path

    def put(self, data: bytes, *, content_type: str = "image/png",
            metadata: Mapping[str, str] | None = None) -> Artifact:
        key, digest = content_key(data, suffix_for(content_type))
        path = self._path(key)
        meta = {"content-type": content_type, **clean_metadata(metadata)}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.is_file():
                # Metadata first, the object last: an object that exists is complete.
                _atomic_write(path.with_name(path.name + ".meta.json"),
                              json.dumps(meta, sort_keys=True).encode())
                _atomic_write(path, data)
        except OSError as exc:
            raise Unavailable(f"artifact store {self.url} cannot write {key}: {exc}") from None
        return Artifact(path.as_uri(), key, digest, len(data), content_type,
                        {k: v for k, v in meta.items() if k != "content-type"})

    def put_at(self, key: str, data: bytes, *, content_type: str = "application/octet-stream",
               metadata: Mapping[str, str] | None = None) -> Artifact:
        path = self._path(check_key(key))
        digest = hashlib.sha256(data).hexdigest()
        meta = {"content-type": content_type, "content-sha256": digest,
                **clean_metadata(metadata)}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(path.with_name(path.name + ".meta.json"),
                          json.dumps(meta, sort_keys=True).encode())
            _atomic_write(path, data)
        except OSError as exc:
            raise Unavailable(f"artifact store {self.url} cannot write {key}: {exc}") from None
        return Artifact(path.as_uri(), key, digest, len(data), content_type,
                        {k: v for k, v in meta.items() if k not in _RESERVED})

    def key_of(self, uri: str) -> str:
        check_uri(uri)
        if "://" not in uri:
            return uri
        try:
            parsed = urlparse(uri)
        except ValueError as exc:  # e.g. an unclosed "[" in the host, a port out of range
            raise InvalidArgument(f"artifact URI {shorten(uri)!r} is malformed ({exc})") from None
        if parsed.scheme != "file":
            raise InvalidArgument(f"{shorten(uri)!r} is not in this service's artifact store "
                                  f"{self.url}")
        text = check_decoded(unquote(parsed.path), uri)
        path = _resolve(Path(text), uri)
        if self.root not in path.parents:
            raise InvalidArgument(f"{shorten(uri)!r} is not in this service's artifact store "
                                  f"{self.url}")
        return path.relative_to(self.root).as_posix()

    def get(self, uri: str) -> bytes:
        path = self._path(self.key_of(uri))
        try:
            if path.is_dir():
                raise NotFound(f"artifact {shorten(uri)} is a folder of the store, not an "
                               "artifact")
            return path.read_bytes()
        except OSError as exc:
            if exc.errno in _NO_SUCH_PATH:
                raise NotFound(f"artifact {shorten(uri)} does not exist") from None
            raise Unavailable(f"artifact store {self.url} cannot read {shorten(uri)}: "
                              f"{exc.strerror}") from None

    def stat(self, uri: str) -> Artifact:
        key = self.key_of(uri)
        path = self._path(key)
        if not _is_file(path):
            raise NotFound(f"artifact {shorten(uri)} does not exist")
        meta_path = path.with_name(path.name + ".meta.json")
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        content_type = meta.pop("content-type", "application/octet-stream")
        # Named objects record their digest; content-addressed keys are their digest.
        digest = meta.pop("content-sha256", None) or Path(key).name.split(".", 1)[0]
        return Artifact(path.as_uri(), key, digest, path.stat().st_size, content_type, meta)

    def list(self, prefix: str = "", *, limit: int = 1000, start_after: str = "") -> Listing:
        whole = not prefix or prefix.rstrip("/") == self.url.rstrip("/")
        key_prefix = "" if whole else self.key_of(prefix)
        if prefix.startswith("file://") and prefix.endswith("/") and key_prefix:
            key_prefix += "/"  # Path.resolve drops the slash that makes it a folder prefix
        folder = self._folder_of(key_prefix)
        if limit < 1:
            raise InvalidArgument("limit must be at least 1")
        keys = sorted(
            key for key in (p.relative_to(self.root).as_posix() for p in folder.rglob("*")
                            if p.is_file() and not _internal(p.name))
            if key.startswith(key_prefix) and key > start_after
        ) if _is_dir(folder) else []
        page = keys[:limit]
        return Listing(page, page[-1] if len(keys) > limit else "")

    def _folder_of(self, key_prefix: str) -> Path:
        """The deepest folder that holds every key starting with ``key_prefix``."""
        folder = key_prefix.rsplit("/", 1)[0] if "/" in key_prefix else ""
        return self._path(folder) if folder else self.root

    def presign(self, uri: str, *, expires_seconds: int = 3600) -> str:
        # A directory has no signer: the file URL is what a client on this machine can open.
        return self._path(self.key_of(uri)).as_uri()


def _resolve(path: Path, what: str) -> Path:
    try:
        return path.resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise InvalidArgument(f"artifact {shorten(what)!r} is not a usable path ({exc})") from None


def _is_file(path: Path) -> bool:
    """``path.is_file()``, false for paths the OS refuses to look up (too long, ...)."""
    try:
        return path.is_file()
    except OSError as exc:
        if exc.errno in _NO_SUCH_PATH:
            return False
        raise


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError as exc:
        if exc.errno in _NO_SUCH_PATH:
            return False
        raise


#: Meta-file entries that are the store's own, not the caller's metadata.
_RESERVED = ("content-type", "content-sha256")


def _internal(name: str) -> bool:
    """Files the store keeps beside objects: metadata and unfinished writes."""
    return name.endswith((".meta.json", ".part"))


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
