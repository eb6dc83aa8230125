"""``dreamsuite demo --out DIR``: start the suite, dream and guided-dream bundled sample images
through the services, write the results and a contact sheet, stop the suite
(:mod:`dreamsuite.launcher.demo` does the work)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "cmd_demo"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="start the suite, dream sample images through it, stop it")
    p.add_argument("--out", default="out", help="output folder (default out/)")
    p.add_argument("--size", type=int, default=256, help="shorter side in pixels (default 256)")
    p.add_argument("--octaves", type=int, default=4, help="octaves (default 4)")
    p.add_argument("--steps", type=int, default=8, help="steps per octave (default 8)")
    p.add_argument("--in-process", action="store_true",
                   help="dream in this process instead of through the services")
    p.add_argument("--artifacts", metavar="URL", help="artifact store of the suite it starts")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    # heavy (torch): see options.config_from_args.
    from dreamsuite.launcher.demo import demo

    written = demo(args)
    print(f"wrote {len(written)} files to {Path(args.out).resolve()}:")
    for path in written:
        print(f"  {path}")
    return 0
