"""Activations and per-map statistics of a backbone: the computation that the TorchServe handler
and the in-process backend share, so that both give the same numbers.

``compute_batch(backbone, requests)`` turns ``ActivationsRequest`` messages into
``ActivationsResponse`` messages; images of the same size asking for the same layers share one
forward pass (TorchServe batching). A failure that belongs to one request is returned inside its
response (``ActivationsResponse.error``) and :func:`stats_from_response` raises it again as the
library exception it came from.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

import dreamsuite
from dreamsuite.backbones import Backbone, fuse_batchnorm, get_backbone_spec
from dreamsuite.defaults import DEFAULT_MAX_RESPONSE_BYTES
from dreamsuite.device import out_of_memory, release_cached
from dreamsuite.engine.guide import prepare_guide
from dreamsuite.errors import DreamsuiteError, InvalidArgument, ResourceExhausted
from dreamsuite.images import load_image
from dreamsuite.v1 import activations_pb2 as pb

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "LayerStats",
    "backbone_from_state_dict",
    "backend_version",
    "compute_batch",
    "stats_from_response",
    "weights_digest",
]


#: Room for everything in a response besides the full maps (statistics, names, framing).
_OVERHEAD_BYTES = 64 * 1024

_ERROR_CODES: dict[type[DreamsuiteError], int] = {
    InvalidArgument: pb.ActivationsError.CODE_INVALID_ARGUMENT,
    ResourceExhausted: pb.ActivationsError.CODE_RESOURCE_EXHAUSTED,
}


@dataclass(frozen=True)
class LayerStats:
    """Per-map statistics of one layer for one image: three ``[C]`` float tensors, and the
    spatial size of the maps they summarise."""

    sum: torch.Tensor
    mean: torch.Tensor
    max: torch.Tensor
    height: int = 0
    width: int = 0


def backbone_from_state_dict(
    name: str, state: dict[str, torch.Tensor], device: torch.device | str = "cpu"
) -> Backbone:
    """A frozen :class:`Backbone` from a state dict (as in a model archive), prepared exactly
    as :func:`dreamsuite.backbones.get_backbone` prepares it: eval, BatchNorm folded,
    channels_last."""
    spec = get_backbone_spec(name)
    model: nn.Module = spec.build()
    model.load_state_dict(state)
    model.eval().requires_grad_(False)
    fuse_batchnorm(model)
    device = torch.device(device)
    model = model.to(device).to(memory_format=torch.channels_last)
    return Backbone(spec, model, device, "pretrained")


_DIGESTS: dict[int, str] = {}
_DIGEST_LOCK = threading.Lock()


def weights_digest(backbone: Backbone) -> str:
    """First 12 hex digits of the sha256 of the backbone's (folded) parameters."""
    with _DIGEST_LOCK:
        key = id(backbone.model)
        if key not in _DIGESTS:
            digest = hashlib.sha256()
            for name, tensor in sorted(backbone.model.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            _DIGESTS[key] = digest.hexdigest()[:12]
        return _DIGESTS[key]


def backend_version(kind: str, backbone: Backbone) -> str:
    """``<kind>/<backbone>/<weights digest>/dreamsuite-<version>``: what produced the numbers."""
    return f"{kind}/{backbone.name}/{weights_digest(backbone)}/dreamsuite-{dreamsuite.__version__}"


@dataclass
class _Job:
    index: int
    request: pb.ActivationsRequest
    layers: tuple[str, ...]
    image: torch.Tensor


def compute_batch(
    backbone: Backbone,
    requests: Sequence[pb.ActivationsRequest],
    *,
    kind: str,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> list[pb.ActivationsResponse]:
    """One response per request, in order; ``kind`` names the backend in ``backend_version``.

    Each response reports ``batch_size`` (``len(requests)``: the handler overrides it with the
    size of TorchServe's batch) and ``shared_forward`` (the requests of its forward pass, 0 for
    a request that failed before or after it)."""
    version = backend_version(kind, backbone)
    responses: list[pb.ActivationsResponse | None] = [None] * len(requests)
    groups: dict[tuple, list[_Job]] = {}
    for index, request in enumerate(requests):
        try:
            job = _decode(backbone, index, request)
        except DreamsuiteError as exc:
            responses[index] = _error_response(backbone, exc)
            continue
        groups.setdefault((job.layers, tuple(job.image.shape)), []).append(job)
    for (layers, _), group in groups.items():
        for jobs, acts in _forward(backbone, group, layers):
            if acts is None:  # out of memory even alone
                responses[jobs[0].index] = pb.ActivationsResponse(
                    backbone=backbone.name, error=pb.ActivationsError(
                        code=pb.ActivationsError.CODE_OUT_OF_MEMORY,
                        message=f"the backend ran out of memory for a {jobs[0].image.shape[2]}x"
                                f"{jobs[0].image.shape[1]} image; retry later or send a "
                                "smaller one"))
                continue
            _respond_all(backbone, jobs, acts, responses, max_response_bytes)
            del acts  # before the next forward pass
    for response in responses:
        assert response is not None
        response.batch_size = len(requests)
        if not response.HasField("error"):
            response.backend_version = version
    return [r for r in responses if r is not None]


def _forward(backbone: Backbone, jobs: list[_Job], layers: tuple[str, ...]
             ) -> Iterator[tuple[list[_Job], dict[str, torch.Tensor] | None]]:
    """The activations of ``jobs`` (one image size) as one forward pass; out of memory, one
    image at a time (each answered before the next runs); ``None`` for an image that does not
    fit even alone."""
    try:
        acts = backbone.activations(torch.stack([job.image for job in jobs]), layers)
    except RuntimeError as exc:
        if not out_of_memory(exc):
            raise
        acts = None
    if acts is not None:
        yield jobs, acts
        return
    release_cached(backbone.device)
    if len(jobs) == 1:
        yield jobs, None
        return
    for job in jobs:
        yield from _forward(backbone, [job], layers)


def _respond_all(backbone: Backbone, jobs: list[_Job], acts: dict[str, torch.Tensor],
                 responses: list[pb.ActivationsResponse | None], max_response_bytes: int) -> None:
    for row, job in enumerate(jobs):
            cap = _cap(job.request, max_response_bytes)
            try:
                response = _respond(backbone, job, {k: v[row] for k, v in acts.items()}, cap)
            except DreamsuiteError as exc:
                response = _error_response(backbone, exc)
            else:
                response.shared_forward = len(jobs)
            responses[job.index] = response


def _decode(backbone: Backbone, index: int, request: pb.ActivationsRequest) -> _Job:
    if request.backbone and request.backbone != backbone.name:
        raise InvalidArgument(
            f"this handler serves backbone {backbone.name!r}, not {request.backbone!r}"
        )
    if not request.layers:
        raise InvalidArgument("layers: give at least one layer")
    names = [backbone.spec.layer(name).name for name in request.layers]
    layers = tuple(dict.fromkeys(names))
    if len(layers) < len(names):  # each would be answered again, past the response size check
        twice = next(name for name in layers if names.count(name) > 1)
        raise InvalidArgument(f"layers: {twice} is asked for more than once (by name or alias);"
                              " give each layer once")
    image = load_image(request.image)
    if request.max_side:
        image = prepare_guide(image, int(request.max_side))
    if min(image.shape[-2:]) < backbone.spec.min_size:
        raise InvalidArgument(
            f"image is {image.shape[2]}x{image.shape[1]}; {backbone.name} needs at least "
            f"{backbone.spec.min_size} pixels on each side"
        )
    return _Job(index, request, layers, image)


def _cap(request: pb.ActivationsRequest, server_cap: int) -> int:
    asked = int(request.max_response_bytes)
    return min(asked, server_cap) if asked else server_cap


def _respond(
    backbone: Backbone, job: _Job, acts: dict[str, torch.Tensor], cap: int
) -> pb.ActivationsResponse:
    full = job.request.reduction == pb.REDUCTION_FULL
    if full:
        size = _OVERHEAD_BYTES + sum(4 * acts[name].numel() for name in job.layers)
        if size > cap:
            raise ResourceExhausted(
                f"full maps of {', '.join(job.layers)} for a {job.image.shape[2]}x"
                f"{job.image.shape[1]} image take about {size} bytes, over the {cap}-byte "
                "response cap; ask for REDUCTION_STATS, fewer layers or a smaller image"
            )
    response = pb.ActivationsResponse(
        backbone=backbone.name, image_height=job.image.shape[1], image_width=job.image.shape[2]
    )
    for name in job.request.layers:
        act = acts[backbone.spec.layer(name).name]  # [C, h, w]
        entry = response.layers.add(
            layer=name, channels=act.shape[0], height=act.shape[1], width=act.shape[2]
        )
        entry.sum.extend(act.sum(dim=(1, 2)).tolist())
        entry.mean.extend(act.mean(dim=(1, 2)).tolist())
        entry.max.extend(act.amax(dim=(1, 2)).tolist())
        if full:
            entry.maps = act.contiguous().cpu().numpy().astype("<f4").tobytes()
    return response


def _error_response(backbone: Backbone, exc: DreamsuiteError) -> pb.ActivationsResponse:
    code = next((c for cls, c in _ERROR_CODES.items() if isinstance(exc, cls)),
                pb.ActivationsError.CODE_INTERNAL)
    return pb.ActivationsResponse(
        backbone=backbone.name, error=pb.ActivationsError(code=code, message=str(exc))
    )


def stats_from_response(response: pb.ActivationsResponse) -> dict[str, LayerStats]:
    """``{layer: LayerStats}`` of a response; its error, if any, raised as a library exception."""
    if response.HasField("error"):
        error = response.error
        if error.code == pb.ActivationsError.CODE_INVALID_ARGUMENT:
            raise InvalidArgument(error.message)
        if error.code == pb.ActivationsError.CODE_RESOURCE_EXHAUSTED:
            raise ResourceExhausted(error.message)
        if error.code == pb.ActivationsError.CODE_OUT_OF_MEMORY:  # load: worth a retry
            raise ResourceExhausted(error.message, retry_after=1.0)
        raise DreamsuiteError(f"activation backend failed: {error.message}")
    return {
        entry.layer: LayerStats(
            torch.tensor(entry.sum, dtype=torch.float32),
            torch.tensor(entry.mean, dtype=torch.float32),
            torch.tensor(entry.max, dtype=torch.float32),
            entry.height,
            entry.width,
        )
        for entry in response.layers
    }
