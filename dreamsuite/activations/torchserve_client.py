"""The TorchServe activation backend: the backbone handler over TorchServe's gRPC inference API.

Calls ``org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions`` with the serialised
``ActivationsRequest`` as the ``data`` input and the backbone name as the model name. Attempts
that fail because TorchServe cannot be reached or has no worker ready are retried a bounded
number of times with backoff; a worker that dies while computing is not retried (the request
may be what killed it). Both end in :class:`~dreamsuite.errors.Unavailable` with a message that
says what happened.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from dreamsuite.activations.base import CallObserver
from dreamsuite.activations.tsproto import torchserve_inference_pb2 as tspb
from dreamsuite.defaults import DEFAULT_BACKBONE
from dreamsuite.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable
from dreamsuite.v1 import activations_pb2 as pb
from dreamsuite.wire.channels import DEFAULT_MAX_MESSAGE_BYTES, channel_options

__all__ = ["TorchServeBackend", "PREDICTIONS"]

PREDICTIONS = "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions"
# TorchServe answers these when no worker can take the job right now (starting, restarting).
_NO_WORKER = ("no worker", "not ready", "worker is not", "failed to start")


class _Retry(Exception):
    """An attempt failed in a way that another attempt may fix."""


class TorchServeBackend:
    """Activation backend on TorchServe at ``target`` (``HOST:PORT`` of its gRPC inference API).

    ``attempts`` bounds the tries per request (backoff ``backoff * 2**i`` seconds between
    them); ``timeout`` bounds each try. ``token`` is TorchServe's inference key when token
    authorization is on (sent as ``authorization: Bearer ...``).
    """

    def __init__(
        self, target: str, *, timeout: float = 60.0, attempts: int = 3, backoff: float = 0.25,
        token: str | None = None, observe: CallObserver | None = None,
    ):
        self.target = target
        self.url = f"torchserve://{target}"
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.observe = observe
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._channel: grpc.aio.Channel | None = None
        self._call: grpc.aio.UnaryUnaryMultiCallable | None = None

    def _predict(self) -> grpc.aio.UnaryUnaryMultiCallable:
        if self._call is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=[
                # Every TorchServe pod behind a headless service; the retries are ours (below),
                # which tell a worker that died on the request from one that was not ready.
                *channel_options(DEFAULT_MAX_MESSAGE_BYTES, round_robin=True, retries=False),
                # Reconnect quickly once TorchServe is back instead of backing off for minutes.
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ])
            self._call = self._channel.unary_unary(
                PREDICTIONS,
                request_serializer=tspb.PredictionsRequest.SerializeToString,
                response_deserializer=tspb.PredictionResponse.FromString,
            )
        return self._call

    async def activations(self, request: pb.ActivationsRequest) -> pb.ActivationsResponse:
        model = request.backbone or DEFAULT_BACKBONE
        reply = await self.predict(
            model, {"data": request.SerializeToString()},
            hint=f"build its archive with `dreamsuite archive --backbone {model} -o "
                 "MODEL_STORE` and load it")
        return pb.ActivationsResponse.FromString(reply)

    async def predict(self, model: str, inputs: dict[str, bytes], *, hint: str = "") -> bytes:
        """The prediction of TorchServe's ``model`` for ``inputs`` (the handler's request
        fields), with the retries above. :class:`NotFound` (ending with ``hint``) when TorchServe
        serves no such model, :class:`Unavailable` when it cannot answer."""
        message = tspb.PredictionsRequest(model_name=model, input=inputs)
        last = ""
        for attempt in range(self.attempts):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                reply = await self._attempt(message, model, hint)
            except _Retry as exc:
                last = str(exc)
                continue
            return reply.prediction
        raise Unavailable(
            f"TorchServe at {self.target} is unavailable after {self.attempts} attempts "
            f"({last}); check that TorchServe is running and serves the {model!r} model"
        )

    async def _attempt(self, message: tspb.PredictionsRequest, model: str, hint: str):
        started = time.perf_counter()
        outcome = "error"
        try:
            reply = await self._predict()(message, timeout=self.timeout,
                                          metadata=self._metadata, wait_for_ready=False)
            outcome = "ok"
            return reply
        except grpc.aio.AioRpcError as exc:
            outcome = "unavailable"
            raise self._translate(exc, model, hint) from None
        finally:
            if self.observe is not None:
                self.observe(outcome, time.perf_counter() - started)

    def _translate(self, exc: grpc.aio.AioRpcError, model: str, hint: str) -> Exception:
        code, details = exc.code(), (exc.details() or "").strip()
        lowered = details.lower()
        if code == grpc.StatusCode.UNAVAILABLE or any(s in lowered for s in _NO_WORKER):
            return _Retry(f"{code.name}: {details}")
        if "model not found" in lowered or "modelnotfound" in lowered:
            return NotFound(f"TorchServe at {self.target} serves no model {model!r}"
                            + (f"; {hint}" if hint else ""))
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return Unavailable(f"TorchServe at {self.target} did not answer within "
                               f"{self.timeout:.0f} s")
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return Unavailable(f"TorchServe at {self.target} refused the call ({details}); "
                               "give the service its inference key (--torchserve-token)")
        if "worker died" in lowered:
            return Unavailable(
                f"TorchServe at {self.target}: the {model!r} worker died while computing "
                f"({details.splitlines()[0] if details else code.name}); TorchServe restarts "
                "it on its own, retry in a few seconds"
            )
        # The gRPC message limit (this side's): no retry changes that. (TorchServe's own
        # RESOURCE_EXHAUSTED answers, a worker that died among them, stay UNAVAILABLE below.)
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in lowered:
            return ResourceExhausted(
                f"the request for TorchServe's {model!r} is over the gRPC message limit "
                f"({details}); send a smaller image (or a max_side)")
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return InvalidArgument(f"TorchServe at {self.target} refused the request for "
                                   f"{model!r}: {details}")
        return Unavailable(f"TorchServe at {self.target} failed the request "
                           f"({code.name}: {details})")

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._channel = self._call = None
