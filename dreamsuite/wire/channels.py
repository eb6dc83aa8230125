"""Channel settings both ends share: message limits are set explicitly on servers and clients
alike, from the same default. Clients add a service config on top: round-robin balancing over
every address a target resolves to (a headless service's pods) and, optionally, retries of the
suite's calls that a busy or restarting server refused."""

from __future__ import annotations

import json

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "RETRY_POLICY",
    "DREAM_RETRY_POLICY",
    "SUITE_SERVICES",
    "channel_options",
    "service_config",
]

#: Send and receive limit for every message, both ends (64 MiB).
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

#: The services the retry policy names; calls to any other service (TorchServe, health) are
#: never retried by it.
SUITE_SERVICES = ("dreamsuite.v1.DreamService", "dreamsuite.v1.GuideService",
                  "dreamsuite.v1.GanService", "dreamsuite.v1.StyleService")

#: gRPC retry policy of the suite's calls: a call refused with ``RESOURCE_EXHAUSTED`` (queue
#: full) or ``UNAVAILABLE`` is tried again after a jittered exponential backoff, or after the
#: server's ``grpc-retry-pushback-ms`` trailer when it sends one. A streaming call is retried
#: only until its first message arrives. A negative pushback tells the client not to retry (a
#: refusal for good); a pushback of 0 ms stalls the retry until the deadline (grpcio 1.85), so
#: servers send at least 1.
RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.5s",
    "maxBackoff": "10s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["RESOURCE_EXHAUSTED", "UNAVAILABLE"],
}

#: Dreams (and style transfers, streamed the same way) are retried only when refused for
#: capacity: a dream cut off by a stopping server
#: (UNAVAILABLE) is not replayed, as grpcio (1.85) can leave the response iterator of a
#: server-streaming call that was retried after it started waiting for ever.
DREAM_RETRY_POLICY = RETRY_POLICY | {"retryableStatusCodes": ["RESOURCE_EXHAUSTED"]}
_STREAMING = ("dreamsuite.v1.DreamService", "dreamsuite.v1.StyleService")

# A method config without a retry policy overrides its service's: StartTraining registers a
# new job before it can fail with UNAVAILABLE, so a retry could start the training twice;
# PublishModel's UNAVAILABLE comes after a whole publication (archive built, every replica
# tried, minutes when a worker never loads), and a replay would publish another version.
_NOT_RETRIED = ({"service": "dreamsuite.v1.GanService", "method": "StartTraining"},
                {"service": "dreamsuite.v1.GanService", "method": "PublishModel"})


def service_config(*, round_robin: bool = True, retries: bool = True) -> str:
    """The client service config (JSON): ``round_robin`` balancing and :data:`RETRY_POLICY`
    on :data:`SUITE_SERVICES`, each when asked for."""
    config: dict = {}
    if round_robin:
        config["loadBalancingConfig"] = [{"round_robin": {}}]
    if retries:
        config["methodConfig"] = [
            {"name": [{"service": name} for name in SUITE_SERVICES if name not in _STREAMING],
             "retryPolicy": RETRY_POLICY},
            {"name": [{"service": name} for name in _STREAMING],
             "retryPolicy": DREAM_RETRY_POLICY},
            {"name": list(_NOT_RETRIED)},
        ]
    return json.dumps(config)


def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                    server_name: str | None = None, *, round_robin: bool = False,
                    retries: bool = False) -> list[tuple[str, int | str]]:
    """gRPC channel/server options with explicit message limits (and a TLS name override).

    Clients only: ``round_robin`` and ``retries`` add a service config (:func:`service_config`);
    a server takes neither."""
    options: list[tuple[str, int | str]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    if round_robin or retries:
        options.append(("grpc.service_config",
                        service_config(round_robin=round_robin, retries=retries)))
    if retries:
        # A request larger than the retry buffer (256 KiB by default) commits its call at
        # once, and a committed call is never retried: a dream's image may be megabytes.
        options += [("grpc.enable_retries", 1),
                    ("grpc.per_rpc_retry_buffer_size", max_message_bytes)]
    return options
