"""PublishModel: the GAN service exports a dream2dream model, stores the archive and registers
it with a real TorchServe (model-control API on, token authorization on) through its
management API; the dream service's fast path then serves it. Publishing a name again swaps in
a new TorchServe model version without a moment where the name is unknown, and a new version
that fails to load leaves the old one serving. And the refusals."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
import torch

import services.gan.publish as publish_module
from dreamsuite.cli import main
from dreamsuite.clients.gan import GanClient
from dreamsuite.errors import DreamsuiteError, Unavailable
from dreamsuite.gan.dream2dream import one_pass
from dreamsuite.gan.paired import load_dream2dream
from dreamsuite.gan.records import read_model, record_key
from dreamsuite.gan.train import TrainConfig, run
from dreamsuite.images import encode_png, load_image
from dreamsuite.torchserve import (
    TorchServe,
    model_versions,
    register_model,
    require_java,
    served_models,
    set_default_version,
    unregister_model,
)
from dreamsuite.torchserve_gateway import Gateway
from dreamsuite.v1 import common_pb2, dream_pb2, gan_pb2
from services.common.config import ServerConfig
from services.common.loop_thread import LoopThread
from services.gan.config import GanServiceConfig
from services.gan.launchers import LocalLauncher
from services.gan.publish import Publisher, PublishRequest
from services.gan.server import GanServer, start_gan_server

PUBLISHED = "d2d-published"


@pytest.fixture(scope="module")
def torchserve_api(tmp_path_factory) -> Iterator[TorchServe]:
    """A TorchServe with the model-control API and token authorization on, an empty model
    store (the GAN service writes archives there) and no model."""
    require_java()
    server = TorchServe(tmp_path_factory.mktemp("published-store"), [],
                        workdir=tmp_path_factory.mktemp("ts-publish"), token_auth=True,
                        model_api=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gan_services(trained, tmp_path_factory) -> Iterator:
    """``start(**config_fields)``: a GAN service on the trained model's store."""
    loop = LoopThread()
    started: list[GanServer] = []

    def start(**fields) -> GanServer:
        work = tmp_path_factory.mktemp("gan-work")
        config = GanServiceConfig(
            server=ServerConfig(host="127.0.0.1", port=0, metrics_port=None, grace_seconds=0),
            artifacts=trained.store.url, device="cpu", train_device="cpu", **fields)
        server = loop.run(start_gan_server(config, launcher=LocalLauncher(work), work_dir=work),
                          timeout=120)
        started.append(server)
        return server

    yield start
    for server in started:
        loop.run(server.stop(grace=0), timeout=60)
    loop.close()


@pytest.fixture(scope="module")
def retrained(trained) -> SimpleNamespace:
    """A second dream2dream model in the trained model's store (another seed, fewer steps:
    other outputs), for republishing a name with another model."""
    name = "d2d-tiny-b"
    run(TrainConfig(job_id=name, artifacts=trained.store.url, dataset="stripes-a",
                    datasets=("stripes-a", "stripes-b"), model="dream2dream", steps=2, batch=4,
                    width=4, lr=1e-2, crop=16, checkpoint_every=2, eval_every=-1,
                    preview_seeds=0, deterministic=True, seed=1), trained.store)
    model, _ = load_dream2dream(trained.store, read_model(trained.store, name)["checkpoint"],
                                "cpu")
    return SimpleNamespace(name=name, model=model)


def _management(ts: TorchServe, **fields) -> dict:
    return {"torchserve_management": ts.management_url,
            "torchserve_management_key_file": ts.workdir / "key_file.json",
            "torchserve_model_store": Path(ts.model_store), **fields}


@pytest.mark.slow
def test_a_published_model_is_served_by_the_fast_path(torchserve_api, gan_services, trained,
                                                      dream_server, capsys):
    gan = gan_services(**_management(torchserve_api))
    with GanClient(gan.address, timeout=300) as client:
        published = client.publish(gan_pb2.PublishModelRequest(model=trained.name,
                                                               name=PUBLISHED, batch_size=2))
    assert published.name == PUBLISHED
    assert list(published.registered) == [torchserve_api.management_url]
    assert list(published.conditions) == trained.names
    assert published.archive.uri.endswith(f"published/{PUBLISHED}.mar")
    stored = trained.store.get(published.archive.uri)
    assert published.archive.size_bytes == len(stored) > 0
    assert (Path(torchserve_api.model_store) / f"{PUBLISHED}.mar").read_bytes() == stored
    record = json.loads(trained.store.get(f"published/{PUBLISHED}.json"))
    assert record["model"] == trained.name and record["batch_size"] == 2

    photo = torch.rand(3, 20, 28, generator=torch.Generator().manual_seed(11))
    dreams = dream_server(torchserve=torchserve_api.grpc_target,
                          torchserve_token=torchserve_api.inference_key())

    def dream_once() -> torch.Tensor:
        request = dream_pb2.DreamRequest(
            image=common_pb2.ImageRef(data=encode_png(photo)), model=PUBLISHED,
            condition="stripes-b", output=dream_pb2.OutputOptions(inline_images=True))
        with dreams.client() as client:
            (update,) = list(client.dream(request, timeout=120))
        return load_image(update.result.image)

    expected = one_pass(trained.model, load_image(encode_png(photo)), condition=1)
    got = dream_once()
    assert got.shape == expected.shape == (3, 20, 28)
    assert (got - expected).abs().max() <= 1 / 255 + 1e-6

    # Publishing the name again (through the CLI) replaces the served model.
    assert main(["gan", "publish", trained.name, "--name", PUBLISHED, "--batch-size", "3",
                 "--remote", gan.address]) == 0
    out = capsys.readouterr().out
    assert f"TorchServe model {PUBLISHED!r}" in out and torchserve_api.management_url in out
    assert "0=stripes-a, 1=stripes-b" in out
    assert json.loads(trained.store.get(f"published/{PUBLISHED}.json"))["batch_size"] == 3
    assert torch.equal(dream_once(), got)

    # A TorchServe that lost the model (a restarted replica) gets it back: the GAN service
    # registers the published models wherever they are missing, at start and periodically.
    key = torchserve_api.keys()["management"]
    assert unregister_model(torchserve_api.management_url, PUBLISHED, key)
    assert PUBLISHED not in served_models(torchserve_api.management_url, key)
    again = gan_services(**_management(torchserve_api))
    deadline = time.monotonic() + 120
    while PUBLISHED not in served_models(torchserve_api.management_url, key):
        assert time.monotonic() < deadline, "the GAN service did not register it again"
        time.sleep(0.5)
    assert again.publisher.resync_now() == {torchserve_api.management_url: []}
    assert torch.equal(dream_once(), got)


@pytest.mark.slow
def test_publish_refusals_get_the_right_codes(torchserve_api, gan_services, trained, svc):
    trained.store.put_at(record_key("a-gan"), json.dumps({
        "model": "a-gan", "kind": "dcgan64", "checkpoint": "nowhere"}).encode(),
        content_type="application/json")
    gan = gan_services(**_management(torchserve_api, torchserve_drain=5.0))
    assert gan.publisher.drain_seconds == 5.0  # --torchserve-drain reaches the publisher
    cases = [
        (gan_pb2.PublishModelRequest(model="no-such-model"), grpc.StatusCode.NOT_FOUND,
         "no model 'no-such-model'"),
        (gan_pb2.PublishModelRequest(model="a-gan"), grpc.StatusCode.INVALID_ARGUMENT,
         "'dcgan64' model"),
        (gan_pb2.PublishModelRequest(model=trained.name, name="../x"),
         grpc.StatusCode.INVALID_ARGUMENT, "name "),
        (gan_pb2.PublishModelRequest(model=trained.name, batch_size=-1),
         grpc.StatusCode.INVALID_ARGUMENT, "batch_size "),
    ]
    with GanClient(gan.address) as client:
        for request, code, text in cases:
            error = svc.expect_code(lambda r=request: client.stub.PublishModel(r, timeout=60),
                                    code)
            assert text in error.details(), error.details()

    wrong_key = gan_services(**_management(torchserve_api, torchserve_management_key_file=None,
                                           torchserve_management_key="not-the-key"))
    unconfigured = gan_services()
    request = gan_pb2.PublishModelRequest(model=trained.name, name="never-served")
    with GanClient(wrong_key.address) as client:
        error = svc.expect_code(lambda: client.stub.PublishModel(request, timeout=120),
                                grpc.StatusCode.UNAVAILABLE)
        assert "management key is missing or wrong" in error.details()
        with pytest.raises(Unavailable, match="management key"):  # the table, backwards
            client.publish(request)
    # Counted once per call (clients never replay PublishModel), none as served.
    counted = wrong_key.registry.get_sample_value
    assert counted("gan_publications_total", {"outcome": "error"}) == 2
    assert not counted("gan_publications_total", {"outcome": "ok"})
    with GanClient(unconfigured.address) as client:
        error = svc.expect_code(lambda: client.stub.PublishModel(request, timeout=60),
                                grpc.StatusCode.FAILED_PRECONDITION)
        assert "--torchserve-management" in error.details()
    assert unconfigured.registry.get_sample_value("gan_publications_total",
                                                  {"outcome": "refused"}) == 1
    assert "never-served" not in served_models(torchserve_api.management_url,
                                               torchserve_api.keys()["management"])


@pytest.fixture
def gateway(torchserve_api) -> Iterator[Gateway]:
    """The management gateway of compose and Kubernetes in front of the test's TorchServe,
    taking archives into its model store and demanding the suite's key."""
    server = Gateway(("127.0.0.1", 0), upstream=torchserve_api.management_url,
                     key=lambda: "the-suite-key", model_store=Path(torchserve_api.model_store),
                     upstream_key=lambda: torchserve_api.keys()["management"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_publishing_through_the_gateway_uploads_the_archive(torchserve_api, gateway, gan_services,
                                                          trained, svc):
    gan = gan_services(torchserve_management=gateway.url,
                       torchserve_management_key="the-suite-key")
    with GanClient(gan.address, timeout=300) as client:
        published = client.publish(gan_pb2.PublishModelRequest(model=trained.name,
                                                               name="d2d-gateway"))
    assert list(published.registered) == [gateway.url]
    assert (Path(torchserve_api.model_store) / "d2d-gateway.mar").read_bytes() == (
        trained.store.get(published.archive.uri))
    assert "d2d-gateway" in served_models(gateway.url, "the-suite-key")
    # Publishing it again swaps the version through the gateway too (set-default, unregister).
    first = json.loads(trained.store.get("published/d2d-gateway.json"))["version"]
    with GanClient(gan.address, timeout=300) as client:
        client.publish(gan_pb2.PublishModelRequest(model=trained.name, name="d2d-gateway"))
    second = json.loads(trained.store.get("published/d2d-gateway.json"))["version"]
    assert second != first
    assert model_versions(gateway.url, "d2d-gateway", "the-suite-key") == [second]
    # The gateway refuses TorchServe's own key and no key alike.
    for key in (torchserve_api.keys()["management"], None):
        with pytest.raises(Unavailable, match="management key is missing or wrong"):
            served_models(gateway.url, key)
    intruder = gan_services(torchserve_management=gateway.url, torchserve_management_key="guess")
    with GanClient(intruder.address) as client:
        svc.expect_code(lambda: client.stub.PublishModel(
            gan_pb2.PublishModelRequest(model=trained.name, name="d2d-intruder"), timeout=60),
            grpc.StatusCode.UNAVAILABLE)
    assert not (Path(torchserve_api.model_store) / "d2d-intruder.mar").exists()


def _fast_path(dreams, photo: torch.Tensor, name: str) -> torch.Tensor:
    """One one-pass dream of ``photo`` with the model ``name``, condition 1, through the dream
    service (TorchServe's gRPC Predictions for ``name``: its default version)."""
    request = dream_pb2.DreamRequest(
        image=common_pb2.ImageRef(data=encode_png(photo)), model=name, condition="stripes-b",
        output=dream_pb2.OutputOptions(inline_images=True))
    with dreams.client() as client:
        (update,) = list(client.dream(request, timeout=120))
    return load_image(update.result.image)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool((a - b).abs().max() <= 1 / 255 + 1e-6)


@pytest.mark.slow
def test_republishing_swaps_the_model_without_a_gap(torchserve_api, gan_services, trained,
                                                    retrained, dream_server):
    name, url = "d2d-swap", torchserve_api.management_url
    key = torchserve_api.keys()["management"]
    photo = torch.rand(3, 20, 28, generator=torch.Generator().manual_seed(5))
    sent = load_image(encode_png(photo))
    old, new = (one_pass(m, sent, condition=1) for m in (trained.model, retrained.model))
    assert (old - new).abs().max() > 4 / 255  # the swap is visible in the outputs

    gan = gan_services(**_management(torchserve_api))
    dreams = dream_server(torchserve=torchserve_api.grpc_target,
                          torchserve_token=torchserve_api.inference_key())
    with GanClient(gan.address, timeout=300) as client:
        answer = client.publish(gan_pb2.PublishModelRequest(model=trained.name, name=name))
        first = json.loads(trained.store.get(f"published/{name}.json"))["version"]
        first_archive = trained.store.get(f"published/{name}.mar")
        assert model_versions(url, name, key) == [first] == [answer.version]

        # A client calls the fast path in a loop while the name is published again.
        seen: list[tuple[float, torch.Tensor | Exception]] = []
        stop = threading.Event()

        def keep_dreaming() -> None:
            while not stop.is_set():
                try:
                    seen.append((time.monotonic(), _fast_path(dreams, photo, name)))
                except (grpc.RpcError, DreamsuiteError) as exc:
                    seen.append((time.monotonic(), exc))

        def wait_for(count: int) -> None:
            deadline = time.monotonic() + 120
            while len(seen) < count:
                assert time.monotonic() < deadline, f"{len(seen)} answers only"
                time.sleep(0.05)

        loop = threading.Thread(target=keep_dreaming, daemon=True)
        loop.start()
        try:
            wait_for(3)
            began = time.monotonic()
            answer = client.publish(gan_pb2.PublishModelRequest(model=retrained.name, name=name))
            ended = time.monotonic()
            wait_for(len(seen) + 3)
        finally:
            stop.set()
            loop.join(120)

    errors = [answer for _, answer in seen if isinstance(answer, Exception)]
    assert not errors, errors[:3]  # never NOT_FOUND, nor any other failure
    which = ["old" if _close(got, old) else "new" if _close(got, new) else "?"
             for _, got in seen]
    assert "?" not in which
    # Old answers, then new ones (the switch happens once), and the loop ran during the swap.
    assert which == ["old"] * which.count("old") + ["new"] * which.count("new")
    assert which[0] == "old" and which[-1] == "new"
    assert sum(began < at < ended for at, _ in seen) >= 3
    second = json.loads(trained.store.get(f"published/{name}.json"))
    assert second["model"] == retrained.name and second["version"] != first
    assert second["version"] == answer.version
    assert model_versions(url, name, key) == [second["version"]]  # the old version is gone
    assert gan.registry.get_sample_value("gan_publications_total", {"outcome": "ok"}) == 2
    assert gan.registry.get_sample_value("gan_publish_seconds_count") == 2

    # A replica that serves another version by default (it restarted with an old archive) is
    # brought back to the published one by the resync.
    stray = Path(torchserve_api.model_store) / "d2d-swap-old.mar"
    stray.write_bytes(first_archive)
    try:
        assert register_model(url, stray.name, key) == name
        set_default_version(url, name, first, key)
        assert _close(_fast_path(dreams, photo, name), old)
        assert gan.publisher.resync_now() == {url: [name]}
        assert gan.registry.get_sample_value("gan_resync_registrations_total") == 1
    finally:
        stray.unlink()
    assert model_versions(url, name, key) == [second["version"]]
    assert _close(_fast_path(dreams, photo, name), new)
    assert gan.publisher.resync_now() == {url: []}


def _unloadable(build):
    """``build`` (the archive builder), but the archive's weights are no state dict: an archive
    TorchServe registers and its worker then fails to load."""
    def build_broken(*args, **kwargs) -> Path:
        path = build(*args, **kwargs)
        with zipfile.ZipFile(path) as archive:
            entries = [(entry, archive.read(entry)) for entry in archive.infolist()]
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as archive:
            for entry, content in entries:
                archive.writestr(entry, b"no state dict" if entry.filename.endswith(".pt")
                                 else content)
        path.write_bytes(out.getvalue())
        return path
    return build_broken


@pytest.mark.slow
def test_a_failed_republication_leaves_the_old_model_serving(torchserve_api, trained,
                                                             dream_server, monkeypatch):
    name, url = "d2d-keep", torchserve_api.management_url
    key = torchserve_api.keys()["management"]
    model_store = Path(torchserve_api.model_store)
    publisher = Publisher(trained.store, management=url,
                          key_file=torchserve_api.workdir / "key_file.json",
                          model_store=model_store, drain=0.5)
    publisher.publish_now(PublishRequest.checked(trained.name, name))
    record = trained.store.get(f"published/{name}.json")
    archive = trained.store.get(f"published/{name}.mar")
    version = json.loads(record)["version"]

    monkeypatch.setattr(publish_module, "build_dream2dream_archive",
                        _unloadable(publish_module.build_dream2dream_archive))
    with pytest.raises(Unavailable) as failed:
        publisher.publish_now(PublishRequest.checked(trained.name, name))
    message = str(failed.value)
    assert f"could not register '{name}.mar'" in message, message
    assert f"version {version} of '{name}' keeps serving there" in message, message

    # TorchServe serves the old version alone; the store and the model store keep its archive.
    assert model_versions(url, name, key) == [version]
    assert trained.store.get(f"published/{name}.json") == record
    assert trained.store.get(f"published/{name}.mar") == archive
    assert (model_store / f"{name}.mar").read_bytes() == archive
    assert publisher.resync_now() == {url: []}
    photo = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(8))
    dreams = dream_server(torchserve=torchserve_api.grpc_target,
                          torchserve_token=torchserve_api.inference_key())
    assert _close(_fast_path(dreams, photo, name),
                  one_pass(trained.model, load_image(encode_png(photo)), condition=1))
