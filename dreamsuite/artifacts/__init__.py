"""Artifact stores: where inputs, octaves and results are kept.

>>> store = open_store("file:///srv/artifacts")                    # the embedded default
>>> store = open_store("s3://dreams?endpoint=minio:9000&secure=false")
>>> art = store.put(png_bytes, metadata={"backbone": "efficientnet_lite0"})
>>> art.uri, store.presign(art.uri)
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from dreamsuite.artifacts.base import Artifact, ArtifactStore, Listing, RetryPolicy, content_key
from dreamsuite.artifacts.local import LocalStore
from dreamsuite.artifacts.s3 import S3Store
from dreamsuite.errors import InvalidArgument

__all__ = [
    "Artifact",
    "ArtifactStore",
    "Listing",
    "LocalStore",
    "RetryPolicy",
    "S3Store",
    "content_key",
    "open_store",
    "DEFAULT_ARTIFACTS",
]

#: The embedded default: a folder ``artifacts`` in the working directory.
DEFAULT_ARTIFACTS = "artifacts"


def open_store(url: str | os.PathLike) -> ArtifactStore:
    """The store that ``url`` names: ``s3://BUCKET?endpoint=...``, ``file:///path`` or a path."""
    text = os.fspath(url)
    parsed = urlparse(text)
    if parsed.scheme == "s3":
        return S3Store.from_url(text)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise InvalidArgument(f"{text!r}: a file URL needs an absolute path, file:///path")
        return LocalStore(Path(unquote(parsed.path)))
    if parsed.scheme in ("", None) or len(parsed.scheme) == 1:  # a path (or a Windows drive)
        return LocalStore(Path(text))
    raise InvalidArgument(f"unsupported artifact store {text!r}: use "
                          "s3://BUCKET?endpoint=HOST:PORT or file:///path")
