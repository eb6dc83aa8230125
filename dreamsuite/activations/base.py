"""The activation-backend interface: what the guide service calls, whatever computes it.

A backend answers ``ActivationsRequest`` messages (see ``activations.proto``) asynchronously:

    response = await backend.activations(request)       # ActivationsResponse

Failures to reach the computation raise :class:`~dreamsuite.errors.Unavailable`; a bad request
comes back as an error inside the response.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from dreamsuite.v1 import activations_pb2 as pb

__all__ = ["ActivationBackend", "CallObserver"]

#: ``observe(outcome, seconds)`` after every backend call attempt; outcome is ``ok``,
#: ``unavailable`` or ``error`` (metrics hook, passed in by the service).
CallObserver = Callable[[str, float], None]


@runtime_checkable
class ActivationBackend(Protocol):
    """Computes activations of backbones; see the module docstring."""

    #: Short description for logs, e.g. ``torchserve://127.0.0.1:7070`` or ``inprocess``.
    url: str

    async def activations(self, request: pb.ActivationsRequest) -> pb.ActivationsResponse:
        """The response to ``request``; raises :class:`Unavailable` when unreachable."""
        ...

    async def close(self) -> None:
        """Release connections and threads."""
        ...
