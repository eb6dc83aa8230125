"""The one table between library errors and gRPC status codes, read both ways.

Servers turn an exception into a status with :func:`status_for` (anything not in the table is
``INTERNAL``, its details never shown); clients turn a status back into the library error with
:func:`error_from_status`, so a remote failure reads like the same local one.
"""

from __future__ import annotations

import grpc

from dreamsuite import errors

__all__ = ["STATUS_CODES", "MAX_DETAILS", "status_for", "error_from_status", "error_from_rpc"]

#: Library error <-> status code; the first matching class wins (subclasses first).
STATUS_CODES: tuple[tuple[type[errors.DreamsuiteError], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),  # includes UnknownName
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.WeightsMissing, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.Cancelled, grpc.StatusCode.CANCELLED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
)
_BY_CODE = {code: cls for cls, code in STATUS_CODES}

#: Longest status message sent: details travel in trailing metadata, whose size is limited.
MAX_DETAILS = 2000


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and client-facing message for ``exc`` (``INTERNAL`` hides details)."""
    for cls, code in STATUS_CODES:
        if isinstance(exc, cls):
            return code, errors.shorten(exc, MAX_DETAILS)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the server log"


def error_from_status(code: grpc.StatusCode, details: str,
                      target: str = "") -> errors.DreamsuiteError:
    """The library error for a call that ended with ``code`` (its message names the code);
    codes outside the table give a :class:`~dreamsuite.errors.RemoteError`."""
    where = f"{target}: " if target else ""
    cls = _BY_CODE.get(code, errors.RemoteError)
    return cls(f"{where}{code.name}: {details}")


def error_from_rpc(exc: grpc.RpcError, target: str = "") -> errors.DreamsuiteError:
    """:func:`error_from_status` of a failed call (``grpc.RpcError`` from a stub)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return error_from_status(code, details or "", target)
