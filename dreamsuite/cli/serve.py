"""``dreamsuite serve SERVICE``: run one of the suite's gRPC services.

Each module in :data:`SERVICE_CLI_MODULES` has ``register(subparsers)`` adding one service.
"""

from __future__ import annotations

import argparse
import importlib

__all__ = ["register", "SERVICE_CLI_MODULES"]

SERVICE_CLI_MODULES = (
    "services.dream.cli",
    "services.guide.cli",
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run a gRPC service of the suite")
    which = p.add_subparsers(dest="service", metavar="SERVICE", required=True)
    for name in SERVICE_CLI_MODULES:
        importlib.import_module(name).register(which)
