"""A real TorchServe for the handler tests: the archive is built by ``dreamsuite archive``'s
code from the embedded EfficientNet-Lite0 weights and served by a TorchServe process (Java 17)
on free loopback ports. A missing Java fails these tests loudly; it does not skip them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dreamsuite.images import encode_png, sample_image
from dreamsuite.torchserve import TorchServe, require_java
from handlers.archive import build_archive

BACKBONE = "efficientnet_lite0"


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("model-store")
    build_archive(BACKBONE, store, batch_size=4, max_batch_delay=20, workers=1)
    return store


@pytest.fixture(scope="session")
def torchserve(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    require_java()  # raises with instructions: TorchServe tests must not pass without Java
    server = TorchServe(model_store, [BACKBONE], workdir=tmp_path_factory.mktemp("torchserve"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cat_png() -> bytes:
    """scikit-image's cat as PNG, 96 x 144."""
    return encode_png(sample_image("chelsea", size=96))


@pytest.fixture(scope="session")
def coffee_png() -> bytes:
    return encode_png(sample_image("coffee", size=64))
