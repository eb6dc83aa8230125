"""The dream2dream handler: a tiny model trained on paired data sets, exported by
``dreamsuite gan export`` and served by a real TorchServe (Java 17), answers PNGs with the
pixels of :func:`dreamsuite.gan.dream2dream.one_pass`; batches of mixed sizes and conditions;
bad requests get a 400 with a JSON reason, and the worker lives on. The handler is also
called directly, with TorchServe's own Context, for the cases that need no server."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import re
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest
import torch
from ts.context import Context, RequestProcessor

from dreamsuite.cli import main
from dreamsuite.gan.checkpoint import put_json
from dreamsuite.gan.dream2dream import one_pass
from dreamsuite.images import encode_png, load_image, sample_image
from dreamsuite.torchserve import TorchServe, require_java

MODEL = "d2d-tiny"  # the `trained` fixture's (conftest.py)
SIZE = 24


def test_export_writes_an_archive_with_the_handler_network_and_conditions(trained):
    with zipfile.ZipFile(trained.model_store / f"{MODEL}.mar") as mar:
        names = set(mar.namelist())
        manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
        described = json.loads(mar.read("dream2dream.json"))
        config = mar.read("model-config.yaml").decode()
    assert {"dream2dream_handler.py", "dream2dream.json", f"{MODEL}.pt"} <= names
    assert manifest["model"]["modelName"] == MODEL
    assert [c["name"] for c in described["conditions"]] == trained.names
    assert described["step"] == 6 and described["model"] == MODEL
    assert "kind: dream2dream" in config and "batchSize: 4" in config


def test_export_refuses_a_gan_and_an_unknown_model(trained, tmp_path, capsys):
    assert main(["gan", "export", "nope", "-o", str(tmp_path), "--artifacts",
                 trained.store.url]) == 2
    assert "no model 'nope'" in capsys.readouterr().err
    put_json(trained.store, "models/a-gan.json", {"model": "a-gan", "kind": "dcgan64"})
    assert main(["gan", "export", "a-gan", "-o", str(tmp_path), "--artifacts",
                 trained.store.url]) == 2
    assert "only dream2dream models are exported" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# --- the handler called directly -----------------------------------------------------------------


def _handler(model_store: Path, tmp_path: Path):
    from handlers.dream2dream_handler import Dream2DreamHandler

    with zipfile.ZipFile(model_store / f"{MODEL}.mar") as mar:
        mar.extractall(tmp_path)
        manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
    context = Context(MODEL, str(tmp_path), manifest, 4, None, "0.12.0",
                      model_yaml_config={"handler": {"max_pixels": 64 * 64}})
    handler = Dream2DreamHandler()
    handler.initialize(context)
    return handler, context


def test_the_handler_takes_its_workers_share_of_the_cpus(trained, tmp_path, monkeypatch):
    from dreamsuite.cpus import available_cpus
    from handlers.dream2dream_handler import Dream2DreamHandler

    with zipfile.ZipFile(trained.model_store / f"{MODEL}.mar") as mar:
        mar.extractall(tmp_path)
        manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        for workers, expected in ((2, max(1, available_cpus() // 2)), (1, available_cpus())):
            torch.set_num_threads(7)
            context = Context(MODEL, str(tmp_path), manifest, 4, None, "0.12.0",
                              model_yaml_config={"maxWorkers": workers, "handler": {}})
            Dream2DreamHandler().initialize(context)
            assert torch.get_num_threads() == expected
        monkeypatch.setenv("OMP_NUM_THREADS", "3")  # an operator's setting wins
        Dream2DreamHandler().initialize(context)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def _call(handler, context, rows: list[dict], headers: list[dict] | None = None) -> list:
    context.request_processor = [RequestProcessor(h) for h in headers or [{} for _ in rows]]
    return handler.handle(rows, context)


def test_the_handler_answers_a_batch_of_sizes_conditions_and_bad_requests(trained, tmp_path):
    handler, context = _handler(trained.model_store, tmp_path)
    cat = sample_image("chelsea", size=20)
    coffee = sample_image("coffee", size=33)
    rows = [
        {"body": bytearray(encode_png(cat)), "condition": b"1"},
        {"body": encode_png(coffee)},
        {"body": {"image": base64.b64encode(encode_png(cat)).decode(), "condition": "stripes-a"}},
        {"body": b"not a png"},
        {"body": encode_png(cat), "condition": "stripes-z"},
        {"data": encode_png(cat)},
        {"body": encode_png(torch.rand(3, 80, 80))},  # over max_pixels (64 x 64)
        # str.isdigit takes these, int() refused them: the whole batch failed (HTTP 503)
        {"body": encode_png(cat), "condition": "²"},
        {"body": encode_png(cat), "condition": "9" * 5000},
    ]
    headers = [{} for _ in rows]
    headers[5] = {"X-Dream-Condition": "stripes-b"}
    out = _call(handler, context, rows, headers)
    expected = {0: (cat, 1), 1: (coffee, 0), 2: (cat, 0), 5: (cat, 1)}
    for i, (image, condition) in expected.items():
        assert context.get_response_status(i)[0] == 200
        assert context.get_response_content_type(i) == "image/png"
        assert context.get_response_headers(i)["X-Dream-Condition"] == str(condition)
        difference = load_image(out[i]) - one_pass(trained.model, image, condition)
        assert difference.abs().max() <= 1 / 255 + 1e-6, i
    for i, match in ((3, "not a readable image"), (4, "unknown condition 'stripes-z'.*"
                                                   "0=stripes-a, 1=stripes-b"), (6, "pixels"),
                     (7, "unknown condition '²'"), (8, "unknown condition '9999")):
        assert context.get_response_status(i)[0] == 400
        error = json.loads(out[i])
        assert error["code"] == "INVALID_ARGUMENT"
        assert re.search(match, error["message"]), error["message"]


def test_out_of_memory_retries_photo_by_photo_then_refuses_with_507(trained, tmp_path,
                                                                     monkeypatch):
    """A batch that runs out of memory is dreamed one photo at a time; a photo that does not
    fit even alone is RESOURCE_EXHAUSTED (507), and the others of the batch get their dreams."""
    import handlers.dream2dream_handler as module

    handler, context = _handler(trained.model_store, tmp_path)
    real = module.one_pass_batch
    calls = []

    def tight_memory(model, images, conditions):
        calls.append(len(images))
        if len(images) > 1 or images.shape[-1] > 40:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, images, conditions)

    monkeypatch.setattr(module, "one_pass_batch", tight_memory)
    cat, big = sample_image("chelsea", size=20), sample_image("coffee", size=48)
    out = _call(handler, context, [{"body": encode_png(cat)}, {"body": encode_png(big)},
                                   {"body": encode_png(cat), "condition": b"1"}])
    assert sorted(calls) == [1, 1, 1, 2]
    for i, condition in ((0, 0), (2, 1)):
        assert context.get_response_status(i)[0] == 200
        difference = load_image(out[i]) - one_pass(trained.model, cat, condition)
        assert difference.abs().max() <= 1 / 255 + 1e-6, i
    assert context.get_response_status(1)[0] == 507
    error = json.loads(out[1])
    assert error["code"] == "RESOURCE_EXHAUSTED" and "out of memory" in error["message"]


# --- a real TorchServe -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory) -> Iterator[TorchServe]:
    require_java()  # raises with instructions: TorchServe tests must not pass without Java
    server = TorchServe(trained.model_store, [MODEL], workdir=tmp_path_factory.mktemp("ts-d2d"))
    server.start()
    yield server
    server.stop()


def _predict(server: TorchServe, body: bytes, condition: str | None = None, *,
             content_type: str = "image/png") -> tuple[int, Message, bytes]:
    """POST /predictions/MODEL: (status, headers, body)."""
    url = f"http://{server.host}:{server.ports.inference}/predictions/{MODEL}"
    headers = {"Content-Type": content_type}
    if condition is not None:
        headers["X-Dream-Condition"] = condition
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, reply.headers, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.mark.slow
def test_torchserve_answers_the_pixels_of_one_pass(served, trained):
    cat = sample_image("chelsea", size=30)  # 30 x 45: not a multiple of 4
    as_json = json.dumps({"image": base64.b64encode(encode_png(cat)).decode(),
                          "condition": "stripes-b"}).encode()
    for body, condition, content_type, expected_condition in (
            (encode_png(cat), None, "image/png", 0), (encode_png(cat), "1", "image/png", 1),
            (encode_png(cat), "stripes-a", "application/octet-stream", 0),
            (as_json, None, "application/json", 1)):
        status, headers, body = _predict(served, body, condition, content_type=content_type)
        assert status == 200, body[:300]
        assert headers["Content-Type"] == "image/png"
        assert headers["X-Dream-Condition"] == str(expected_condition)
        dream = load_image(body)
        expected = one_pass(trained.model, cat, expected_condition)
        assert dream.shape == cat.shape
        assert (dream - expected).abs().max() <= 1 / 255 + 1e-6
        assert (expected - cat).abs().mean() > 1e-3  # the model changes the photo


@pytest.mark.slow
def test_torchserve_batches_mixed_sizes_and_conditions(served, trained):
    images = [sample_image(name, size=side) for name, side in
              (("chelsea", 24), ("coffee", 24), ("astronaut", 20), ("rocket", 28))] * 2
    conditions = [0, 1, 1, 0, 1, 0, 0, 1]
    with concurrent.futures.ThreadPoolExecutor(len(images)) as pool:
        replies = list(pool.map(
            lambda args: _predict(served, encode_png(args[0]), str(args[1])),
            zip(images, conditions, strict=True)))
    for image, condition, (status, _, body) in zip(images, conditions, replies, strict=True):
        assert status == 200, body[:300]
        assert (load_image(body) - one_pass(trained.model, image, condition)).abs().max() \
            <= 1 / 255 + 1e-6
    assert max(int(headers["X-Batch-Size"]) for _, headers, _ in replies) > 1, \
        "TorchServe never batched the requests"


@pytest.mark.slow
def test_torchserve_refuses_bad_requests_with_400_and_lives_on(served):
    status, headers, body = _predict(served, b"this is not a png")
    assert status == 400 and json.loads(body)["code"] == "INVALID_ARGUMENT"
    assert "not a readable image" in json.loads(body)["message"]
    status, _, body = _predict(served, encode_png(torch.rand(3, 16, 16)), "7")
    assert status == 400 and "0=stripes-a, 1=stripes-b" in json.loads(body)["message"]
    status, _, body = _predict(served, encode_png(torch.rand(3, 16, 16)))
    assert status == 200 and load_image(body).shape == (3, 16, 16)


@pytest.mark.slow
def test_grpc_predictions_carry_data_and_condition_and_errors_in_the_body(served, trained):
    """What the dream service's fast path sees: gRPC keeps no per-request status, so an error
    is a JSON body where a PNG would be."""
    import grpc

    from dreamsuite.activations.tsproto import torchserve_inference_pb2 as tspb

    with grpc.insecure_channel(served.grpc_target) as channel:
        predict = channel.unary_unary(
            "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions",
            request_serializer=tspb.PredictionsRequest.SerializeToString,
            response_deserializer=tspb.PredictionResponse.FromString)
        png = encode_png(torch.rand(3, 18, 22, generator=torch.Generator().manual_seed(7)))
        good = predict(tspb.PredictionsRequest(model_name=MODEL, input={
            "data": png, "condition": b"stripes-b"}), timeout=60)
        bad = predict(tspb.PredictionsRequest(model_name=MODEL, input={
            "data": png, "condition": b"9"}), timeout=60)
    assert good.prediction.startswith(b"\x89PNG")
    # Against the photo TorchServe saw (8-bit): only the answer's own rounding differs.
    expected = one_pass(trained.model, load_image(png), 1)
    assert (load_image(good.prediction) - expected).abs().max() <= 1 / 255 + 1e-6
    assert json.loads(bad.prediction)["code"] == "INVALID_ARGUMENT"
