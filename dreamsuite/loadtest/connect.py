"""Channels of simulated users: TLS and the bearer token as every client of the suite
(:func:`dreamsuite.clients.open_channel`, ``$DREAMSUITE_TLS_CA``, ``$DREAMSUITE_TOKEN``), plus
what a load test needs on top: each user gets a connection of its own (it stands for one
client), and calls go round-robin over every address the target resolves to, so a headless
Kubernetes service (``dns:///dream.dreamsuite.svc.cluster.local:50051``) is loaded on all pods.
Unlike other clients, a user never retries a refused call: every ``RESOURCE_EXHAUSTED`` counts.
"""

from __future__ import annotations

import os

import grpc

from dreamsuite.clients import TLS_CA_ENV, auth_metadata, tls_credentials
from dreamsuite.v1 import dream_pb2_grpc, gan_pb2_grpc, guide_pb2_grpc
from dreamsuite.wire.channels import DEFAULT_MAX_MESSAGE_BYTES, channel_options

__all__ = ["user_channel", "stub_method", "auth_metadata"]


def user_channel(target: str, *, tls_ca: str | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> grpc.Channel:
    """A blocking channel to ``target`` for one simulated user (TLS when ``tls_ca`` or
    ``$DREAMSUITE_TLS_CA`` names a CA file)."""
    tls_ca = tls_ca or os.environ.get(TLS_CA_ENV) or None
    options = [*channel_options(max_message_bytes, round_robin=True, retries=False),
               ("grpc.use_local_subchannel_pool", 1)]
    if tls_ca is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, tls_credentials(tls_ca), options=options)


def stub_method(kind: str, channel: grpc.Channel):
    """The multi-callable that a user of ``kind`` (:data:`~dreamsuite.loadtest.scenario.KINDS`)
    calls on ``channel``."""
    if kind == "dream":
        return dream_pb2_grpc.DreamServiceStub(channel).Dream
    if kind == "sample":
        return gan_pb2_grpc.GanServiceStub(channel).Sample
    guide = guide_pb2_grpc.GuideServiceStub(channel)
    return guide.ComputeGuideWeights if kind == "guide_weights" else guide.SelectNeurons
