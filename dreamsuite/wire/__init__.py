"""What crosses the wire: message limits, the one error <-> status-code table (both
directions), and proto <-> library conversions shared by clients and services."""

from dreamsuite.wire.channels import DEFAULT_MAX_MESSAGE_BYTES, channel_options
from dreamsuite.wire.status import STATUS_CODES, error_from_status, status_for

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "STATUS_CODES",
    "channel_options",
    "error_from_status",
    "status_for",
]
