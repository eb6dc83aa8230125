"""dreamsuite.cli: the engine commands, in-process through ``main([...])`` (and once through the
installed entry point)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dreamsuite.backbones import (
    get_backbone_spec,
    list_backbones,
)
from dreamsuite.cli import main
from dreamsuite.engine import PROVENANCE_KEY
from dreamsuite.engine.guide import guide_weights, select_neurons
from dreamsuite.engine.objectives import Maplist
from dreamsuite.images import load_image, read_png_text, save_png

#: Flags that keep a CLI dream small and quick (and on the CPU, where seeds reproduce exactly).
QUICK = ["--octaves", "2", "--steps", "3", "--jitter", "4", "--device", "cpu", "--quiet"]
#: Flags for re-running a stored dream.
RERUN = ["--device", "cpu", "--quiet"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """``dreamsuite ARGV...`` in this process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def pictures(tmp_path_factory, chelsea, coffee, astronaut) -> dict[str, Path]:
    """The sample images as PNG files, plus a folder holding two of them."""
    folder = tmp_path_factory.mktemp("pictures")
    paths = {name: save_png(image, folder / f"{name}.png")
             for name, image in (("chelsea", chelsea), ("coffee", coffee),
                                 ("astronaut", astronaut))}
    batch = folder / "batch"
    batch.mkdir()
    for name in ("chelsea", "astronaut"):
        shutil.copy(paths[name], batch / f"{name}.png")
    (batch / "notes.txt").write_text("not an image: skipped")
    paths["batch"] = batch
    return paths


# --- backbones ----------------------------------------------------------------------------------


def test_backbones_json_has_the_documented_shape(capsys, isolated_weights):
    spec = get_backbone_spec("vgg16")
    (isolated_weights / spec.weights_file).write_bytes(b"")  # found on disk: status only
    code, out, _ = run(capsys, "backbones", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [row["name"] for row in rows] == list_backbones()
    for row in rows:
        assert {"name", "layers", "min_size", "weights"} <= set(row)
        spec = get_backbone_spec(row["name"])
        assert row["layers"] == [{"name": i.name, "channels": i.channels,
                                  "aliases": list(i.aliases)} for i in spec.layers]
        assert all(set(layer) == {"name", "channels", "aliases"} for layer in row["layers"])
        assert isinstance(row["min_size"], int) and row["min_size"] == spec.min_size
    status = {row["name"]: row["weights"] for row in rows}
    assert status["efficientnet_lite0"] == "embedded"
    assert status["vgg16"] == "file"
    assert {status[n] for n in ("inception_v3", "mobilenet_v2", "googlenet")} == {"missing"}


def test_backbones_text_lists_every_backbone_and_layer(capsys):
    code, out, _ = run(capsys, "backbones")
    assert code == 0
    for name in list_backbones():
        assert name in out
    assert "block_10(112)" in out
    assert "mixed_6a(768, mixed3)" in out  # aliases follow the channel count


# --- dream and provenance -----------------------------------------------------------------------


def test_dream_writes_a_png_with_provenance_and_from_png_reproduces_it(capsys, pictures, tmp_path):
    first = tmp_path / "out.png"
    code, out, err = run(capsys, "dream", pictures["coffee"], "-o", first, *QUICK[:-1],
                         "--layer", "block_6:2=1.0,7=-0.5", "--seed", "5", "--tv", "0.05")
    assert code == 0, err
    assert "octave 2/2" in err  # the progress bar
    assert str(first) in out
    image = load_image(first)
    assert image.shape == load_image(pictures["coffee"]).shape

    provenance = json.loads(read_png_text(first)[PROVENANCE_KEY])
    config = provenance["config"]
    assert config["seed"] == 5 and config["octaves"] == 2 and config["steps"] == 3
    assert config["tv"] == 0.05 and config["backbone"] == "efficientnet_lite0"
    assert config["maplist"] == {"layers": [
        {"layer": "block_6", "weight": 1.0, "channels": {"2": 1.0, "7": -0.5}}]}
    assert provenance["dreamsuite"]

    again = tmp_path / "again.png"
    code, _, err = run(capsys, "dream", "--from-png", first, "-o", again, *RERUN)
    assert code == 0, err
    assert torch.equal(load_image(again), image)
    # Changing a flag on top of the stored dream changes the result.
    other = tmp_path / "other.png"
    assert run(capsys, "dream", "--from-png", first, "-o", other, *RERUN, "--seed", "6")[0] == 0
    assert not torch.equal(load_image(other), image)


@pytest.mark.parametrize("mode", ["weights", "match"])
def test_guided_dream_from_the_command_line_and_its_rerun(capsys, pictures, tmp_path, mode):
    out = tmp_path / "guided.png"
    code, _, err = run(capsys, "dream", pictures["coffee"], "-o", out, *QUICK,
                       "--layer", "block_10", "--guide", pictures["chelsea"],
                       "--guide-mode", mode)
    assert code == 0, err
    provenance = json.loads(read_png_text(out)[PROVENANCE_KEY])
    assert provenance["guided"] is True and len(provenance["guides_sha256"]) == 1
    assert provenance["config"]["guide_mode"] == mode
    if mode == "weights":
        (term,) = provenance["config"]["maplist"]["layers"]
        assert len(term["channels"]) == 112  # every map carries its guide weight

    unguided = tmp_path / "unguided.png"
    assert run(capsys, "dream", pictures["coffee"], "-o", unguided, *QUICK,
               "--layer", "block_10")[0] == 0
    again = tmp_path / "again.png"
    code, _, err = run(capsys, "dream", "--from-png", out, "-o", again, *RERUN)
    assert code == 0, err
    assert torch.equal(load_image(again), load_image(out))
    assert not torch.equal(load_image(unguided), load_image(out))


# --- guide-weights and select -------------------------------------------------------------------


def test_guide_weights_json_equals_the_library(capsys, lite0, pictures):
    code, out, _ = run(capsys, "guide-weights", pictures["chelsea"], pictures["astronaut"],
                       "--layer", "block_10", "--layer", "block_3", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["backbone"] == "efficientnet_lite0"
    assert set(data["layers"]) == {"block_10", "block_3"}
    guides = [load_image(pictures[n]) for n in ("chelsea", "astronaut")]
    expected = guide_weights(lite0, guides, ["block_10", "block_3"])
    for layer, values in data["layers"].items():
        assert len(values) == lite0.spec.layer(layer).channels
        torch.testing.assert_close(torch.tensor(values), expected[layer])


def test_guide_weights_text_names_the_strongest_maps(capsys, pictures):
    code, out, _ = run(capsys, "guide-weights", pictures["chelsea"], "--layer", "block_10")
    assert code == 0
    assert "block_10" in out and "112 maps" in out


def test_select_writes_a_maplist_that_dream_accepts(capsys, lite0, pictures, tmp_path):
    maplist_path = tmp_path / "maps" / "maplist.json"
    code, out, err = run(capsys, "select", pictures["batch"], "--layer", "block_10",
                         "--top-k", "3", "--bottom-k", "2", "-o", maplist_path)
    assert code == 0, err
    written = Maplist.from_dict(json.loads(maplist_path.read_text()))
    batch = [load_image(pictures[n]) for n in ("astronaut", "chelsea")]  # the folder, sorted
    selection = select_neurons(lite0, batch, ["block_10"], top_k=3, bottom_k=2)
    assert written == selection.maplist()

    dreamed = tmp_path / "selected.png"
    code, _, err = run(capsys, "dream", pictures["coffee"], "-o", dreamed, *QUICK,
                       "--maplist", maplist_path)
    assert code == 0, err
    provenance = json.loads(read_png_text(dreamed)[PROVENANCE_KEY])
    assert Maplist.from_dict(provenance["config"]["maplist"]) == written


# --- errors: non-zero exit, a message on stderr, no traceback ------------------------------------


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n definitely not the rest of a PNG")
    plain = tmp_path / "plain.png"
    save_png(torch.rand(3, 40, 40), plain)
    maplist = tmp_path / "bad_maplist.json"
    maplist.write_text('{"layers": [{"layer": "block_3", "channels": {"three": 1}}]}')
    damaged = tmp_path / "damaged.png"
    save_png(torch.rand(3, 40, 40), damaged, {PROVENANCE_KEY: '{"config": '})
    return {"corrupt": corrupt, "plain": plain, "maplist": maplist, "damaged": damaged}


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["dream", "{tmp}/nowhere.png"], "nowhere.png"),
        (["dream", "{corrupt}"], "not a readable image"),
        (["dream", "{plain}", "--backbone", "resnet9000"], "resnet9000"),
        (["dream", "{plain}", "--layer", "block_99"], "block_99"),
        (["dream", "{plain}", "--layer", "block_3:99"], "99"),
        (["dream", "{plain}", "--layer", "block_3:x"], "block_3:x"),
        (["dream", "{plain}", "--octaves", "0"], "octaves"),
        (["dream", "{plain}", "--step-size", "nan"], "step_size"),
        (["dream", "{plain}", "--step-size", "inf"], "step_size"),
        (["dream", "{plain}", "--maplist", "{maplist}"], "three"),
        (["dream", "--from-png", "{plain}"], "provenance"),
        (["dream", "--from-png", "{damaged}"], "damaged"),
        (["dream", "{plain}", "--backbone", "vgg16"], "DREAMSUITE_WEIGHTS_DIR"),
        (["guide-weights", "{corrupt}", "--layer", "block_3"], "not a readable image"),
        (["select", "{plain}", "--layer", "block_3", "--top-k", "0"], "top_k"),
        (["select", "{tmp}/empty_dir", "--layer", "block_3", "--top-k", "1"], "no images"),
    ],
)
def test_errors_exit_2_with_a_message_and_no_traceback(
    capsys, tmp_path, isolated_weights, argv, names
):
    (tmp_path / "empty_dir").mkdir()
    paths = {"tmp": tmp_path, **_bad_files(tmp_path)}
    argv = [a.format(**paths) for a in argv]
    output = ["-o", str(tmp_path / "out.png")] if argv[0] in ("dream", "select") else []
    code, out, err = run(capsys, *argv, *output, *(["--quiet"] if argv[0] == "dream" else []))
    assert code == 2  # the README's promise for bad input
    assert names in err
    assert err.startswith(f"dreamsuite {argv[0]}: error:")
    assert "Traceback" not in err + out
    assert not (tmp_path / "out.png").exists()


def test_pixel_limit_from_the_environment(capsys, tmp_path, monkeypatch):
    path = save_png(torch.rand(3, 50, 60), tmp_path / "big.png")
    monkeypatch.setenv("DREAMSUITE_MAX_PIXELS", "2000")
    code, _, err = run(capsys, "dream", path, "-o", tmp_path / "out.png", "--quiet")
    assert code == 2
    assert "60x50" in err and "2000" in err


# --- the installed entry point ------------------------------------------------------------------


@pytest.mark.slow
def test_installed_entry_point_dreams_and_reports_errors(pictures, tmp_path):
    exe = Path(sys.executable).with_name("dreamsuite")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "dreamsuite.cli"]
    out = tmp_path / "out.png"
    done = subprocess.run(
        [*command, "dream", str(pictures["astronaut"]), "-o", str(out), "--octaves", "1",
         "--steps", "2", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert load_image(out).shape == load_image(pictures["astronaut"]).shape
    assert PROVENANCE_KEY in read_png_text(out)

    failed = subprocess.run(
        [*command, "dream", str(tmp_path / "nowhere.png"), "-o", str(tmp_path / "x.png")],
        capture_output=True, text=True, timeout=300,
    )
    assert failed.returncode == 2
    assert "nowhere.png" in failed.stderr and "Traceback" not in failed.stderr

    unparsable = subprocess.run([*command, "dream", str(pictures["astronaut"]), "-o",
                                 str(tmp_path / "y.png"), "--octaves", "many"],
                                capture_output=True, text=True, timeout=300)
    assert unparsable.returncode == 2
    assert "--octaves: invalid int value: 'many'" in unparsable.stderr


def test_guide_weights_refuses_channel_specs_instead_of_ignoring_them(tmp_path, capsys):
    from dreamsuite.cli import main
    from dreamsuite.images import sample_image, save_png

    guide = save_png(sample_image("coffee", size=64), tmp_path / "g.png")
    code = main(["guide-weights", str(guide), "--layer", "block_8:3,4", "--json"])
    assert code == 2
    assert "whole layers" in capsys.readouterr().err


@pytest.mark.parametrize("content", [None, b"not a certificate"])
def test_a_tls_ca_file_that_is_missing_or_not_pem_is_one_clear_line(capsys, tmp_path,
                                                                    monkeypatch, content):
    """A missing file was a FileNotFoundError traceback; a file of junk made every server look
    unreachable."""
    ca = tmp_path / "ca.pem"
    if content is not None:
        ca.write_bytes(content)
    monkeypatch.setenv("DREAMSUITE_TLS_CA", str(ca))
    code, out, err = run(capsys, "health", "127.0.0.1:1")
    assert code == 2 and "Traceback" not in err
    assert str(ca) in err and "DREAMSUITE_TLS_CA" in err
    assert ("No such file" in err) if content is None else ("no PEM certificate" in err)
