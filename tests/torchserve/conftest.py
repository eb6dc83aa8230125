"""A real TorchServe for the handler tests: the archive is built by ``dreamsuite archive``'s
code from the embedded EfficientNet-Lite0 weights and served by a TorchServe process (Java 17)
on free loopback ports. A missing Java fails these tests loudly; it does not skip them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dreamsuite.artifacts import open_store
from dreamsuite.cli import main
from dreamsuite.gan.data import write_dataset
from dreamsuite.gan.paired import load_dream2dream
from dreamsuite.gan.records import read_model
from dreamsuite.gan.train import TrainConfig, run
from dreamsuite.images import encode_png, sample_image
from dreamsuite.torchserve import TorchServe, require_java
from handlers.archive import build_archive

BACKBONE = "efficientnet_lite0"
#: The tiny dream2dream model of the `trained` fixture, and its data sets' image side.
D2D_MODEL = "d2d-tiny"
D2D_SIZE = 24


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


def _stripes(photo: torch.Tensor, frequency: float) -> torch.Tensor:
    h, w = photo.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (0.7 * photo + 0.3 * (0.5 + 0.5 * torch.sin((xx + frequency * yy) * 0.8))).clamp(0, 1)


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> SimpleNamespace:
    """A two-condition dream2dream model trained for a few steps, and its archive."""
    folder = tmp_path_factory.mktemp("d2d")
    store = open_store((folder / "store").as_uri())
    g = torch.Generator().manual_seed(0)
    for name, frequency in (("stripes-a", 1.0), ("stripes-b", -1.0)):
        photos = [torch.rand(3, D2D_SIZE, D2D_SIZE, generator=g) for _ in range(4)]
        write_dataset(store, name, {
            "train": [(f"p{i}", x, _stripes(x, frequency)) for i, x in enumerate(photos[:3])],
            "holdout": [("h0", photos[3], _stripes(photos[3], frequency))]}, D2D_SIZE)
    run(TrainConfig(job_id=D2D_MODEL, artifacts=store.url, dataset="stripes-a",
                    datasets=("stripes-a", "stripes-b"), model="dream2dream", steps=6, batch=4,
                    width=4, lr=1e-2, crop=16, checkpoint_every=6, eval_every=-1,
                    preview_seeds=0, deterministic=True), store)
    model_store = folder / "model-store"
    assert main(["gan", "export", D2D_MODEL, "-o", str(model_store), "--artifacts", store.url,
                 "--batch-size", "4", "--max-batch-delay", "200"]) == 0
    model, _ = load_dream2dream(store, read_model(store, D2D_MODEL)["checkpoint"], "cpu")
    return SimpleNamespace(store=store, model_store=model_store, model=model, name=D2D_MODEL,
                           names=["stripes-a", "stripes-b"])
