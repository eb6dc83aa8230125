"""The one table between library errors and gRPC status codes, read both ways.

Servers turn an exception into a status with :func:`status_for` (anything not in the table is
``INTERNAL``, its details never shown); clients turn a status back into the library error with
:func:`error_from_status`, so a remote failure reads like the same local one.
"""

from __future__ import annotations

import grpc

from dreamsuite import errors

__all__ = ["STATUS_CODES", "MAX_DETAILS", "MAX_DETAILS_BYTES", "status_for", "error_from_status",
           "error_from_rpc"]

#: Library error <-> status code; the first matching class wins (subclasses first).
STATUS_CODES: tuple[tuple[type[errors.DreamsuiteError], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),  # includes UnknownName
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.WeightsMissing, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.Cancelled, grpc.StatusCode.CANCELLED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
)
#: Read backwards, the first class of a code wins (FAILED_PRECONDITION: WeightsMissing, a
#: FailedPrecondition).
_BY_CODE: dict[grpc.StatusCode, type[errors.DreamsuiteError]] = {}
for _cls, _code in STATUS_CODES:
    _BY_CODE.setdefault(_code, _cls)

#: Longest status message sent, in characters and in bytes on the wire: details travel in
#: trailing metadata (8 KiB by default, all of it), percent-encoded, so a character outside
#: printable ASCII costs three bytes per UTF-8 byte.
MAX_DETAILS = 2000
MAX_DETAILS_BYTES = 4000


def _wire_bytes(char: str) -> int:
    if " " <= char <= "~" and char != "%":
        return 1
    return 3 * len(char.encode("utf-8"))


def _fit(text: str) -> str:
    """``text`` cut so that it is at most :data:`MAX_DETAILS` characters and
    :data:`MAX_DETAILS_BYTES` bytes percent-encoded, marker included."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # no lone surrogates
    marker = f"...[{len(text)} chars]"
    budget = MAX_DETAILS_BYTES - len(marker)
    used = 0
    for i, char in enumerate(text):
        used += _wire_bytes(char)
        if used > budget or i >= MAX_DETAILS:
            return text[:i] + marker
    return text


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and client-facing message for ``exc`` (``INTERNAL`` hides details);
    the message always fits in the trailing metadata."""
    for cls, code in STATUS_CODES:
        if isinstance(exc, cls):
            return code, _fit(str(exc))
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
