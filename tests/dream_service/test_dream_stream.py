"""A dream through the real server: one update per octave, stored results, same image as
in-process, the CLI client, ListBackbones."""

from __future__ import annotations

import io
import json
import urllib.request

import pytest
import torch
from PIL import Image

from dreamsuite.artifacts import open_store
from dreamsuite.cli import main as cli_main
from dreamsuite.engine import PROVENANCE_KEY, DreamConfig, dream
from dreamsuite.engine.objectives import LayerTerm, Maplist
from dreamsuite.images import encode_png, load_image, read_png_text, sample_image
from dreamsuite.v1 import common_pb2, dream_pb2

pytestmark = pytest.mark.slow


def test_stream_has_one_update_per_octave_and_stores_the_result_in_s3(
        dream_server, s3, cat_png, svc):
    url = svc.s3_url(s3.endpoint, "dreams")
    server = dream_server(artifacts=url)
    request = svc.small_request(cat_png, octaves=3, steps=2, store_octaves=True,
                                preview_max_side=32, preview_max_bytes=4000)
    with server.client() as client:
        updates = list(client.dream(request, timeout=120))

    assert [u.octave for u in updates] == [0, 1, 2]
    assert {u.octaves for u in updates} == {3}
    assert [u.width for u in updates] == sorted(u.width for u in updates)
    assert (updates[-1].width, updates[-1].height) == (96, 64)
    assert [u.HasField("result") for u in updates] == [False, False, True]
    for update in updates:
        assert 0 < len(update.preview) <= 4000 and update.preview_content_type == "image/jpeg"
        assert max(Image.open(io.BytesIO(update.preview)).size) <= 32
        assert update.octave_artifact.uri.startswith("s3://dreams/sha256/")

    result = updates[-1].result
    assert result.artifact.uri.startswith("s3://dreams/sha256/")
    assert result.artifact.uri.endswith(f"{result.artifact.sha256}.png")
    store = open_store(url)
    stored = store.stat(result.artifact.uri)
    assert stored.metadata["backbone"] == "efficientnet_lite0"
    assert stored.metadata["seed"] == "7" and stored.metadata["steps"] == "2"
    assert stored.metadata["layers"] == "block_6"
    assert stored.metadata["input"] == result.input_artifact.uri
    with urllib.request.urlopen(result.artifact.presigned_url, timeout=30) as response:
        fetched = response.read()
    assert fetched == store.get(result.artifact.uri)
    provenance = json.loads(read_png_text(fetched)[PROVENANCE_KEY])
    assert provenance == json.loads(result.provenance_json)
    assert provenance["config"]["octaves"] == 3
    assert store.get(result.input_artifact.uri) == cat_png


def test_service_dream_equals_the_in_process_dream(dream_server, cat_png, svc):
    guide = encode_png(sample_image("coffee", size=64))
    request = svc.small_request(cat_png, inline_images=True)
    request.guidance.guides.add(data=guide)
    server = dream_server()
    with server.client() as client:
        result = list(client.dream(request, timeout=120))[-1].result

    config = DreamConfig(maplist=Maplist((LayerTerm("block_6"),)), octaves=2, steps=2,
                         octave_scale=1.3, jitter=4, seed=7)
    local = dream(load_image(cat_png), config, guides=[load_image(guide)], device="cpu")
    remote = load_image(result.image)
    assert torch.equal(remote, load_image(encode_png(local.image)))
    assert json.loads(result.provenance_json)["guided"] is True


def test_precomputed_guide_weights_and_neuron_selection(dream_server, cat_png, svc):
    server = dream_server()
    weights = [0.0] * 80
    weights[3] = 1.0
    guided = svc.small_request(cat_png)
    guided.guidance.guide_weights.add(layer="block_6", weights=weights)
    selected = svc.small_request(cat_png)
    selected.selection.CopyFrom(dream_pb2.NeuronSelection(layers=["block_6"], top_k=2,
                                                          bottom_k=1))
    with server.client() as client:
        guided_result = list(client.dream(guided, timeout=120))[-1].result
        selected_result = list(client.dream(selected, timeout=120))[-1].result

    terms = json.loads(guided_result.provenance_json)["config"]["maplist"]["layers"]
    assert terms[0]["layer"] == "block_6" and terms[0]["channels"]["3"] == 1.0
    chosen = json.loads(selected_result.provenance_json)["config"]["maplist"]["layers"][0]
    assert sorted(chosen["channels"].values()) == [-1.0, 1.0, 1.0]


def test_cli_remote_dream_saves_images_and_reruns_from_png(dream_server, cat_png, tmp_path):
    server = dream_server()
    source, guide = tmp_path / "cat.png", tmp_path / "coffee.png"
    source.write_bytes(cat_png)
    guide.write_bytes(encode_png(sample_image("coffee", size=64)))
    out, octaves = tmp_path / "out" / "dream.png", tmp_path / "octaves"
    code = cli_main(["dream", str(source), "-o", str(out), "--remote", server.address,
                     "--octaves", "2", "--steps", "2", "--layer", "block_6", "--guide",
                     str(guide), "--guide-mode", "match", "--save-octaves", str(octaves),
                     "--quiet"])
    assert code == 0
    assert load_image(out).shape == (3, 64, 96)
    provenance = json.loads(read_png_text(out)[PROVENANCE_KEY])
    assert provenance["input"].startswith("file://") and len(provenance["guides"]) == 1
    assert sorted(p.name for p in octaves.iterdir()) == ["octave_01.png", "octave_02.png"]

    again = tmp_path / "again.png"
    code = cli_main(["dream", "--from-png", str(out), "-o", str(again), "--remote",
                     server.address, "--quiet"])
    assert code == 0
    assert torch.equal(load_image(again), load_image(out))


def test_list_backbones_shows_layers_channels_and_weights(dream_server):
    server = dream_server()
    with server.client() as client:
        backbones = {b.name: b for b in client.list_backbones().backbones}
    lite0 = backbones["efficientnet_lite0"]
    assert lite0.weights_status == "embedded"
    assert lite0.default_layer == "block_10" and lite0.min_size == 32
    assert {layer.name: layer.channels for layer in lite0.layers}["block_6"] == 80
    assert isinstance(lite0, common_pb2.BackboneInfo)
    assert all(not layer.aliases for layer in lite0.layers)
    # Inception V3's layers carry their Keras names.
    aliases = {layer.name: list(layer.aliases) for layer in backbones["inception_v3"].layers}
    assert aliases["mixed_6a"] == ["mixed3"] and aliases["mixed_7c"] == ["mixed10"]
    assert aliases["conv2d_1a"] == []


def test_cli_remote_dream_reports_server_errors(dream_server, cat_png, tmp_path, capsys):
    server = dream_server()
    source = tmp_path / "cat.png"
    source.write_bytes(cat_png)
    code = cli_main(["dream", str(source), "-o", str(tmp_path / "x.png"), "--remote",
                     server.address, "--layer", "block_99", "--quiet"])
    assert code == 2
    assert "INVALID_ARGUMENT: maplist.layers[0]" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
