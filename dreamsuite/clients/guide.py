"""Client of the guide service (calls only), and the dream service's remote guide-weights
provider.

>>> client = GuideClient("127.0.0.1:50052")
>>> backbone, weights = client.guide_weights([png_bytes], "efficientnet_lite0", [("block_10", 1)])
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import torch

from dreamsuite import errors
from dreamsuite.clients import auth_metadata, open_channel
from dreamsuite.engine.guide import Selection
from dreamsuite.images import encode_png
from dreamsuite.v1 import common_pb2, guide_pb2, guide_pb2_grpc
from dreamsuite.wire.status import error_from_rpc

__all__ = ["GuideClient", "RemoteGuideWeights"]


class GuideClient:
    """Blocking client of ``GuideService`` at ``target`` (``HOST:PORT``); TLS and the bearer
    token follow :func:`dreamsuite.clients.open_channel` and ``auth_metadata``."""

    def __init__(self, target: str, *, token: str | None = None, timeout: float = 300.0,
                 retries: bool = True):
        self.target = target
        self.timeout = timeout
        self._channel = open_channel(target, retries=retries)
        self._stub = guide_pb2_grpc.GuideServiceStub(self._channel)
        self._metadata = tuple(auth_metadata(token))

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, f"guide service at {self.target}") from None

    def guide_weights(
        self, guides: Sequence[bytes], backbone: str, layers: Sequence[tuple[str, float]],
    ) -> tuple[str, dict[str, list[float]]]:
        """The backbone and normalised per-map weights ``{layer: [w...]}`` of encoded guides."""
        request = guide_pb2.GuideWeightsRequest(
            guides=[common_pb2.ImageRef(data=g) for g in guides], backbone=backbone,
            layers=[guide_pb2.GuideLayer(name=name, weight=weight) for name, weight in layers])
        response = self._call(self._stub.ComputeGuideWeights, request)
        return response.backbone, {entry.layer: list(entry.weights) for entry in response.layers}

    def select(
        self, images: Sequence[bytes], backbone: str, layers: Sequence[str], *, top_k: int,
        bottom_k: int, prefix: str = "",
    ) -> tuple[str, Selection]:
        """The backbone and the selection over encoded ``images`` (and/or a store prefix)."""
        request = guide_pb2.SelectNeuronsRequest(
            images=[common_pb2.ImageRef(data=i) for i in images], prefix=prefix,
            backbone=backbone, layers=list(layers), top_k=top_k, bottom_k=bottom_k)
        response = self._call(self._stub.SelectNeurons, request)
        selection = Selection(
            {e.layer: torch.tensor(list(e.means), dtype=torch.float32) for e in response.layers},
            {e.layer: list(e.top) for e in response.layers},
            {e.layer: list(e.bottom) for e in response.layers},
        )
        return response.backbone, selection

    def activations(self, image: bytes, backbone: str, layers: Sequence[str], *,
                    max_side: int = 0) -> guide_pb2.GuideActivationsResponse:
        """Per-map statistics of one encoded image."""
        request = guide_pb2.GuideActivationsRequest(
            image=common_pb2.ImageRef(data=image), backbone=backbone, layers=list(layers),
            max_side=max_side)
        return self._call(self._stub.Activations, request)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GuideClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RemoteGuideWeights:
    """The dream service's guide-weights provider: asks the guide service at ``target``.

    Guides arrive decoded (``[3, H, W]`` in [0, 1], 8-bit values) and travel as PNG, which
    is lossless for them, so the guide service sees exactly the pixels the engine would."""

    def __init__(self, target: str, *, token: str | None = None, timeout: float = 300.0):
        self.client = GuideClient(target, token=token, timeout=timeout)

    def guide_weights(self, backbone: str, weights: str, guides: Sequence[torch.Tensor],
                      layers: Sequence[str]) -> dict[str, torch.Tensor]:
        if weights != "pretrained":
            raise errors.InvalidArgument(
                "the guide service computes guide weights with pretrained weights only")
        _, result = self.client.guide_weights([encode_png(g) for g in guides], backbone,
                                              [(layer, 1.0) for layer in layers])
        return {layer: torch.tensor(values, dtype=torch.float32)
                for layer, values in result.items()}

    def close(self) -> None:
        self.client.close()
