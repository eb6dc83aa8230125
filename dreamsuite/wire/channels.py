"""Channel settings both ends share: message limits are set explicitly on servers and clients
alike, from the same default."""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "channel_options"]

#: Send and receive limit for every message, both ends (64 MiB).
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                    server_name: str | None = None) -> list[tuple[str, int | str]]:
    """gRPC channel/server options with explicit message limits (and a TLS name override)."""
    options: list[tuple[str, int | str]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return options
