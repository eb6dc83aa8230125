"""StyleService on the dream service: real server on loopback, same queue as dreams."""

from __future__ import annotations

import json

import pytest

from dreamsuite.clients.style import StyleClient
from dreamsuite.engine.provenance import PROVENANCE_KEY
from dreamsuite.errors import InvalidArgument
from dreamsuite.images import encode_png, load_image, sample_image
from dreamsuite.v1 import style_pb2

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pngs():
    return (encode_png(sample_image("coffee", size=64)), encode_png(sample_image("chelsea",
                                                                                size=64)))


def test_stylize_streams_progress_and_stores_the_image_with_provenance(dream_server, pngs):
    content, style = pngs
    server = dream_server()
    updates = []
    content = encode_png(sample_image("coffee", size=128))  # two scales: 64 and 128 px
    request = style_pb2.StylizeRequest(
        content={"data": content}, styles=[{"image": {"data": style}, "weight": 1.0}],
        iterations=6, scales=2, inline_images=True)
    with StyleClient(server.address) as client:
        result = client.run(client.stub.Stylize, request, on_progress=updates.append)
    progress = updates
    assert {u.scale for u in progress} == {0, 1} and all(u.scales == 2 for u in progress)
    assert sum(1 for u in progress if u.preview) == 2  # one preview per scale
    (entry,) = result.images
    image = load_image(entry.image)
    assert tuple(image.shape) == (3, 128, 192) == (3, entry.height, entry.width)
    assert (image - sample_image("coffee", size=128)).abs().mean() > 0.01  # it changed
    provenance = json.loads(result.provenance_json)
    assert provenance["method"] == "stylize" and provenance["config"]["iterations"] == 6
    import io

    from PIL import Image

    text = Image.open(io.BytesIO(entry.image)).text
    assert json.loads(text[PROVENANCE_KEY])["method"] == "stylize"
    assert entry.artifact.uri and entry.artifact.sha256
    # It ran on the dream service's worker and is counted as a style transfer, not a dream.
    labels = {"backbone": "efficientnet_lite0", "outcome": "ok"}
    assert server.sample("dream_job_seconds_count", {**labels, "kind": "stylize"}) == 1
    assert server.sample("dream_job_seconds_count", {**labels, "kind": "dream"}) == 0


def test_reconstruct_gives_one_image_per_layer(dream_server, pngs):
    server = dream_server()
    request = style_pb2.ReconstructRequest(image={"data": pngs[0]}, layers=["stem", "block_6"],
                                           iterations=10, inline_images=True)
    with StyleClient(server.address) as client:
        result = client.run(client.stub.Reconstruct, request)
    assert [e.layer for e in result.images] == ["stem", "block_6"]
    original = sample_image("coffee", size=64)
    errors = [float((load_image(e.image) - original).abs().mean()) for e in result.images]
    assert errors[0] < errors[1]
    assert server.sample("dream_job_seconds_count", {"backbone": "efficientnet_lite0",
                                                     "kind": "reconstruct", "outcome": "ok"}) == 1


def test_bad_style_requests_name_the_field(dream_server, pngs):
    server = dream_server()
    content, style = pngs
    cases = {
        "styles": style_pb2.StylizeRequest(content={"data": content}),
        "content": style_pb2.StylizeRequest(styles=[{"image": {"data": style}}]),
        "styles[0].image": style_pb2.StylizeRequest(
            content={"data": content}, styles=[{"image": {"data": b"not an image"}}]),
        "temperature": style_pb2.StylizeRequest(
            content={"data": content}, styles=[{"image": {"data": style}}],
            temperature=float("nan")),
        "block_99": style_pb2.StylizeRequest(
            content={"data": content}, styles=[{"image": {"data": style}}],
            content_layer="block_99", iterations=1),
        "layers": style_pb2.ReconstructRequest(image={"data": content}),
    }
    with StyleClient(server.address) as client:
        for field, request in cases.items():
            method = (client.stub.Reconstruct if isinstance(request, style_pb2.ReconstructRequest)
                      else client.stub.Stylize)
            with pytest.raises(InvalidArgument, match=field.replace("[", r"\[")):
                client.run(method, request)


def test_a_cancelled_style_transfer_frees_the_worker(dream_server, pngs):
    server = dream_server(queue_size=0)
    content, style = pngs
    request = style_pb2.StylizeRequest(content={"data": content},
                                       styles=[{"image": {"data": style}}], iterations=10_000,
                                       optimizer=style_pb2.STYLE_OPTIMIZER_ADAM)
    with StyleClient(server.address) as client:
        call = client.stub.Stylize(request)
        next(call)  # running
        call.cancel()
        quick = style_pb2.StylizeRequest(content={"data": content},
                                         styles=[{"image": {"data": style}}], iterations=2)
        assert client.run(client.stub.Stylize, quick, timeout=120).images
    assert server.sample("dream_job_seconds_count", {"backbone": "efficientnet_lite0",
                                                     "kind": "stylize", "outcome": "cancelled"}) == 1


def test_a_bad_style_request_is_refused_as_such_before_it_takes_a_turn(dream_server, pngs):
    """An unknown backbone or layer was found only on the device worker: with the queue full it
    was RESOURCE_EXHAUSTED (and retried), and each made-up backbone name became a series of
    ``dream_job_seconds``."""
    import time

    server = dream_server(queue_size=0)
    content, style = pngs
    with StyleClient(server.address) as client:
        busy = client.stub.Stylize(style_pb2.StylizeRequest(
            content={"data": content}, styles=[{"image": {"data": style}}], iterations=10_000))
        deadline = time.monotonic() + 60
        while server.sample("dream_in_flight") < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.sample("dream_in_flight") == 1, "the worker is busy, the queue full"
        for backbone in ("bogus-1", "bogus-2"):
            with pytest.raises(InvalidArgument, match=backbone):
                client.run(client.stub.Stylize, style_pb2.StylizeRequest(
                    content={"data": content}, styles=[{"image": {"data": style}}],
                    backbone=backbone, iterations=1))
        with pytest.raises(InvalidArgument, match="block_99"):
            client.run(client.stub.Reconstruct, style_pb2.ReconstructRequest(
                image={"data": content}, layers=["block_99"], iterations=1))
        busy.cancel()
    labels = {sample.labels.get("backbone") for metric in server.registry.collect()
              for sample in metric.samples}
    assert not {"bogus-1", "bogus-2"} & labels
