"""The in-process activation backend, the URL factory and :func:`layer_stats`.

A backend answers ``ActivationsRequest`` messages (see ``activations.proto``) asynchronously:

    response = await backend.activations(request)       # ActivationsResponse

Failures to reach the computation raise :class:`~dreamsuite.errors.Unavailable`; a bad request
comes back as an error inside the response (:func:`layer_stats` raises it).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Sequence

import torch

from dreamsuite.activations.base import ActivationBackend, CallObserver
from dreamsuite.activations.compute import LayerStats, compute_batch, stats_from_response
from dreamsuite.activations.torchserve_client import TorchServeBackend
from dreamsuite.backbones import get_backbone
from dreamsuite.defaults import DEFAULT_BACKBONE
from dreamsuite.errors import InvalidArgument
from dreamsuite.v1 import activations_pb2 as pb

__all__ = [
    "ACTIVATIONS_ENV",
    "InProcessBackend",
    "backend_from_url",
    "layer_stats",
]

#: Environment variable with the default activation backend URL of the guide service.
ACTIVATIONS_ENV = "DREAMSUITE_ACTIVATIONS"

class InProcessBackend:
    """Runs the backbones in this process, one forward pass at a time, off the event loop."""

    url = "inprocess"

    def __init__(self, *, device: str | torch.device | None = None,
                 observe: CallObserver | None = None):
        self.device = device
        self.observe = observe
        # One forward pass at a time: the CPU threads are shared with everything else.
        self._lock = threading.Lock()

    async def activations(self, request: pb.ActivationsRequest) -> pb.ActivationsResponse:
        started = time.perf_counter()
        outcome = "error"
        try:
            response = await asyncio.to_thread(self._run, request)
            outcome = "ok"
            return response
        finally:
            if self.observe is not None:
                self.observe(outcome, time.perf_counter() - started)

    def _run(self, request: pb.ActivationsRequest) -> pb.ActivationsResponse:
        backbone = get_backbone(request.backbone or DEFAULT_BACKBONE, device=self.device)
        with self._lock:
            return compute_batch(backbone, [request], kind="inprocess")[0]

    async def close(self) -> None:
        return None


def backend_from_url(
    url: str | None = None, *, token: str | None = None, observe: CallObserver | None = None,
    device: str | torch.device | None = None,
) -> ActivationBackend:
    """``torchserve://HOST:PORT`` (TorchServe's gRPC inference API) or ``inprocess``; ``None``
    reads :data:`ACTIVATIONS_ENV` and defaults to ``inprocess``."""
    url = url or os.environ.get(ACTIVATIONS_ENV) or "inprocess"
    if url == "inprocess":
        return InProcessBackend(device=device, observe=observe)
    if url.startswith("torchserve://"):
        target = url.removeprefix("torchserve://").rstrip("/")
        if not target or ":" not in target:
            raise InvalidArgument(f"activation backend {url!r}: expected torchserve://HOST:PORT")
        return TorchServeBackend(target, token=token, observe=observe)
    raise InvalidArgument(
        f"unknown activation backend {url!r}: use torchserve://HOST:PORT or inprocess"
    )


async def layer_stats(
    backend: ActivationBackend, image: bytes, backbone: str, layers: Sequence[str], *,
    max_side: int = 0, on_response: Callable[[pb.ActivationsResponse], None] | None = None,
) -> tuple[dict[str, LayerStats], str]:
    """Per-map statistics ``{layer: LayerStats}`` of one encoded image and the backend version
    that computed them; request errors are raised as library exceptions. ``on_response`` sees
    the backend's response first (the guide service reads its batch figures there)."""
    response = await backend.activations(pb.ActivationsRequest(
        image=image, backbone=backbone, layers=list(layers), reduction=pb.REDUCTION_STATS,
        max_side=max_side,
    ))
    if on_response is not None:
        on_response(response)
    return stats_from_response(response), response.backend_version
