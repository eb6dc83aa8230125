"""Fixtures of the guide-service tests: a real TorchServe (built from the project's archive;
a missing Java fails loudly) and guide services on loopback ports, each running on an event
loop in a background thread so that the tests can use blocking clients."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dreamsuite.images import encode_png, sample_image
from dreamsuite.torchserve import TorchServe, require_java
from handlers.archive import build_archive
from services.common import RunningServer, ServerConfig
from services.common.loop_thread import LoopThread
from services.guide.server import GuideConfig, start_guide_server

BACKBONE = "efficientnet_lite0"


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture(scope="session")
def torchserve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    require_java()  # raises with instructions: these tests must not pass without Java
    store = tmp_path_factory.mktemp("model-store")
    build_archive(BACKBONE, store, batch_size=4, max_batch_delay=5, workers=1)
    server = TorchServe(store, [BACKBONE], workdir=tmp_path_factory.mktemp("torchserve"))
    server.start()
    yield server
    server.stop()


def start_guide(loop_thread: LoopThread, activations: str, **kw) -> RunningServer:
    config = ServerConfig(host="127.0.0.1", port=0, metrics_host="127.0.0.1", metrics_port=0,
                          grace_seconds=1.0)
    return loop_thread.run(start_guide_server(config, GuideConfig(activations=activations, **kw)))


@pytest.fixture(scope="session")
def guide_torchserve(loop_thread: LoopThread, torchserve: TorchServe) -> Iterator[RunningServer]:
    """The guide service on TorchServe."""
    running = start_guide(loop_thread, f"torchserve://{torchserve.grpc_target}")
    yield running
    loop_thread.run(running.stop(0))


@pytest.fixture(scope="session")
def guide_inprocess(loop_thread: LoopThread) -> Iterator[RunningServer]:
    """The guide service with the in-process backend."""
    running = start_guide(loop_thread, "inprocess")
    yield running
    loop_thread.run(running.stop(0))


@pytest.fixture
def guide_factory(loop_thread: LoopThread) -> Iterator[Callable[..., RunningServer]]:
    """Starts extra guide services (``activations``, GuideConfig fields); stops them after."""
    started: list[RunningServer] = []

    def start(activations: str, **kw) -> RunningServer:
        started.append(start_guide(loop_thread, activations, **kw))
        return started[-1]

    yield start
    for running in started:
        loop_thread.run(running.stop(0))


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of a Prometheus endpoint."""
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` that carry ``labels``."""
    return sum(v for (n, lab), v in samples.items()
               if n == name and set(labels.items()) <= set(lab))


@pytest.fixture(scope="session")
def prom() -> SimpleNamespace:
    """``prom.scrape(url)`` and ``prom.total(samples, name, **labels)`` (conftest modules are
    not importable under importlib mode)."""
    return SimpleNamespace(scrape=scrape, total=total)


@pytest.fixture(scope="session")
def pngs() -> dict[str, bytes]:
    """Small sample images as PNG bytes (64-128 px)."""
    return {name: encode_png(sample_image(name, size=size))
            for name, size in (("chelsea", 96), ("coffee", 80), ("astronaut", 64),
                               ("rocket", 72))}


@pytest.fixture
def image_dir(tmp_path: Path, pngs: dict[str, bytes]) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for name, data in pngs.items():
        (folder / f"{name}.png").write_bytes(data)
    return folder
