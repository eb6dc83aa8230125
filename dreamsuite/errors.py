"""The library's exceptions.

Each class names the kind of failure, not the transport: the services map them to gRPC status
codes in one place (``services/common/errors.py``), the CLI prints their message.
"""

from __future__ import annotations

__all__ = [
    "DreamsuiteError",
    "InvalidArgument",
    "NotFound",
    "UnknownName",
    "FailedPrecondition",
    "WeightsMissing",
    "ResourceExhausted",
    "Unavailable",
    "Cancelled",
    "Unauthenticated",
    "DeadlineExceeded",
    "RemoteError",
    "shorten",
]


class DreamsuiteError(Exception):
    """Base class of every error the library raises on purpose."""


class InvalidArgument(DreamsuiteError, ValueError):
    """The caller asked for something malformed or out of range (bad image, NaN, zero octaves)."""


class NotFound(DreamsuiteError, KeyError):
    """A named thing does not exist: backbone, layer, channel, artifact."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class UnknownName(InvalidArgument):
    """A request names a backbone, layer or channel that does not exist; the message lists the
    valid ones. It is the caller's mistake, so it is an :class:`InvalidArgument`."""


class FailedPrecondition(DreamsuiteError):
    """The system is not in a state the call needs (a service started without the setting the
    call depends on, weights not installed); the message says what to set up first."""


class WeightsMissing(FailedPrecondition, FileNotFoundError):
    """Pretrained weights were asked for but are not on this machine."""


class ResourceExhausted(DreamsuiteError):
    """Over capacity: queue full, too many concurrent requests. ``retry_after`` (seconds), when
    known, is when a retry is likely to be accepted (sent as ``grpc-retry-pushback-ms``)."""

    def __init__(self, message: str = "", *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(DreamsuiteError):
    """A dependency (artifact store, activation backend) cannot be reached right now."""


class Cancelled(DreamsuiteError):
    """The caller cancelled the work; raised from inside the optimisation loop."""


class Unauthenticated(DreamsuiteError):
    """A service refused the call's credentials (no or wrong bearer token)."""


class DeadlineExceeded(DreamsuiteError):
    """A call to a service ran past its deadline."""


class RemoteError(DreamsuiteError):
    """A service failed in a way no other class names (``INTERNAL``, ``UNKNOWN``, ...)."""


def shorten(text: object, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters (with a marker), for echoing caller input in a
    message: an error must never grow with what the caller sent."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}...[{len(text)} chars]"
