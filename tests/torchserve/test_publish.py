"""PublishModel: the GAN service exports a dream2dream model, stores the archive and registers
it with a real TorchServe (model-control API on, token authorization on) through its
management API; the dream service's fast path then serves it. And the refusals."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import torch

from dreamsuite.cli import main
from dreamsuite.clients.gan import GanClient
from dreamsuite.errors import Unavailable
from dreamsuite.gan.dream2dream import one_pass
from dreamsuite.gan.records import record_key
from dreamsuite.images import encode_png, load_image
from dreamsuite.torchserve import TorchServe, require_java, served_models, unregister_model
from dreamsuite.torchserve_gateway import Gateway
from dreamsuite.v1 import common_pb2, dream_pb2, gan_pb2
from services.common.config import ServerConfig
from services.common.loop_thread import LoopThread
from services.gan.config import GanServiceConfig
from services.gan.launchers import LocalLauncher
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
    gan = gan_services(**_management(torchserve_api))
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
    with GanClient(unconfigured.address) as client:
        error = svc.expect_code(lambda: client.stub.PublishModel(request, timeout=60),
                                grpc.StatusCode.FAILED_PRECONDITION)
        assert "--torchserve-management" in error.details()
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
