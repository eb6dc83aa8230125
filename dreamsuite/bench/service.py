"""``dreamsuite bench service``: the same dream in-process and through the dream service.

Both paths start from the encoded input file and end with the final PNG (provenance included)
written to disk, as ``dreamsuite dream`` and ``dreamsuite dream --remote`` do. The service runs
in this process on a loopback port with a local artifact store; its path adds the gRPC stream,
previews, artifact writes and the inline copy of the result. Runs are interleaved so that load
from other processes hits both alike; ``ratio`` is the fastest service run over the fastest
in-process run (the timeit convention: on a shared machine the fastest run is the one least
disturbed by others); medians are reported too.

Each run also splits into dream time (the optimisation itself, in-process or on the service's
device worker) and the rest: ``in_process_rest_seconds`` (decode, PNG encode, write) and
``service_rest_seconds`` (the same plus transport, previews and artifact writes). Their
difference is what the service adds, free of the noise in the dream itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from dreamsuite.clients.dream import DreamClient, request_from_config
from dreamsuite.defaults import DEFAULT_BACKBONE
from dreamsuite.engine import DreamConfig, dream, provenance_text
from dreamsuite.images import encode_png, load_image, sample_image, save_png
from dreamsuite.v1 import dream_pb2
from services.common.config import ServerConfig
from services.common.loop_thread import LoopThread
from services.dream.config import DreamServiceConfig
from services.dream.server import start_dream_server

__all__ = ["main", "TARGET_RATIO"]

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
    in_process_rest_seconds: float
    service_rest_seconds: float
    target: float = TARGET_RATIO


class BackgroundServer:
    """The dream service on its own event loop in a daemon thread (``fields``: more
    :class:`DreamServiceConfig` fields)."""

    def __init__(self, store: Path, device: str | None, **fields):
        self.loop = LoopThread()
        config = DreamServiceConfig(
            server=ServerConfig(host="127.0.0.1", port=0, grace_seconds=0),
            artifacts=store.as_uri(), device=device, **({"queue_size": 1} | fields))
        self.server = self.loop.run(start_dream_server(config), timeout=600)

    def device_seconds(self) -> float:
        """Seconds the device worker has spent on dreams so far."""
        value = self.server.registry.get_sample_value(
            "dream_job_seconds_sum", {"backbone": DEFAULT_BACKBONE, "kind": "dream", "outcome": "ok"})
        return value or 0.0

    def close(self) -> None:
        self.loop.run(self.server.stop(0), timeout=600)
        self.loop.close()


def _in_process(source: bytes, config, out: Path, device: str | None) -> tuple[float, float]:
    """(total, dream) seconds of one local dream from input file to output file."""
    started = time.perf_counter()
    image = load_image(source)
    dream_started = time.perf_counter()
    result = dream(image, config, device=device)
    dreamt = time.perf_counter() - dream_started
    save_png(result.image, out, provenance_text(result.provenance))
    return time.perf_counter() - started, dreamt


def _through_service(server: BackgroundServer, client, source: bytes, config,
                     out: Path) -> tuple[float, float]:
    """(total, dream on the device worker) seconds of one dream through the service."""
    output = dream_pb2.OutputOptions(preview_max_side=128, inline_images=True)
    worker_before = server.device_seconds()
    started = time.perf_counter()
    request = request_from_config(config, source, output=output)
    result = None
    for update in client.dream(request):
        if update.HasField("result"):
            result = update.result
    assert result is not None and result.image
    out.write_bytes(result.image)
    return time.perf_counter() - started, server.device_seconds() - worker_before


def measure(size: int, octaves: int, steps: int, rounds: int,
            device: str | None) -> ServiceFigure:
    source = encode_png(sample_image("astronaut", size=size)[:, :size, :size])
    config = DreamConfig(octaves=octaves, steps=steps, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        server = BackgroundServer(tmp_path / "artifacts", device)
        try:
            with DreamClient(server.server.address) as client:
                warm = DreamConfig(octaves=1, steps=1)
                _in_process(source, warm, tmp_path / "warm.png", device)
                _through_service(server, client, source, warm, tmp_path / "warm.png")
                local, remote = [], []
                for _ in range(rounds):
                    local.append(_in_process(source, config, tmp_path / "local.png", device))
                    remote.append(_through_service(server, client, source, config,
                                                   tmp_path / "remote.png"))
        finally:
            server.close()
    return _figure(size, octaves, steps, rounds, local, remote)


def _figure(size: int, octaves: int, steps: int, rounds: int,
            local: list[tuple[float, float]], remote: list[tuple[float, float]]) -> ServiceFigure:
    local_total, remote_total = [t for t, _ in local], [t for t, _ in remote]
    local_m, remote_m = statistics.median(local_total), statistics.median(remote_total)
    return ServiceFigure(
        size, octaves, steps, rounds, min(local_total), min(remote_total),
        min(remote_total) / min(local_total), local_m, remote_m, remote_m / local_m,
        in_process_rest_seconds=statistics.median(t - d for t, d in local),
        service_rest_seconds=statistics.median(t - d for t, d in remote),
    )


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
    print(f"{'rest':<8}{figure.in_process_rest_seconds:>14.3f}"
          f"{figure.service_rest_seconds:>12.3f}  (all but the dream itself, medians)")
    return 0
