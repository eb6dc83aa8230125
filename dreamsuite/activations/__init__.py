"""Activation backends: the forward pass of a backbone, per-map statistics, behind one interface.

Two implementations give the same numbers: ``TorchServeBackend``
(:mod:`dreamsuite.activations.torchserve_client`) calls the backbone handler on TorchServe over
its gRPC inference API, :class:`InProcessBackend` runs the same computation
(:mod:`dreamsuite.activations.compute`) in this process.

The package itself imports nothing (its generated TorchServe API, ``tsproto``, is used by light
tools such as ``dreamsuite health --torchserve``); import the modules:
``activations.base`` (the interface), ``activations.backend`` (in-process backend, factory),
``activations.torchserve_client``, ``activations.compute``.

>>> backend = backend_from_url("torchserve://127.0.0.1:7070")   # or "inprocess"
>>> stats, version = await layer_stats(backend, png_bytes, "efficientnet_lite0", ["block_10"])
"""
