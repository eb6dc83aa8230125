"""The dream service's fast path: a ``DreamRequest`` naming a one-pass model is answered by
TorchServe (a real one), or refused with the right status."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
import torch

from dreamsuite.cli import main
from dreamsuite.engine.provenance import PROVENANCE_KEY
from dreamsuite.errors import Unavailable
from dreamsuite.gan.dream2dream import one_pass
from dreamsuite.images import encode_png, load_image, read_png_text
from dreamsuite.torchserve import TorchServe, register_model, require_java
from dreamsuite.v1 import common_pb2, dream_pb2


def one_pass_request(png: bytes, model: str, **fields) -> dream_pb2.DreamRequest:
    return dream_pb2.DreamRequest(image=common_pb2.ImageRef(data=png), model=model, **fields)


def test_a_service_without_torchserve_says_unavailable(dream_server, cat_png, svc):
    server = dream_server()
    with server.client() as client:
        error = svc.expect_code(lambda: list(client.dream(one_pass_request(cat_png, "d2d"),
                                                          timeout=30)),
                                grpc.StatusCode.UNAVAILABLE)
    assert "--torchserve" in error.details()
    # A model name that never answered does not become a label of its own.
    assert server.sample("dream_one_pass_seconds_count",
                         {"model": "other", "outcome": "error"}) == 1


def test_the_handlers_refusals_become_library_errors():
    """What a dream2dream handler answers instead of a PNG: its code decides the status."""
    from dreamsuite.errors import InvalidArgument, ResourceExhausted
    from services.dream.one_pass import _refusal

    def answer(code: str) -> bytes:
        return json.dumps({"code": code, "message": "why"}).encode()

    assert isinstance(_refusal("m", answer("INVALID_ARGUMENT")), InvalidArgument)
    exhausted = _refusal("m", answer("RESOURCE_EXHAUSTED"))  # out of memory: retry later
    assert isinstance(exhausted, ResourceExhausted) and exhausted.retry_after > 0
    assert "model 'm': why" in str(exhausted)
    assert isinstance(_refusal("m", answer("INTERNAL")), Unavailable)
    assert "not an image" in str(_refusal("m", b"<html>"))


def test_one_pass_refuses_what_only_the_optimisation_does(dream_server, cat_png, svc):
    server = dream_server()
    guided = one_pass_request(cat_png, "d2d", guidance=dream_pb2.Guidance(
        guides=[common_pb2.ImageRef(data=cat_png)]))
    with server.client() as client:
        for request, field in ((guided, "guidance"),
                               (one_pass_request(cat_png, "../etc/passwd"), "model"),
                               (one_pass_request(b"not an image", "d2d"), "image"),
                               (dream_pb2.DreamRequest(model="d2d"), "image")):
            error = svc.expect_code(lambda r=request: list(client.dream(r, timeout=30)),
                                    grpc.StatusCode.INVALID_ARGUMENT)
            assert error.details().startswith(field), error.details()
        assert server.sample("dream_in_flight") == 0  # nothing reached the device queue


def test_a_model_torchserve_does_not_serve_is_not_found(dream_server, torchserve, cat_png, svc):
    server = dream_server(torchserve=torchserve.grpc_target)
    with server.client() as client:
        error = svc.expect_code(lambda: list(client.dream(one_pass_request(cat_png, "no-such"),
                                                          timeout=60)),
                                grpc.StatusCode.NOT_FOUND)
    assert "serves no model 'no-such'" in error.details()
    assert "dreamsuite gan export" in error.details()


def test_a_published_model_a_replica_does_not_serve_yet_is_unavailable(
        dream_server, torchserve, cat_png, svc, tmp_path):
    """A TorchServe replica that started after PublishModel serves the model only after the GAN
    service's next resync: meanwhile the name is not unknown, and the call is worth a retry."""
    server = dream_server(torchserve=torchserve.grpc_target)
    record = tmp_path / "artifacts" / "published" / "later.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"model": "later-job", "version": "1"}))
    with server.client() as client:
        error = svc.expect_code(lambda: list(client.dream(one_pass_request(cat_png, "later"),
                                                          timeout=60)),
                                grpc.StatusCode.UNAVAILABLE)
        assert "'later' is published" in error.details() and "retry" in error.details()
        # A name the store does not list stays unknown.
        error = svc.expect_code(lambda: list(client.dream(one_pass_request(cat_png, "never"),
                                                          timeout=60)),
                                grpc.StatusCode.NOT_FOUND)
    assert "serves no model 'never'" in error.details()


@pytest.fixture(scope="module")
def registered(trained, tmp_path_factory) -> Iterator[TorchServe]:
    """A real TorchServe with token authorization and the model-control API on, serving
    nothing until the test registers the exported dream2dream archive."""
    require_java()
    server = TorchServe(trained.model_store, [], workdir=tmp_path_factory.mktemp("ts-one-pass"),
                        token_auth=True, model_api=True)
    server.start()
    yield server
    server.stop()


def _requests_for(server: TorchServe, model: str) -> float:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as reply:
        text = reply.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("ts_inference_requests_total") and f'"{model}"' in line)


@pytest.mark.slow
def test_a_registered_model_answers_a_dream_request_in_one_pass(registered, trained,
                                                                 dream_server, svc, tmp_path):
    model = trained.name
    config = (registered.workdir / "config.properties").read_text()
    assert "enable_model_api=true" in config and "disable_token_authorization=false" in config
    # The model-control API refuses a caller without the management key.
    for key in (None, "not-the-key"):
        with pytest.raises(Unavailable, match="management key is missing or wrong"):
            register_model(registered.management_url, f"{model}.mar", key)
    assert registered.register(f"{model}.mar") == model

    photo = torch.rand(3, 20, 28, generator=torch.Generator().manual_seed(3))
    png = encode_png(photo)
    server = dream_server(torchserve=registered.grpc_target,
                          torchserve_token=registered.inference_key())
    before = _requests_for(registered, model)
    with server.client() as client:
        request = one_pass_request(png, model, condition="stripes-b",
                                   output=dream_pb2.OutputOptions(inline_images=True))
        updates = list(client.dream(request, timeout=120))
        # An unknown condition is the handler's INVALID_ARGUMENT, through gRPC's OK answer.
        error = svc.expect_code(
            lambda: list(client.dream(one_pass_request(png, model, condition="nope"),
                                      timeout=120)),
            grpc.StatusCode.INVALID_ARGUMENT)
    assert "stripes-a" in error.details()  # it lists the valid conditions
    assert len(updates) == 1 and updates[0].HasField("result")
    result = updates[0].result
    got = load_image(result.image)
    expected = one_pass(trained.model, photo_from_png(png), condition=1)
    assert got.shape == expected.shape == (3, 20, 28)
    assert (got - expected).abs().max() <= 1 / 255 + 1e-6
    provenance = json.loads(result.provenance_json)
    assert provenance["method"] == "one-pass" and provenance["model"] == model
    assert json.loads(read_png_text(result.image)[PROVENANCE_KEY]) == provenance  # in the PNG
    assert provenance["input"] == result.input_artifact.uri
    assert _requests_for(registered, model) >= before + 2  # TorchServe answered both
    assert server.sample("dream_one_pass_seconds_count",
                         {"model": model, "outcome": "ok"}) == 1
    assert server.sample("dream_in_flight") == 0
    # The CLI's --model --remote takes the same path and writes the same picture.
    source, out = tmp_path / "photo.png", tmp_path / "remote.png"
    source.write_bytes(png)
    assert main(["dream", str(source), "-o", str(out), "--model", model,
                 "--condition", "stripes-b", "--remote", server.address]) == 0
    assert torch.equal(load_image(out), got)


def test_the_cli_runs_a_model_locally_from_its_store(trained, tmp_path, capsys):
    photo = torch.rand(3, 18, 30, generator=torch.Generator().manual_seed(5))
    source, out = tmp_path / "photo.png", tmp_path / "local.png"
    source.write_bytes(encode_png(photo))
    assert main(["dream", str(source), "-o", str(out), "--model", trained.name,
                 "--condition", "1", "--artifacts", trained.store.url]) == 0
    expected = one_pass(trained.model, load_image(source), condition=1)
    assert (load_image(out) - expected).abs().max() <= 1 / 255 + 1e-6
    assert "condition 'stripes-b'" in capsys.readouterr().out
    assert main(["dream", str(source), "-o", str(out), "--model", trained.name,
                 "--condition", "nope", "--artifacts", trained.store.url]) == 2
    assert "unknown condition 'nope'" in capsys.readouterr().err


def photo_from_png(png: bytes) -> torch.Tensor:
    return load_image(png)
