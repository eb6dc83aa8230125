"""``dreamsuite bench engine``: dream time vs the naive forward+backward floor."""

from __future__ import annotations

import argparse

__all__ = ["register", "main"]


def register(which: argparse._SubParsersAction) -> None:
    e = which.add_parser("engine", help="dream time vs the naive forward+backward floor")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    raise NotImplementedError("bench engine is being written")
