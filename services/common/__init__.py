"""What every service shares: server bootstrap, flags, auth and the error -> status mapping."""

from services.common.config import ServerConfig, add_server_arguments, server_config_from_args
from services.common.errors import ErrorMapping
from services.common.server import (
    RunningServer,
    ServiceBinding,
    serve_until_signalled,
    start_server,
)

__all__ = [
    "ErrorMapping",
    "RunningServer",
    "ServerConfig",
    "ServiceBinding",
    "add_server_arguments",
    "serve_until_signalled",
    "server_config_from_args",
    "start_server",
]
