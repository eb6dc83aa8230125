"""``dreamsuite bench engine|...``: benchmarks that print ratios measured in one run."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks (ratios measured in one run)")
    which = p.add_subparsers(dest="bench", metavar="BENCH", required=True)
    e = which.add_parser("engine", help="dream time vs the naive forward+backward floor")
    e.add_argument("--json", action="store_true")
    e.add_argument("--size", type=int, default=512, help="input size (default 512)")
    e.add_argument("--repeats", type=int, default=5, help="timed passes per floor size")
    e.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure peak RSS of a 2048px tiled dream vs a 512px one")
    e.set_defaults(func=lambda a: __import__("dreamsuite.bench.engine", fromlist=["main"]).main(a))
