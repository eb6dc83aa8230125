"""TorchServe handler for a dreamsuite backbone: activations and per-map statistics.

The model archive (built by ``dreamsuite archive``) holds this file, the backbone's state dict
as its serialized file and a model-config.yaml whose ``handler`` section names the backbone::

    handler:
      backbone: efficientnet_lite0
      max_response_bytes: 62914560   # below the server's max_response_size

Each inference request carries a serialised ``dreamsuite.v1.ActivationsRequest`` as its
``data`` (or ``body``) input and gets a serialised ``ActivationsResponse`` back. Requests of a
TorchServe batch that have the same image size and layers share one forward pass; every response
reports how many requests its batch held (``batch_size``) and how many shared its forward pass
(``shared_forward``), which the guide service exports as histograms. A failure of one request
(bad image, unknown layer, response over the cap) is answered inside its response, so the worker
never sends a frame larger than the server accepts and never dies of a bad input.
The worker's Python environment needs the ``dreamsuite`` package installed.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from dreamsuite.activations.compute import (
    DEFAULT_MAX_RESPONSE_BYTES,
    backbone_from_state_dict,
    compute_batch,
)
from dreamsuite.backbones import Backbone
from dreamsuite.cpus import apply_worker_threads
from dreamsuite.v1 import activations_pb2 as pb

__all__ = ["BackboneHandler"]

log = logging.getLogger(__name__)

#: Inputs of a TorchServe request that may carry the serialised ActivationsRequest.
INPUT_KEYS = ("data", "body")


class BackboneHandler:
    """Loads the archived backbone once per worker and answers batches of requests."""

    def __init__(self) -> None:
        self.backbone: Backbone | None = None
        self.max_response_bytes = DEFAULT_MAX_RESPONSE_BYTES
        self.initialized = False

    def initialize(self, context: Any) -> None:
        props = context.system_properties
        settings = (getattr(context, "model_yaml_config", None) or {}).get("handler", {})
        name = settings.get("backbone")
        if not name:
            raise RuntimeError("model-config.yaml names no backbone (handler.backbone)")
        self.max_response_bytes = int(settings.get("max_response_bytes",
                                                   DEFAULT_MAX_RESPONSE_BYTES))
        serialized = context.manifest["model"]["serializedFile"]
        path = os.path.join(props["model_dir"], serialized)
        gpu = props.get("gpu_id")
        device = f"cuda:{gpu}" if torch.cuda.is_available() and gpu is not None else "cpu"
        if device == "cpu":  # torch alone starts a thread per core of the machine (node)
            threads = apply_worker_threads(getattr(context, "model_yaml_config", None))
            log.info("%d torch threads per worker", threads)
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.backbone = backbone_from_state_dict(name, state, device)
        self.initialized = True
        log.info("backbone %s loaded from %s on %s", name, serialized, device)

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[bytes]:
        """One serialised ``ActivationsResponse`` per request of the batch, in order."""
        assert self.backbone is not None, "initialize() was not called"
        parsed = [self._parse(row) for row in data]
        if len(parsed) > 1:
            log.info("batch of %d requests", len(parsed))
        good = [request for request in parsed if request is not None]
        answers = iter(compute_batch(self.backbone, good, kind="torchserve",
                                     max_response_bytes=self.max_response_bytes))
        unreadable = pb.ActivationsResponse(
            backbone=self.backbone.name,
            error=pb.ActivationsError(
                code=pb.ActivationsError.CODE_INVALID_ARGUMENT,
                message="the request input is not a serialised dreamsuite.v1.ActivationsRequest",
            ),
        )
        out = []
        for request in parsed:
            answer = next(answers) if request is not None else unreadable
            answer.batch_size = len(data)  # TorchServe's batch, unreadable requests included
            out.append(answer.SerializeToString())
        return out

    @staticmethod
    def _parse(row: dict[str, Any]) -> pb.ActivationsRequest | None:
        """The request in ``row``, or None when there is none or it does not parse."""
        payload = next((row[key] for key in INPUT_KEYS if row.get(key) is not None), None)
        if payload is None:
            return None
        request = pb.ActivationsRequest()
        try:
            request.ParseFromString(bytes(payload))
        except Exception:  # noqa: BLE001  (DecodeError and friends)
            return None
        return request
