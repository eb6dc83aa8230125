"""``dreamsuite serve SERVICE``: run one of the suite's gRPC services.

Each service package has a ``cli`` module whose ``register(subparsers)`` adds its command.
"""

from __future__ import annotations

import argparse

from services.dream import cli as dream_cli
from services.gan import cli as gan_cli
from services.guide import cli as guide_cli

__all__ = ["register", "SERVICES"]

#: The service commands, in the order ``dreamsuite serve --help`` lists them.
SERVICES = (dream_cli, guide_cli, gan_cli)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run a gRPC service of the suite")
    which = p.add_subparsers(dest="service", metavar="SERVICE", required=True)
    for service in SERVICES:
        service.register(which)
