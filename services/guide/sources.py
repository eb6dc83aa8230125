"""Where the guide service's images come from: inline bytes, artifact URIs, a store prefix."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from dreamsuite.artifacts import ArtifactStore
from dreamsuite.engine.config import check_count, field_errors
from dreamsuite.errors import InvalidArgument, shorten
from dreamsuite.images import IMAGE_SUFFIXES

__all__ = ["ImageSources"]


class ImageSources:
    """Reads artifact URIs and lists prefixes of the service's artifact store (if any)."""

    def __init__(self, store: ArtifactStore | None):
        self.store = store

    def _need_store(self, what: str) -> ArtifactStore:
        if self.store is None:
            raise InvalidArgument(f"{what}: this guide service has no artifact store "
                                  "(--artifacts); send the images inline")
        return self.store

    async def read(self, field: str, data: bytes, uri: str) -> bytes:
        """The encoded image of one ImageRef (``data`` or ``uri``)."""
        if data:
            return data
        if not uri:
            raise InvalidArgument(f"{field}: give the image bytes or an artifact URI")
        store = self._need_store(field)
        with field_errors(field):
            return await asyncio.to_thread(store.get, uri)

    async def read_all(self, field: str, refs: Sequence[tuple[bytes, str]], *,
                       limit: int) -> list[bytes]:
        """The images of ``refs`` (at most ``limit`` of them)."""
        check_count(len(refs), field, limit, "images")
        return list(await asyncio.gather(*(
            self.read(f"{field}[{i}]", data, uri) for i, (data, uri) in enumerate(refs))))

    async def under_prefix(self, prefix: str, limit: int) -> list[bytes]:
        """Every image object under ``prefix`` (sorted by key), at most ``limit`` of them."""
        store = self._need_store("prefix")
        with field_errors("prefix"):
            keys = await asyncio.to_thread(
                lambda: [k for k in store.iter_keys(prefix)
                         if k.lower().endswith(IMAGE_SUFFIXES)])
            if not keys:
                raise InvalidArgument(f"no images under {shorten(prefix)!r}")
            if len(keys) > limit:
                raise InvalidArgument(f"{len(keys)} images under {shorten(prefix)!r}, more "
                                      f"than the {limit} one selection may use")
            return list(await asyncio.gather(*(asyncio.to_thread(store.get, k) for k in keys)))
