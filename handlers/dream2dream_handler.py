"""TorchServe handler for ``dream2dream`` models: a photo in, its one-pass dream out.

The model archive (``dreamsuite gan export MODEL``) holds this file, the network as its
serialized file (:func:`dreamsuite.gan.dream2dream.export_state`: weights, architecture and the
condition names) and a model-config.yaml with the batch settings and a ``handler`` section::

    handler:
      kind: dream2dream
      max_pixels: 4194304        # larger photos are refused (400)

The served contract (HTTP inference API; TorchServe's gRPC ``Predictions`` carries the same
inputs by name):

- ``POST /predictions/<model>`` with the photo as the body (PNG; the other formats the suite
  reads work too), e.g. ``Content-Type: image/png``.
- The condition (which dream config of the model): the header ``X-Dream-Condition``, its name
  (the data set id) or its index; default 0. (TorchServe 0.12 does not hand query parameters of
  a raw-body request to the handler, so ``?condition=`` is not read.) A JSON body
  (``Content-Type: application/json``) ``{"image": "<base64 PNG>", "condition": "1"}`` works too,
  as does a multipart form with the fields ``data`` (or ``image``) and ``condition``.
- 200: the PNG of the one-pass dream at the photo's size (``Content-Type: image/png``); the
  headers ``X-Dream-Condition`` (index) and ``X-Dream-Condition-Name`` say which condition ran,
  ``X-Batch-Size`` how many requests TorchServe batched with it.
- 400: ``{"code": "INVALID_ARGUMENT", "message": ...}`` (JSON) for a body that is not an image,
  an unknown condition (the message lists the valid ones), a photo under 8 px a side or over
  ``max_pixels``. A bad request of a batch never fails the others, and never kills the worker.
- 507: ``{"code": "RESOURCE_EXHAUSTED", ...}`` when the device runs out of memory for a photo
  even alone (a batch that runs out of memory is retried one photo at a time first).
- On TorchServe's gRPC ``Predictions`` (inputs ``data`` and ``condition``) TorchServe 0.12 drops
  the per-request status: the call is OK and ``prediction`` holds either the PNG (it starts
  with the PNG signature ``\\x89PNG``) or that JSON error object; callers tell them apart by
  the first bytes.

The pixels are exactly those of :func:`dreamsuite.gan.dream2dream.one_pass` (float32, eval mode)
encoded as PNG. Requests of a batch that have the same size share one forward pass; other sizes
run one group at a time. Runs on the worker's GPU when TorchServe gives it one, else the CPU;
nothing is downloaded. The worker's Python environment needs the ``dreamsuite`` package.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from typing import Any

import torch

from dreamsuite.cpus import apply_worker_threads
from dreamsuite.device import out_of_memory, release_cached
from dreamsuite.errors import DreamsuiteError, InvalidArgument, shorten
from dreamsuite.gan.dream2dream import Dream2Dream, condition_index, from_export, one_pass_batch
from dreamsuite.images import encode_png, load_image

__all__ = ["Dream2DreamHandler", "DEFAULT_MAX_PIXELS", "CONDITION_HEADER", "INPUT_KEYS"]

log = logging.getLogger(__name__)

#: Largest photo accepted by default (2048 x 2048): the network holds a few float maps of
#: ``width`` channels at full resolution.
DEFAULT_MAX_PIXELS = 2048 * 2048
#: The request header that may name the condition.
CONDITION_HEADER = "x-dream-condition"
#: Inputs of a TorchServe request that may carry the photo (``body``: a raw HTTP body).
INPUT_KEYS = ("body", "data", "image")


# TorchServe instantiates the one class this module defines: everything else is a function,
# and a request is an ``(image [3, H, W], condition index)`` pair.
_Request = tuple[torch.Tensor, int]
#: Why a request gets no dream: a gRPC-style code and a message for the caller.
_Refusal = tuple[str, str]

#: The HTTP status and phrase of each refusal's code.
_HTTP_STATUS = {"INVALID_ARGUMENT": (400, "Bad Request"),
                "RESOURCE_EXHAUSTED": (507, "Insufficient Storage")}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


class Dream2DreamHandler:
    """Loads the archived network once per worker and answers batches of photos."""

    def __init__(self) -> None:
        self.model: Dream2Dream | None = None
        self.names: list[str] = []
        self.max_pixels = DEFAULT_MAX_PIXELS
        self.initialized = False

    def initialize(self, context: Any) -> None:
        props = context.system_properties
        settings = (getattr(context, "model_yaml_config", None) or {}).get("handler", {})
        self.max_pixels = int(settings.get("max_pixels", DEFAULT_MAX_PIXELS))
        serialized = context.manifest["model"]["serializedFile"]
        path = os.path.join(props["model_dir"], serialized)
        gpu = props.get("gpu_id")
        device = f"cuda:{gpu}" if torch.cuda.is_available() and gpu is not None else "cpu"
        if device == "cpu":  # torch alone starts a thread per core of the machine (node)
            threads = apply_worker_threads(getattr(context, "model_yaml_config", None))
            log.info("%d torch threads per worker", threads)
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.model, self.names = from_export(state, device)
        self.initialized = True
        log.info("dream2dream model loaded from %s on %s: %d condition(s)", serialized, device,
                 len(self.names))

    # --- one request ------------------------------------------------------------------------

    def _parse(self, row: dict[str, Any], headers: dict[str, Any]) -> _Request:
        payload = next((row[key] for key in INPUT_KEYS if row.get(key) is not None), None)
        condition = _text(row.get("condition"))
        if isinstance(payload, dict):  # a JSON body
            condition = _text(payload.get("condition", condition))
            encoded = payload.get("image")
            if not isinstance(encoded, str):
                raise InvalidArgument('a JSON body needs "image": the photo as base64 text')
            try:
                payload = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidArgument('"image" is not valid base64') from None
        if not isinstance(payload, bytes | bytearray) or not payload:
            raise InvalidArgument("the request has no photo: send PNG bytes as the body")
        if condition is None:
            condition = next((_text(v) for k, v in headers.items()
                              if isinstance(k, str) and k.lower() == CONDITION_HEADER
                              and isinstance(v, str | bytes)), None)
        index = condition_index(condition.strip() if condition else None, self.names)
        image = load_image(bytes(payload), max_pixels=self.max_pixels)
        return image, index

    @staticmethod
    def _headers(context: Any, idx: int) -> dict[str, Any]:
        try:
            return dict(context.get_all_request_header(idx) or {})
        except Exception:  # noqa: BLE001  (no request processor: a direct call)
            return {}

    # --- a batch ----------------------------------------------------------------------------

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[bytes]:
        """One answer per request of the batch, in order: PNG bytes, or a JSON error with
        its HTTP status (400, or 507 out of memory) set on the request."""
        assert self.model is not None, "initialize() was not called"
        # bytes: the PNG; a _Refusal: why not.
        answers: list[bytes | _Refusal | None] = [None] * len(data)
        requests: dict[int, _Request] = {}
        for idx, row in enumerate(data):
            try:
                requests[idx] = self._parse(row if isinstance(row, dict) else {},
                                            self._headers(context, idx))
            except DreamsuiteError as exc:
                answers[idx] = ("INVALID_ARGUMENT", str(exc))
            except Exception as exc:  # noqa: BLE001  (this request's alone, never its batch's)
                log.warning("request %d of the batch could not be read: %r", idx, exc)
                answers[idx] = ("INVALID_ARGUMENT", f"the request could not be read "
                                                    f"({type(exc).__name__})")
        groups: dict[tuple[int, int], list[int]] = {}
        for idx, (image, _) in requests.items():
            groups.setdefault(tuple(image.shape[-2:]), []).append(idx)
        if len(data) > 1:
            log.info("batch of %d requests in %d size group(s)", len(data), len(groups))
        for ids in groups.values():
            self._dream(ids, requests, answers)
        out = []
        for idx, answer in enumerate(answers):
            assert answer is not None
            if isinstance(answer, tuple):
                out.append(self._refuse(context, idx, answer))
                continue
            condition = requests[idx][1]
            self._set(context, idx, content_type="image/png", status=200, headers={
                "X-Dream-Condition": str(condition),
                "X-Dream-Condition-Name": self.names[condition],
                "X-Batch-Size": str(len(data))})
            out.append(answer)
        return out

    def _dream(self, ids: list[int], requests: dict[int, _Request],
               answers: list[bytes | _Refusal | None]) -> None:
        """The one-pass dreams of requests ``ids`` (photos of one size) as one forward pass;
        out of memory, one photo at a time; out of memory alone, that photo is refused."""
        dreams = None
        try:
            images = torch.stack([requests[i][0] for i in ids])
            dreams = one_pass_batch(self.model, images, [requests[i][1] for i in ids])
        except DreamsuiteError as exc:
            for i in ids:
                answers[i] = ("INVALID_ARGUMENT", str(exc))
            return
        except RuntimeError as exc:
            if not out_of_memory(exc):
                raise
            log.warning("out of memory for %d photo(s) of %dx%d: %s", len(ids),
                        *requests[ids[0]][0].shape[-2:], str(exc).partition("\n")[0])
        if dreams is not None:
            for i, dream in zip(ids, dreams, strict=True):
                answers[i] = encode_png(dream)
            return
        # Out of memory. Outside the handler, whose traceback held the batch's activations:
        # now the cache can give them back, and each photo is tried alone.
        images = None
        release_cached(self.model.stem.weight.device)
        if len(ids) > 1:
            for i in ids:
                self._dream([i], requests, answers)
            return
        h, w = requests[ids[0]][0].shape[-2:]
        answers[ids[0]] = ("RESOURCE_EXHAUSTED", f"the device ran out of memory for a {w}x{h} "
                           "photo; retry later or send a smaller one")

    def _refuse(self, context: Any, idx: int, refusal: _Refusal) -> bytes:
        code, message = refusal
        status, phrase = _HTTP_STATUS[code]
        self._set(context, idx, content_type="application/json", status=status, phrase=phrase)
        return json.dumps({"code": code, "message": shorten(message, 1000)}).encode()

    @staticmethod
    def _set(context: Any, idx: int, *, content_type: str, status: int, phrase: str = "",
             headers: dict[str, str] | None = None) -> None:
        """Status, content type and headers of request ``idx`` (nothing without a context)."""
        if context is None or getattr(context, "request_processor", None) is None:
            return
        context.set_response_content_type(idx, content_type)
        if status != 200:
            context.set_response_status(status, phrase, idx)
        for key, value in (headers or {}).items():
            context.set_response_header(idx, key, value)
