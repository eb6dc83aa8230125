"""Per-octave and final outputs of a dream: previews, stored PNGs, presigned URLs.

All functions here block (encoding, uploads): the runner calls them off the event loop.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from dreamsuite.artifacts import Artifact, ArtifactStore, Listing
from dreamsuite.engine import DreamProgress, DreamResult, provenance_text
from dreamsuite.images import (
    encode_png,
    encode_preview,
    load_image,
    png_size,
    png_with_text,
    to_pil,
)
from services.dream.jobs import OutputSpec, PreparedJob
from services.dream.metrics import DreamMetrics

__all__ = ["StoredImage", "FinalOutput", "OctaveOutput", "Publisher", "InstrumentedStore",
           "artifact_metadata"]


@dataclass(frozen=True)
class StoredImage:
    """An artifact and a URL a client can fetch it from."""

    artifact: Artifact
    presigned_url: str


@dataclass(frozen=True)
class FinalOutput:
    """The finished dream."""

    stored: StoredImage
    size: tuple[int, int]  # (H, W)
    provenance_json: str
    losses: list[float]
    warnings: list[str]
    input: StoredImage
    png: bytes = b""  # inline copy, when asked for and small enough


@dataclass(frozen=True)
class OctaveOutput:
    """One update of the stream: one octave."""

    octave: int
    octaves: int
    size: tuple[int, int]  # (H, W)
    loss: float
    elapsed: float
    preview: bytes = b""
    preview_type: str = ""
    stored: StoredImage | None = None
    png: bytes = b""
    result: FinalOutput | None = field(default=None)


def _preview(image: torch.Tensor, spec: OutputSpec) -> tuple[bytes, str]:
    if spec.preview_format == "none":
        return b"", ""
    if spec.preview_format == "jpeg":
        data = encode_preview(image, max_side=spec.preview_max_side,
                              max_bytes=spec.preview_max_bytes)
        return data, "image/jpeg"
    pil = to_pil(image)
    pil.thumbnail((spec.preview_max_side, spec.preview_max_side))
    while True:
        buffer = io.BytesIO()
        pil.save(buffer, format="PNG")
        if buffer.tell() <= spec.preview_max_bytes or min(pil.size) <= 8:
            return buffer.getvalue(), "image/png"
        pil = pil.resize((max(8, pil.width * 3 // 4), max(8, pil.height * 3 // 4)))


def artifact_metadata(provenance: Mapping) -> dict[str, str]:
    """The request parameters of a dream as flat object metadata (S3 keeps 2 KiB of it)."""
    config = dict(provenance.get("config", {}))
    maplist = config.pop("maplist", None) or {}
    meta = {"dreamsuite-version": str(provenance.get("dreamsuite", "")),
            "input-sha256": str(provenance.get("input_sha256", "")),
            "input": str(provenance.get("input", "")),
            "guided": str(provenance.get("guided", False)).lower(),
            "device": str(provenance.get("device", "")),
            "size": "x".join(str(v) for v in provenance.get("size", [])[::-1])}
    meta.update({k.replace("_", "-"): str(v) for k, v in config.items()})
    meta["layers"] = ",".join(t["layer"] for t in maplist.get("layers", []))
    compact = json.dumps(maplist, separators=(",", ":"))
    if len(compact) <= 1000:  # long (guided) maplists live in the PNG's provenance only
        meta["maplist"] = compact
    return _within_budget(meta)


#: S3 keeps at most 2 KiB of user metadata (keys and values); a put over it fails, so the
#: metadata of an artifact stays under this, whatever the request held.
METADATA_BUDGET = 1800


def _within_budget(meta: dict[str, str]) -> dict[str, str]:
    """``meta`` without its longest values until keys and values fit :data:`METADATA_BUDGET`
    bytes (what is dropped stays in the PNG's provenance); ``truncated`` names them."""
    def with_note(m: dict[str, str], dropped: list[str]) -> dict[str, str]:
        return {**m, "truncated": ",".join(dropped)} if dropped else m

    def size(m: dict[str, str]) -> int:
        return sum(len(k.encode()) + len(v.encode()) for k, v in m.items())

    dropped: list[str] = []
    while meta and size(with_note(meta, dropped)) > METADATA_BUDGET:
        longest = max(meta, key=lambda k: len(meta[k].encode()))
        dropped.append(longest)
        meta = {k: v for k, v in meta.items() if k != longest}
    return with_note(meta, dropped)


class InstrumentedStore(ArtifactStore):
    """An artifact store whose calls are timed and counted in the ``dream_artifact_store_*``
    metrics."""

    def __init__(self, store: ArtifactStore, metrics: DreamMetrics):
        self.inner = store
        self.url = store.url
        self.metrics = metrics

    def put(self, data: bytes, *, content_type: str = "image/png",
            metadata: Mapping[str, str] | None = None) -> Artifact:
        with self.metrics.store_call("put"):
            return self.inner.put(data, content_type=content_type, metadata=metadata)

    def put_at(self, key: str, data: bytes, *, content_type: str = "application/octet-stream",
               metadata: Mapping[str, str] | None = None) -> Artifact:
        with self.metrics.store_call("put"):
            return self.inner.put_at(key, data, content_type=content_type, metadata=metadata)

    def get(self, uri: str) -> bytes:
        with self.metrics.store_call("get"):
            return self.inner.get(uri)

    def stat(self, uri: str) -> Artifact:
        with self.metrics.store_call("stat"):
            return self.inner.stat(uri)

    def presign(self, uri: str, *, expires_seconds: int = 3600) -> str:
        with self.metrics.store_call("presign"):
            return self.inner.presign(uri, expires_seconds=expires_seconds)

    def key_of(self, uri: str) -> str:
        return self.inner.key_of(uri)

    def list(self, prefix: str = "", *, limit: int = 1000, start_after: str = "") -> Listing:
        with self.metrics.store_call("list"):
            return self.inner.list(prefix, limit=limit, start_after=start_after)

    def close(self) -> None:
        self.inner.close()


class Publisher:
    """Turns octave images and results into outputs, storing what the request asks for."""

    def __init__(self, store: ArtifactStore, *, inline_limit: int):
        self.store = store
        self.inline_limit = inline_limit

    def _put(self, data: bytes, content_type: str, metadata: Mapping[str, str]) -> StoredImage:
        artifact = self.store.put(data, content_type=content_type, metadata=metadata)
        return StoredImage(artifact, self.store.presign(artifact.uri))

    def _inline(self, png: bytes, spec: OutputSpec) -> bytes:
        return png if spec.inline_images and len(png) <= self.inline_limit else b""

    def _keep_input(self, data: bytes, uri: str, role: str) -> StoredImage:
        """An input as an artifact: the one it came from, or stored now (content-addressed)."""
        if uri:
            return StoredImage(self.store.stat(uri), self.store.presign(uri))
        return self._put(data, _content_type(data), {"role": role})

    def octave(self, job: PreparedJob, p: DreamProgress) -> OctaveOutput:
        """The update for the octave that ``p`` (an octave's last step) ends."""
        assert p.image is not None
        spec = job.spec.output
        preview, preview_type = _preview(p.image, spec)
        stored, png = None, b""
        if spec.store_octaves:
            png = encode_png(p.image)
            stored = self._put(png, "image/png", {"octave": str(p.octave),
                                                  "octaves": str(p.octaves)})
        return OctaveOutput(p.octave, p.octaves, p.size, p.loss, p.elapsed, preview,
                            preview_type, stored, self._inline(png, spec))

    def final(self, job: PreparedJob, last: DreamProgress, result: DreamResult) -> OctaveOutput:
        """The last octave's update, carrying the stored result and its provenance."""
        update = self.octave(job, last)
        source = self._keep_input(job.input_data, job.input_uri, "input")
        guides = [self._keep_input(data, uri, "guide").artifact.uri
                  for data, uri in job.guide_sources]
        # Artifact URIs of the input and guides: `dream --remote --from-png` re-runs the dream.
        provenance = {**result.provenance, "input": source.artifact.uri, "guides": guides}
        png = encode_png(result.image, provenance_text(provenance))
        stored = self._put(png, "image/png", artifact_metadata(provenance))
        final = FinalOutput(stored, tuple(result.image.shape[-2:]),
                            json.dumps(provenance, sort_keys=True), list(result.losses),
                            list(result.warnings), source, self._inline(png, job.spec.output))
        return OctaveOutput(update.octave, update.octaves, update.size, update.loss,
                            update.elapsed, update.preview, update.preview_type, update.stored,
                            update.png, final)


    def one_pass(self, data: bytes, uri: str, png: bytes, provenance: Mapping,
                 spec: OutputSpec, elapsed: float) -> OctaveOutput:
        """The single update of a one-pass dream: the model's ``png`` stored with
        ``provenance`` (which gains the input's artifact URI) in its text, pixels untouched,
        and the input kept as for any dream."""
        source = self._keep_input(data, uri, "input")
        provenance = {**provenance, "input": source.artifact.uri}
        size = png_size(png)
        png = png_with_text(png, provenance_text(provenance))
        meta = {"dreamsuite-version": str(provenance.get("dreamsuite", "")),
                "method": "one-pass", "input": source.artifact.uri,
                **{key: str(provenance.get(key, "")) for key in ("model", "condition")},
                "input-sha256": str(provenance.get("input_sha256", ""))}
        stored = self._put(png, "image/png", _within_budget(meta))
        final = FinalOutput(stored, size, json.dumps(provenance, sort_keys=True), [], [],
                            source, self._inline(png, spec))
        preview, preview_type = (b"", "") if spec.preview_format == "none" else _preview(
            load_image(png), spec)
        return OctaveOutput(0, 1, size, 0.0, elapsed, preview, preview_type, None, b"", final)


def _content_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"
