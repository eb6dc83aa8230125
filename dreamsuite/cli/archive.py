"""``dreamsuite archive --backbone B -o MODEL_STORE``: a TorchServe model archive of a backbone
(the recipe is :mod:`handlers.archive`), and a config.properties for local runs beside it."""

from __future__ import annotations

import argparse
from pathlib import Path

from dreamsuite.defaults import DEFAULT_BACKBONE
from handlers import DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCH_DELAY_MS

__all__ = ["register", "cmd_archive"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("archive", help="build a TorchServe model archive (.mar) of a backbone")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help="backbone to archive")
    p.add_argument("-o", "--output", required=True, metavar="MODEL_STORE",
                   help="model store folder (created); the archive is BACKBONE.mar")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help=f"TorchServe batch size (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--max-batch-delay", type=int, default=DEFAULT_MAX_BATCH_DELAY_MS,
                   help="milliseconds TorchServe waits to fill a batch "
                   f"(default {DEFAULT_MAX_BATCH_DELAY_MS})")
    p.add_argument("--workers", type=int, default=1, help="workers per model (default 1)")
    p.add_argument("--no-config", action="store_true",
                   help="do not write config.properties next to the archive")
    p.set_defaults(func=cmd_archive)


def cmd_archive(args: argparse.Namespace) -> int:
    # heavy (torch, model archiver): see options.config_from_args.
    from dreamsuite.torchserve import render_config
    from handlers.archive import build_archive

    store = Path(args.output)
    path = build_archive(args.backbone, store, batch_size=args.batch_size,
                         max_batch_delay=args.max_batch_delay, workers=args.workers)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if not args.no_config:
        config = store / "config.properties"
        config.write_text(render_config(model_store=store, models=[args.backbone],
                                        workers=args.workers))
        print(f"wrote {config} (loopback, token authorization off: local runs only)")
    return 0
