"""``dreamsuite bench engine|service|guide``: benchmarks that print ratios measured in one run.

Each module in :data:`BENCH_MODULES` has ``register(subparsers)`` adding one benchmark.
"""

from __future__ import annotations

import argparse
import importlib

__all__ = ["register", "BENCH_MODULES"]

BENCH_MODULES = (
    "dreamsuite.bench.engine",
    "dreamsuite.bench.service",
    "dreamsuite.bench.guide",
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks (ratios measured in one run)")
    which = p.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name in BENCH_MODULES:
        importlib.import_module(name).register(which)
