"""Device selection, done once by whoever starts the work (CLI, server), never at import."""

from __future__ import annotations

import os

import torch

from dreamsuite.errors import InvalidArgument

__all__ = ["DEVICE_ENV", "select_device", "out_of_memory", "release_cached"]

DEVICE_ENV = "DREAMSUITE_DEVICE"


def select_device(preferred: str | torch.device | None = None) -> torch.device:
    """``preferred`` if given, else ``$DREAMSUITE_DEVICE``, else CUDA when present, else CPU.
    A GPU is always named with its index (``cuda`` is the current one, e.g. ``cuda:0``)."""
    choice = preferred if preferred is not None else os.environ.get(DEVICE_ENV) or None
    if choice is None:
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(choice)
    except RuntimeError as exc:
        raise InvalidArgument(f"unknown device {choice!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgument(f"device {choice!r} asked for, but CUDA is not available here")
    if device.type == "cuda" and device.index is None:
        # One name per GPU: "cuda" and "cuda:0" must not load a second copy of a backbone.
        device = torch.device("cuda", torch.cuda.current_device())
    return device


#: What the allocators' errors say: CUDA's (``torch.OutOfMemoryError``), the CPU's, MPS's.
_OOM_MESSAGES = ("out of memory", "can't allocate memory")


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a device allocator running out of memory (a load to retry later
    or to shrink, not a bug)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _OOM_MESSAGES)


def release_cached(device: torch.device) -> None:
    """Hand the CUDA allocator's cached blocks on ``device`` back (after a failed pass, out of
    memory most likely, so that what runs next can have them); nothing elsewhere. Call it
    outside the ``except`` block: the exception's traceback holds the failed pass's tensors."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
