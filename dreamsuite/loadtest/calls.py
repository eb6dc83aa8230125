"""Timed gRPC calls that report to Locust's request event: the only code path of every call a
load test makes (and of the overhead benchmark's "load tester" side).

``report`` has the signature of ``environment.events.request.fire``: ``request_type``,
``name``, ``response_time`` (ms), ``response_length`` (bytes received), ``exception`` (None
when the call succeeded) and ``context`` (``{"bytes_sent": n}``). Names:

- ``<Method>``: every call that succeeded (``OK``), with its total time: the latencies;
- ``<Method>:failed``: every call that failed with any other code (``CANCELLED`` for a call
  still in flight when the load tester stopped), so a failure's time (a refused connection
  fails in milliseconds) never counts as a latency;
- ``<Method>:rejected``: calls refused with ``RESOURCE_EXHAUSTED`` (back-pressure, counted
  apart from failures);
- ``Dream:first-update``: a dream's time to its first update (one per dream that got one).

A failure's exception is a :class:`CallFailed` whose text is ``CODE: details``, which Locust
groups errors by; :func:`code_of` reads the code back.

The blocking part of each call (and its timing) goes through an executor ``run``: the call
itself is the plain blocking gRPC client's, timed where it runs, so what the load tester
reports is what a plain client would measure; the report is made afterwards by the caller
(Locust's statistics are not thread-safe).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message

from dreamsuite.errors import shorten

__all__ = [
    "REQUEST_TYPE",
    "FIRST_UPDATE",
    "FAILED",
    "REJECTED",
    "REJECTED_CODE",
    "CallFailed",
    "code_of",
    "unary",
    "dream",
]

REQUEST_TYPE = "grpc"
FIRST_UPDATE = ":first-update"
FAILED = ":failed"
REJECTED = ":rejected"
REJECTED_CODE = "RESOURCE_EXHAUSTED"
_CANCELLED = ("CANCELLED", "stopped by the load tester with the call in flight")

Report = Callable[..., Any]
#: ``run(fn, *args)`` returns ``fn(*args)``, run wherever it likes: in a Locust user, a native
#: thread of gevent's pool, so that the call and its timing never wait for the gevent hub.
Executor = Callable[..., Any]
Metadata = Sequence[tuple[str, str]]


class CallFailed(Exception):
    """A call that ended with ``code`` (a gRPC status name such as ``INVALID_ARGUMENT``, or
    ``NO_RESULT`` for a dream stream that ended OK without a result)."""

    def __init__(self, code: str, details: str = ""):
        super().__init__(code, details)
        self.code = code
        self.details = shorten(" ".join(details.split()), 160)

    def __repr__(self) -> str:
        return f"{self.code}: {self.details}" if self.details else self.code

    __str__ = __repr__


def code_of(error: str) -> str:
    """The status code of an error as Locust recorded it (``"INVALID_ARGUMENT: image: ..."``)."""
    return error.split(":", 1)[0].strip() or "UNKNOWN"


def _direct(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def _report(report: Report, name: str, milliseconds: float, received: int, sent: int,
            failure: CallFailed | None) -> None:
    if failure is not None:
        name += REJECTED if failure.code == REJECTED_CODE else FAILED
    report(request_type=REQUEST_TYPE, name=name, response_time=milliseconds,
           response_length=received, exception=failure, context={"bytes_sent": sent})


def _failure(exc: grpc.RpcError) -> CallFailed:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return CallFailed(code.name if code is not None else "UNKNOWN", details or "")


def _blocking_unary(method: Callable, request: Message, timeout: float | None,
                    metadata: Metadata) -> tuple[float, Message | None, CallFailed | None]:
    """The call, timed where it runs, exactly as a plain blocking client times it."""
    started = time.perf_counter()
    try:
        response = method(request, timeout=timeout, metadata=metadata)
    except grpc.RpcError as exc:
        return (time.perf_counter() - started) * 1000.0, None, _failure(exc)
    return (time.perf_counter() - started) * 1000.0, response, None


def unary(report: Report, name: str, method: Callable, request: Message, *, sent: int,
          timeout: float | None, metadata: Metadata = (), run: Executor = _direct
          ) -> Message | None:
    """Call the unary ``method`` (a stub's multi-callable) once through ``run``, then report
    it; the response, or None when the call failed."""
    entered = time.perf_counter()
    try:
        milliseconds, response, failure = run(_blocking_unary, method, request, timeout,
                                              metadata)
    except BaseException:  # the user was killed at the end of the run (GreenletExit)
        _report(report, name, (time.perf_counter() - entered) * 1000.0, 0, sent,
                CallFailed(*_CANCELLED))
        raise
    _report(report, name, milliseconds, response.ByteSize() if response is not None else 0,
            sent, failure)
    return response


def _consume(call: Any, started: float) -> tuple:
    """Read a dream's stream to its end: (first update ms, its size, bytes, result, failure,
    total ms), timed where it runs."""
    first_ms, first_size, received, result, failure = None, 0, 0, None, None
    try:
        for update in call:
            size = update.ByteSize()
            if first_ms is None:
                first_ms, first_size = (time.perf_counter() - started) * 1000.0, size
            received += size
            if update.HasField("result"):
                result = update.result
    except grpc.RpcError as exc:
        failure = _failure(exc)
    if failure is None and result is None:
        failure = CallFailed("NO_RESULT", "the stream ended without a result")
    return first_ms, first_size, received, result, failure, (time.perf_counter() - started) * 1000.0


def dream(report: Report, name: str, method: Callable, request: Message, *, sent: int,
          timeout: float | None, metadata: Metadata = (), run: Executor = _direct
          ) -> Message | None:
    """Follow one server-streaming dream to its end (read through ``run``); reports the time to
    the first update (``name:first-update``) and the whole call (``name``). The result, or
    None on failure."""
    started = time.perf_counter()
    call = method(request, timeout=timeout, metadata=metadata)
    try:
        first_ms, first_size, received, result, failure, total_ms = run(_consume, call, started)
    except BaseException:  # killed at the end of the run: cancel the dream on the server too
        call.cancel()
        _report(report, name, (time.perf_counter() - started) * 1000.0, 0, sent,
                CallFailed(*_CANCELLED))
        raise
    if first_ms is not None:
        report(request_type=REQUEST_TYPE, name=name + FIRST_UPDATE, response_time=first_ms,
               response_length=first_size, exception=None, context={"bytes_sent": 0})
    _report(report, name, total_ms, received, sent, failure)
    return result if failure is None else None
