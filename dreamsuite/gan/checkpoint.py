"""Training checkpoints in the artifact store, written atomically, and the job's other keys.

A checkpoint is one object, ``jobs/<job>/checkpoints/step-<step:08d>.pt`` (``torch.save`` of a
dict of tensors and plain values: the networks, the EMA generator, both optimisers and grad
scalers, the step, the data order, every RNG state and the config), written whole; only then is
the pointer ``jobs/<job>/checkpoints/latest`` (JSON ``{"key", "step", "sha256"}``) replaced. A
kill at any moment leaves ``latest`` naming a complete checkpoint (or no ``latest`` at all).
Checkpoints load with ``weights_only=True``: a stored checkpoint cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from typing import Any

import numpy as np
import torch

from dreamsuite.artifacts import ArtifactStore
from dreamsuite.errors import InvalidArgument, NotFound, shorten
from dreamsuite.gan.records import record_key

__all__ = [
    "CHECKPOINT_FORMAT",
    "job_prefix",
    "checkpoint_key",
    "latest_key",
    "preview_key",
    "status_key",
    "model_record_key",
    "save_checkpoint",
    "read_latest",
    "load_checkpoint",
    "load_latest",
    "put_json",
    "get_json",
    "capture_rng",
    "restore_rng",
]

CHECKPOINT_FORMAT = 1


def job_prefix(job_id: str) -> str:
    """``jobs/<job_id>/``; :class:`InvalidArgument` for an id that is not one path part."""
    if not job_id or "/" in job_id or job_id in (".", "..") or any(
            ord(c) < 33 or ord(c) == 127 for c in job_id):
        raise InvalidArgument(f"job_id: {shorten(job_id)!r} must be one non-empty path part "
                              "without '/', spaces or control characters")
    return f"jobs/{job_id}/"


def checkpoint_key(job_id: str, step: int) -> str:
    return f"{job_prefix(job_id)}checkpoints/step-{step:08d}.pt"


def latest_key(job_id: str) -> str:
    return f"{job_prefix(job_id)}checkpoints/latest"


def preview_key(job_id: str, step: int) -> str:
    return f"{job_prefix(job_id)}previews/step-{step:08d}.png"


def status_key(job_id: str) -> str:
    return f"{job_prefix(job_id)}status.json"


def model_record_key(job_id: str) -> str:
    job_prefix(job_id)
    return record_key(job_id)


def put_json(store: ArtifactStore, key: str, value: Any) -> None:
    store.put_at(key, json.dumps(value, sort_keys=True).encode(), content_type="application/json")


def get_json(store: ArtifactStore, key: str) -> Any:
    """The JSON object at ``key``; :class:`NotFound` when absent."""
    try:
        return json.loads(store.get(key))
    except ValueError as exc:
        raise InvalidArgument(f"{key} is not valid JSON: {shorten(exc)}") from None


def save_checkpoint(store: ArtifactStore, job_id: str, step: int,
                    state: dict[str, Any]) -> tuple[str, str]:
    """Write ``state`` as the checkpoint of ``step``, then point ``latest`` at it; returns
    ``(key, sha256)``."""
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buffer)
    data = buffer.getvalue()
    key = checkpoint_key(job_id, step)
    digest = store.put_at(key, data, content_type="application/octet-stream").sha256
    put_json(store, latest_key(job_id), {"key": key, "step": step, "sha256": digest})
    return key, digest


def read_latest(store: ArtifactStore, job_id: str) -> dict[str, Any] | None:
    """The ``latest`` pointer of ``job_id`` (``{"key", "step", "sha256"}``) or None."""
    try:
        pointer = get_json(store, latest_key(job_id))
    except NotFound:
        return None
    if not isinstance(pointer, dict) or not {"key", "step", "sha256"} <= set(pointer):
        raise InvalidArgument(f"{latest_key(job_id)} is not a checkpoint pointer")
    return pointer


def load_checkpoint(store: ArtifactStore, key: str, sha256: str | None = None) -> dict[str, Any]:
    """The checkpoint at ``key`` (tensors on the CPU). ``key`` may also be a ``latest``
    pointer. :class:`InvalidArgument` when its digest is not ``sha256`` or it is not a
    checkpoint; :class:`NotFound` when absent."""
    data = store.get(key)
    if data[:1] == b"{":  # a latest pointer
        pointer = json.loads(data)
        return load_checkpoint(store, pointer["key"], pointer.get("sha256"))
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise InvalidArgument(f"checkpoint {key} is corrupt: its sha256 is not {sha256}")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors for a bad file
        raise InvalidArgument(f"{key} is not a readable checkpoint ({type(exc).__name__}: "
                              f"{shorten(exc, 200)})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InvalidArgument(f"{key} is not a format-{CHECKPOINT_FORMAT} GAN checkpoint")
    return state


def load_latest(store: ArtifactStore, job_id: str) -> dict[str, Any] | None:
    """The checkpoint that ``latest`` names, or None when the job has none yet."""
    pointer = read_latest(store, job_id)
    if pointer is None:
        return None
    return load_checkpoint(store, pointer["key"], pointer["sha256"])


def capture_rng() -> dict[str, Any]:
    """The global RNG states: torch (CPU and every CUDA device), NumPy and Python ``random``,
    in a form that loads with ``weights_only=True``."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Undo :func:`capture_rng` (CUDA states only where this machine has the devices)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
