"""The ``dreamsuite`` command line: one module per group of subcommands.

Each module in :data:`COMMANDS` has ``register(subparsers)``, which adds its subcommands and
sets ``func`` (``args -> exit code``) on each. Building the parser loads no torch: commands load
the engine when they run, so quick ones (``dreamsuite health`` in a container) stay quick.
"""

from __future__ import annotations

import argparse
import logging
import sys

from dreamsuite import __version__
from dreamsuite.cli import (
    archive,
    backbones,
    bench,
    demo,
    dreaming,
    gan,
    guiding,
    presets,
    serve,
    styling,
    suite,
)
from dreamsuite.errors import DreamsuiteError
from dreamsuite.loadtest import cli as loadtest

__all__ = ["main", "build_parser", "COMMANDS"]

#: The command groups, in the order ``dreamsuite --help`` lists them.
COMMANDS = (backbones, dreaming, presets, guiding, styling, gan, bench, loadtest, serve, archive,
            suite, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dreamsuite",
        description="Deep Dreams, Guided Dreams and their replicas, locally or through the suite.",
    )
    parser.add_argument("--version", action="version", version=f"dreamsuite {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except DreamsuiteError as exc:
        print(f"dreamsuite {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dreamsuite {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
