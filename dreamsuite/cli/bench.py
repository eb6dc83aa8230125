"""``dreamsuite bench BENCH``: benchmarks that print ratios measured in one run.

The options live here; each benchmark's work lives in :mod:`dreamsuite.bench`, loaded only when
that benchmark runs (they import torch, services and TorchServe tooling).
"""

from __future__ import annotations

import argparse

from dreamsuite.defaults import DEFAULT_BACKBONE
from dreamsuite.loadtest.cli import register_bench as register_loadtest_bench

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks (ratios measured in one run)")
    which = p.add_subparsers(dest="bench", metavar="BENCH", required=True)

    e = which.add_parser("engine", help="dream time vs the naive forward+backward floor")
    e.add_argument("--json", action="store_true", help="print a JSON list of figures")
    e.add_argument("--size", type=int, default=512, help="input side in pixels (default 512)")
    e.add_argument("--octaves", type=int, default=4)
    e.add_argument("--steps", type=int, default=10)
    e.add_argument("--rounds", type=int, default=3, help="dreams per backbone (median)")
    e.add_argument("--backbone", action="append", help="only these backbones")
    e.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                   help="measure peak RSS of a 2048 px tiled dream vs a 512 px one")
    e.add_argument("--device", default=None,
                   help="cpu, cuda (default: CUDA when present); the floor runs there too")
    e.set_defaults(func=_engine)

    s = which.add_parser("service", help="a dream through the dream service vs in-process")
    s.add_argument("--json", action="store_true", help="print the figure as JSON")
    s.add_argument("--size", type=int, default=384, help="input side in pixels (default 384)")
    s.add_argument("--octaves", type=int, default=3)
    s.add_argument("--steps", type=int, default=10)
    s.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    s.add_argument("--device", default=None, help="cpu, cuda (default: CUDA when present)")
    s.set_defaults(func=_service)

    g = which.add_parser("guide", help="guide-weight latency: TorchServe vs in-process forward; "
                                       "--batching: TorchServe batch settings under load")
    g.add_argument("--json", action="store_true", help="print the figures as JSON")
    g.add_argument("--size", type=int, default=512, help="guide side in pixels (default 512)")
    g.add_argument("--layer", action="append", help="layers (default block_6 and block_10)")
    g.add_argument("--rounds", type=int, default=None,
                   help="interleaved rounds (default 10; 3 with --batching)")
    g.add_argument("--backbone", default=DEFAULT_BACKBONE)
    g.add_argument("--batching", action="store_true",
                   help="concurrent uncached calls through one TorchServe per batch setting")
    g.add_argument("--settings", nargs="+", default=["1:0", "4:5", "4:20", "8:5", "8:20"],
                   metavar="BATCH:DELAY_MS", help="--batching: archive batch size and max batch "
                   "delay per TorchServe; the first is the baseline (default 1:0 4:5 4:20 8:5 8:20)")
    g.add_argument("--concurrency", type=int, nargs="+", default=[1, 8],
                   help="--batching: concurrent clients (default 1 8)")
    g.add_argument("--burst", type=int, default=4,
                   help="--batching: calls per client per round (default 4)")
    g.set_defaults(func=_guide)

    n = which.add_parser("gan", help="GAN training step vs the reference loop; sampling vs "
                                     "dreaming")
    n.add_argument("--json", action="store_true", help="print the figures as JSON")
    n.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    n.add_argument("--batch", type=int, default=32)
    n.add_argument("--width", type=int, default=None, help="network width (model default)")
    n.add_argument("--steps", type=int, default=5, help="training steps per round (default 5)")
    n.set_defaults(func=_gan)

    t = which.add_parser("throughput", help="dreams/min with cross-request batching off and "
                                            "on, by concurrency and size")
    t.add_argument("--json", action="store_true", help="print the figures as JSON")
    t.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 512],
                   help="image sides in pixels (default 64 128 512)")
    t.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8],
                   help="concurrent clients (default 1 2 4 8)")
    t.add_argument("--dreams", type=int, default=8,
                   help="dreams per measurement (at least four times the concurrency, so "
                        "that the steady state's batches outweigh the first ones)")
    t.add_argument("--octaves", type=int, default=2)
    t.add_argument("--steps", type=int, default=5)
    t.add_argument("--layer", default="block_10")
    t.add_argument("--max-batch", type=int, default=8)
    t.add_argument("--window-ms", type=float, default=25.0)
    t.add_argument("--device", default=None, help="cpu, cuda (default: CUDA when present)")
    t.set_defaults(func=_throughput)

    y = which.add_parser("style", help="style transfer vs the PyTorch tutorial's loop; "
                                       "the default method vs plain Gatys judged on Lite2")
    y.add_argument("--json", action="store_true", help="print the figures as JSON")
    y.add_argument("--size", type=int, default=512, help="speed: content side (default 512)")
    y.add_argument("--iterations", type=int, default=100, help="speed: L-BFGS iterations")
    y.add_argument("--rounds", type=int, default=2, help="speed: interleaved rounds")
    y.add_argument("--quality-size", type=int, default=256)
    y.add_argument("--quality-iterations", type=int, default=100)
    y.add_argument("--content-weights", type=float, nargs="+", default=[3.0, 10.0, 30.0],
                   help="quality: content weights of the default method (pyramid; default "
                        "3 10 30)")
    y.add_argument("--gram-content-weights", type=float, nargs="+",
                   default=[1e4, 2e4, 5e4],
                   help="quality: content weights of plain Gatys, whose Gram losses are far "
                        "larger (default 1e4 2e4 5e4: its best on the bench's images)")
    y.set_defaults(func=_style)

    c = which.add_parser("clean", help="high-frequency share and objective gain of each "
                                       "gradient conditioning vs the plain pixel step")
    c.add_argument("--json", action="store_true", help="print the figures as JSON")
    c.add_argument("--images", nargs="+", default=["chelsea", "coffee", "astronaut"],
                   help="sample images (default chelsea coffee astronaut)")
    c.add_argument("--size", type=int, default=224, help="shorter side in pixels (default 224)")
    c.add_argument("--octaves", type=int, default=None, help="octaves (default the engine's)")
    c.add_argument("--steps", type=int, default=None, help="steps per octave (default the "
                                                           "engine's)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--laplacian", type=int, default=4, help="Laplacian levels (default 4)")
    c.add_argument("--fourier", type=float, default=1.0, help="Fourier decay (default 1)")
    c.add_argument("--device", default=None, help="cpu, cuda (default: CUDA when present)")
    c.set_defaults(func=_clean)

    o = which.add_parser("one-pass", help="one-pass dreams (dream2dream on TorchServe) vs the "
                                          "optimised dream: end to end and dreams/min")
    o.add_argument("--json", action="store_true", help="print the figures as JSON")
    o.add_argument("--size", type=int, default=512, help="photo side in pixels (default 512)")
    o.add_argument("--rounds", type=int, default=3,
                   help="end to end: interleaved rounds (default 3; median)")
    o.add_argument("--users", type=int, default=4,
                   help="under load: concurrent users (default 4)")
    o.add_argument("--duration", type=_duration, default="30s", metavar="TIME",
                   help="under load: how long each side runs, e.g. 30s, 2m (default 30s)")
    o.add_argument("--octaves", type=int, default=4, help="optimised dreams (default 4)")
    o.add_argument("--steps", type=int, default=10, help="optimised dreams (default 10)")
    o.add_argument("--vgg16", action=argparse.BooleanOptionalAction, default=True,
                   help="also one VGG16 relu4_3 dream with random weights (slow on a CPU)")
    o.add_argument("--device", default=None, help="cpu, cuda (default: CUDA when present)")
    o.set_defaults(func=_one_pass)

    d = which.add_parser("dream2dream-loss", help="dream2dream's training losses (paired, "
                                                  "pix2pix, objective) trained and evaluated "
                                                  "side by side")
    d.add_argument("datasets", nargs="+", metavar="DATASET",
                   help="paired data sets (build-dataset ids), one condition each")
    d.add_argument("--artifacts", default="artifacts", help="store (default ./artifacts)")
    d.add_argument("--losses", nargs="+", default=["paired", "pix2pix", "objective"],
                   help="losses to compare (default paired pix2pix objective)")
    d.add_argument("--steps", type=int, default=1000, help="training steps each (default 1000)")
    d.add_argument("--batch", type=int, default=8, help="batch (default 8)")
    d.add_argument("--eval-every", type=int, default=250, help="evaluate every N steps "
                                                                "(default 250)")
    d.add_argument("--crop", type=int, default=0, help="training crop (default half the side)")
    d.add_argument("--width", type=int, default=None, help="network width (default 16)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--png", default=None, help="write held-out photo | dream | each loss here")
    d.add_argument("--seed-floor", type=int, default=8, metavar="N",
                   help="also dream N held-out photos again with the next seed, scored alike "
                        "(the optimisation's own ratio; default 8, 0: off)")
    d.add_argument("--device", default=None, help="cpu, cuda (default: CUDA when present)")
    d.add_argument("--json", action="store_true", help="print the figures as JSON")
    d.set_defaults(func=_dream2dream_loss)

    w = which.add_parser("waits", help="a dream with OpenMP's default vs passive waits, idle "
                                       "and beside a busy process")
    w.add_argument("--json", action="store_true", help="print the figures as JSON")
    w.add_argument("--size", type=int, default=384, help="input side in pixels (default 384)")
    w.add_argument("--octaves", type=int, default=3)
    w.add_argument("--steps", type=int, default=5)
    w.add_argument("--rounds", type=int, default=3, help="dreams per policy and setting "
                                                         "(median; default 3)")
    w.add_argument("--threads", type=int, default=0,
                   help="torch threads of the dream (default: every available CPU)")
    w.set_defaults(func=_waits)

    register_loadtest_bench(which)


def _duration(text: str) -> float:
    """Seconds of ``--duration`` (the load tester's syntax), checked before any work."""
    from dreamsuite.errors import InvalidArgument
    from dreamsuite.loadtest.scenario import parse_duration

    try:
        seconds = parse_duration(text, "--duration")
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--duration: ")) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("--duration: must be above 0")
    return seconds


# heavy (torch, servers, TorchServe tooling): each benchmark loads when it runs, so building
# the parser stays fast for `dreamsuite health` (a container health check).
def _engine(args: argparse.Namespace) -> int:
    from dreamsuite.bench import engine

    return engine.main(args)


def _service(args: argparse.Namespace) -> int:
    from dreamsuite.bench import service

    return service.main(args)


def _guide(args: argparse.Namespace) -> int:
    from dreamsuite.bench import guide

    return guide.main(args)


def _throughput(args: argparse.Namespace) -> int:
    from dreamsuite.bench import throughput

    return throughput.main(args)


def _waits(args: argparse.Namespace) -> int:
    from dreamsuite.bench import waits

    return waits.main(args)


def _style(args: argparse.Namespace) -> int:
    from dreamsuite.bench import style

    return style.main(args)


def _clean(args: argparse.Namespace) -> int:
    from dreamsuite.bench import clean

    return clean.main(args)


def _gan(args: argparse.Namespace) -> int:
    from dreamsuite.bench import gan

    return gan.main(args)


def _dream2dream_loss(args: argparse.Namespace) -> int:
    from dreamsuite.bench import dream2dream_loss

    return dream2dream_loss.main(args)


def _one_pass(args: argparse.Namespace) -> int:
    from dreamsuite.bench import one_pass

    return one_pass.main(args)
