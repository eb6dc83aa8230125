"""Activation backends: the forward pass of a backbone, per-map statistics, behind one interface.

Two implementations give the same numbers: ``TorchServeBackend``
(:mod:`dreamsuite.activations.torchserve_client`) calls the backbone handler on TorchServe over
its gRPC inference API, :class:`InProcessBackend` runs the same computation
(:mod:`dreamsuite.activations.compute`) in this process.

>>> backend = backend_from_url("torchserve://127.0.0.1:7070")   # or "inprocess"
>>> stats, version = await layer_stats(backend, png_bytes, "efficientnet_lite0", ["block_10"])
"""

from dreamsuite.activations.backend import (
    ACTIVATIONS_ENV,
    ActivationBackend,
    InProcessBackend,
    backend_from_url,
    layer_stats,
)
from dreamsuite.activations.compute import LayerStats

__all__ = [
    "ACTIVATIONS_ENV",
    "ActivationBackend",
    "InProcessBackend",
    "LayerStats",
    "backend_from_url",
    "layer_stats",
]
