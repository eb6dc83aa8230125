"""``dreamsuite serve gan``: the command line of the GAN service."""

from __future__ import annotations

import argparse
import asyncio

from services.common.config import apply_torch_threads
from services.gan.config import add_arguments, config_from_args

__all__ = ["register"]


def register(which: argparse._SubParsersAction) -> None:
    p = which.add_parser("gan", help="the GAN service (data sets, training jobs, sampling)",
                         description="Serve GanService over gRPC. Every flag also reads the "
                                     "environment variable shown in its help.")
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # heavy (torch): the server loads the GAN library; building the CLI's parser must not.
    from services.gan.server import serve

    config = config_from_args(args)
    apply_torch_threads(config.server)
    asyncio.run(serve(config))
    return 0
