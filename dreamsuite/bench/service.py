"""``dreamsuite bench service``: the same dream in-process and through the dream service.

Both paths start from the encoded input file and end with the final PNG (provenance included)
written to disk, as ``dreamsuite dream`` and ``dreamsuite dream --remote`` do. The service runs
in this process on a loopback port with a local artifact store; its path adds the gRPC stream,
previews, artifact writes and the inline copy of the result. Runs are interleaved so that load
from other processes hits both alike; ``ratio`` is the fastest service run over the fastest
in-process run (the timeit convention: on a shared machine the fastest run is the one least
disturbed by others); medians are reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["register", "main", "TARGET_RATIO"]

TARGET_RATIO = 1.05


@dataclass
class ServiceFigure:
    size: int
    octaves: int
    steps: int
    rounds: int
    in_process_seconds: float
    service_seconds: float
    ratio: float
    in_process_median_seconds: float
    service_median_seconds: float
    median_ratio: float
    target: float = TARGET_RATIO


def register(which: argparse._SubParsersAction) -> None:
    s = which.add_parser("service", help="a dream through the dream service vs in-process")
    s.add_argument("--json", action="store_true", help="print the figure as JSON")
    s.add_argument("--size", type=int, default=384, help="input side in pixels (default 384)")
    s.add_argument("--octaves", type=int, default=3)
    s.add_argument("--steps", type=int, default=10)
    s.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    s.add_argument("--device", default=None, help="cpu, cuda (default: CUDA when present)")
    s.set_defaults(func=main)


class _BackgroundServer:
    """The dream service on its own event loop in a daemon thread."""

    def __init__(self, store: Path, device: str | None):
        from services.common.config import ServerConfig
        from services.dream.config import DreamServiceConfig
        from services.dream.server import start_dream_server

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        config = DreamServiceConfig(
            server=ServerConfig(host="127.0.0.1", port=0, grace_seconds=0),
            artifacts=store.as_uri(), device=device, queue_size=1)
        self.server = self._call(start_dream_server(config))

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(600)

    def close(self) -> None:
        self._call(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)


def _in_process(source: bytes, config, out: Path, device: str | None) -> float:
    from dreamsuite.dream import dream, provenance_text
    from dreamsuite.images import load_image, save_png

    started = time.perf_counter()
    result = dream(load_image(source), config, device=device)
    save_png(result.image, out, provenance_text(result.provenance))
    return time.perf_counter() - started


def _through_service(client, source: bytes, config, out: Path) -> float:
    from dreamsuite.clients.dream import request_from_config
    from dreamsuite.v1 import dream_pb2

    output = dream_pb2.OutputOptions(preview_max_side=128, inline_images=True)
    started = time.perf_counter()
    request = request_from_config(config, source, output=output)
    result = None
    for update in client.dream(request):
        if update.HasField("result"):
            result = update.result
    assert result is not None and result.image
    out.write_bytes(result.image)
    return time.perf_counter() - started


def measure(size: int, octaves: int, steps: int, rounds: int,
            device: str | None) -> ServiceFigure:
    from dreamsuite.clients.dream import DreamClient
    from dreamsuite.dream import DreamConfig
    from dreamsuite.images import encode_png, sample_image

    source = encode_png(sample_image("astronaut", size=size)[:, :size, :size])
    config = DreamConfig(octaves=octaves, steps=steps, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        server = _BackgroundServer(tmp_path / "artifacts", device)
        try:
            with DreamClient(server.server.address) as client:
                warm = DreamConfig(octaves=1, steps=1)
                _in_process(source, warm, tmp_path / "warm.png", device)
                _through_service(client, source, warm, tmp_path / "warm.png")
                local, remote = [], []
                for _ in range(rounds):
                    local.append(_in_process(source, config, tmp_path / "local.png", device))
                    remote.append(_through_service(client, source, config,
                                                   tmp_path / "remote.png"))
        finally:
            server.close()
    local_m, remote_m = statistics.median(local), statistics.median(remote)
    return ServiceFigure(size, octaves, steps, rounds, min(local), min(remote),
                         min(remote) / min(local), local_m, remote_m, remote_m / local_m)


def main(args: argparse.Namespace) -> int:
    print(f"measuring a {args.size}x{args.size} dream, {args.octaves} octaves x {args.steps} "
          f"steps, {args.rounds} interleaved rounds ...", file=sys.stderr)
    figure = measure(args.size, args.octaves, args.steps, args.rounds, args.device)
    if args.json:
        print(json.dumps(asdict(figure)))
        return 0
    ok = "ok" if figure.ratio <= TARGET_RATIO else "MISSED"
    print(f"workload: efficientnet_lite0, {figure.size}x{figure.size}, {figure.octaves} octaves "
          f"x {figure.steps} steps; input file -> final PNG on disk; "
          f"{figure.rounds} interleaved runs each")
    print(f"{'':<8}{'in-process s':>14}{'service s':>12}{'ratio':>8}")
    print(f"{'fastest':<8}{figure.in_process_seconds:>14.3f}{figure.service_seconds:>12.3f}"
          f"{figure.ratio:>8.3f}  target <= {TARGET_RATIO} {ok}")
    print(f"{'median':<8}{figure.in_process_median_seconds:>14.3f}"
          f"{figure.service_median_seconds:>12.3f}{figure.median_ratio:>8.3f}")
    return 0
