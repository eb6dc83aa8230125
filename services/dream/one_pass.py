"""One-pass dreams: a ``DreamRequest`` that names a trained ``dream2dream`` model is answered by
one call to TorchServe instead of the optimisation on the device worker.

The photo (bytes as sent, or the store's artifact) is checked like any dream input (a decodable
image within ``--max-pixels``), sent to TorchServe's gRPC ``Predictions`` for the model with the
inputs ``data`` (the image) and ``condition``, and the PNG it returns is stored with its
provenance (``method: one-pass``, the model, the condition, the input's artifact) exactly as an
optimised dream's result is. The stream has one update carrying the result.

It never takes a place in the device queue: the work is TorchServe's (which batches it), so a
bounded number of calls are in flight at once (``max_in_flight``); more are
``RESOURCE_EXHAUSTED`` with a retry hint, like a full dream queue. A model TorchServe does not
serve is ``NOT_FOUND``, unless the artifact store lists it as published (the GAN service's
PublishModel): then that replica has not registered it yet, and the call is ``UNAVAILABLE``
(retry it shortly; the suite's clients do not replay a ``Dream`` that ended ``UNAVAILABLE``:
:data:`dreamsuite.wire.channels.DREAM_RETRY_POLICY`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

from dreamsuite import __version__
from dreamsuite.activations.torchserve_client import TorchServeBackend
from dreamsuite.engine.config import MAX_NAME_LENGTH
from dreamsuite.errors import (
    DreamsuiteError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    shorten,
)
from dreamsuite.images import check_image_header, png_size
from dreamsuite.torchserve import PUBLISHED_PREFIX
from services.dream.jobs import DreamSpec
from services.dream.metrics import DreamMetrics
from services.dream.outputs import OctaveOutput, Publisher

__all__ = ["OnePass", "check_one_pass"]

#: Characters of a TorchServe model name (its management API's rule).
_MODEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def check_one_pass(spec: DreamSpec) -> None:
    """:class:`InvalidArgument` for a one-pass request that also asks for what only the
    optimisation does (it would be silently ignored otherwise)."""
    if not spec.model or len(spec.model) > MAX_NAME_LENGTH or not set(spec.model) <= _MODEL_CHARS:
        raise InvalidArgument(f"model: {shorten(spec.model)!r} is not a model name (letters, "
                              f"digits, '_', '-', '.'; at most {MAX_NAME_LENGTH} characters)")
    if len(spec.condition) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"condition is {len(spec.condition)} characters long; at most "
                              f"{MAX_NAME_LENGTH}")
    if spec.image is None:
        raise InvalidArgument("image: a one-pass dream needs an input image")
    for field, given in (("guidance", spec.guides or spec.guide_weights),
                         ("selection", spec.selection), ("guide_regions", spec.guide_masks)):
        if given:
            raise InvalidArgument(f"{field}: a one-pass dream (model {spec.model!r}) runs the "
                                  "trained network only; drop the field or the model")


def _refusal(model: str, answer: bytes) -> Exception:
    """The error a dream2dream handler answered instead of a PNG (over gRPC TorchServe 0.12
    returns OK with the handler's JSON ``{"code", "message"}``), or a wrong-model complaint."""
    try:
        reason = json.loads(answer)
        code, message = str(reason["code"]), str(reason["message"])
    except (ValueError, KeyError, TypeError):
        return Unavailable(f"TorchServe's model {model!r} answered something that is not an "
                           "image; is it a dream2dream archive?")
    if code == "INVALID_ARGUMENT":
        return InvalidArgument(f"model {model!r}: {message}")
    if code == "RESOURCE_EXHAUSTED":  # its device ran out of memory: load, retry later
        return ResourceExhausted(f"model {model!r}: {message}", retry_after=1.0)
    return Unavailable(f"TorchServe's model {model!r} failed: {message}")


class OnePass:
    """One-pass dreams through TorchServe at ``target`` (``HOST:PORT`` of its gRPC inference
    API; None: this service has none, and such requests are ``UNAVAILABLE``)."""

    def __init__(self, target: str | None, publisher: Publisher, metrics: DreamMetrics, *,
                 max_pixels: int, token: str | None = None, timeout: float = 60.0,
                 max_in_flight: int = 32):
        self.backend = (TorchServeBackend(target, timeout=timeout, token=token)
                        if target else None)
        self.publisher = publisher
        self.metrics = metrics
        self.max_pixels = max_pixels
        self.max_in_flight = max_in_flight
        self._in_flight = 0
        # Models that answered: the metric's model label, which callers cannot grow at will.
        self._served: set[str] = set()

    async def dream(self, spec: DreamSpec) -> OctaveOutput:
        """The one update of a one-pass dream (its result stored)."""
        check_one_pass(spec)
        if self._in_flight >= self.max_in_flight:
            raise ResourceExhausted(f"{self._in_flight} one-pass dreams are in flight; retry "
                                    "shortly", retry_after=0.5)
        self._in_flight += 1
        started, outcome = time.perf_counter(), "error"
        try:
            data, uri, input_size = await asyncio.to_thread(self._load, spec)
            if self.backend is None:
                raise Unavailable(f"model {spec.model!r}: this dream service has no TorchServe "
                                  "for one-pass models (start it with --torchserve HOST:PORT)")
            inputs = {"data": data, "condition": spec.condition.encode()}
            hint = "export it with `dreamsuite gan export` and register it with TorchServe"
            try:
                png = await self.backend.predict(spec.model, inputs, hint=hint)
            except NotFound:
                if await asyncio.to_thread(self._published, spec.model):
                    raise Unavailable(
                        f"model {spec.model!r} is published, but the TorchServe replica that "
                        "took the call does not serve it yet (a replica that started or "
                        "restarted since gets it at the GAN service's next resync); retry "
                        "shortly") from None
                raise
            output = await asyncio.to_thread(self._publish, spec, data, uri, input_size, png,
                                             time.perf_counter() - started)
            outcome = "ok"
            self._served.add(spec.model)
            return output
        finally:
            self._in_flight -= 1
            label = spec.model if spec.model in self._served else "other"
            self.metrics.one_pass_seconds.labels(label, outcome).observe(
                time.perf_counter() - started)

    def _published(self, model: str) -> bool:
        """Whether the store lists ``model`` as published (``published/<model>.json``): then
        a replica that does not serve it is behind, not the name unknown. A store that cannot
        say leaves TorchServe's answer as it is."""
        try:
            self.publisher.store.stat(f"{PUBLISHED_PREFIX}{model}.json")
        except DreamsuiteError:  # NotFound, or the store unreachable
            return False
        return True

    def _load(self, spec: DreamSpec) -> tuple[bytes, str, tuple[int, int]]:
        """The input's bytes, its artifact URI (if it came from the store) and its size, from
        its header: TorchServe's handler decodes it, not the dream service."""
        source = spec.image
        assert source is not None
        data = self.publisher.store.get(source.uri) if source.uri else source.data
        try:
            size = check_image_header(data, max_pixels=self.max_pixels)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{source.field}: {exc}") from None
        return data, source.uri, size

    def _publish(self, spec: DreamSpec, data: bytes, uri: str, input_size: tuple[int, int],
                 png: bytes, elapsed: float) -> OctaveOutput:
        if not png.startswith(b"\x89PNG"):
            raise _refusal(spec.model, png)
        try:
            size = png_size(png)
        except InvalidArgument:
            raise _refusal(spec.model, png) from None
        provenance = {
            "dreamsuite": __version__, "method": "one-pass", "model": spec.model,
            "condition": spec.condition, "input_sha256": hashlib.sha256(data).hexdigest(),
            "size": list(size), "input_size": list(input_size),
        }
        return self.publisher.one_pass(data, uri, png, provenance, spec.output, elapsed)

    async def close(self) -> None:
        if self.backend is not None:
            await self.backend.close()
