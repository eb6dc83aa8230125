"""``dreamsuite presets`` and ``dreamsuite dream --preset``: the preset fills the config, the
options given alongside override it, locally and with ``--remote``."""

from __future__ import annotations

import json

import pytest

from dreamsuite.cli import main
from dreamsuite.engine import PROVENANCE_KEY
from dreamsuite.engine.presets import PRESETS
from dreamsuite.images import read_png_text, sample_image, save_png

#: The smallest dream: one octave of one step, on the CPU.
TINY = ["--octaves", "1", "--steps", "1", "--device", "cpu", "--quiet"]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def cat(tmp_path_factory):
    """The cat at 80 px (Inception V3 needs 75)."""
    return save_png(sample_image("chelsea", size=80), tmp_path_factory.mktemp("cat") / "cat.png")


def _recorded(path) -> dict:
    return json.loads(read_png_text(path)[PROVENANCE_KEY])["config"]


def test_presets_lists_each_with_its_fields_and_weights(capsys, isolated_weights):
    code, out, _ = run(capsys, "presets", "--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    assert list(rows) == list(PRESETS)
    assert rows["lite0-default"]["weights"] == "embedded"
    assert rows["paper-inception"]["weights"] == rows["paper-vgg16"]["weights"] == "missing"
    fields = rows["paper-inception"]["fields"]
    assert [t["layer"] for t in fields["maplist"]["layers"]] == [
        "mixed3", "mixed5", "mixed6", "mixed7"]
    assert rows["paper-inception"]["config"]["octaves"] == fields["octaves"] == 3

    code, out, _ = run(capsys, "presets")
    assert code == 0
    assert "paper-inception  backbone=inception_v3  weights=missing" in out
    assert "maplist=mixed3,mixed5,mixed6,mixed7 octaves=3" in out


def test_the_default_preset_dreams_and_flags_override_it(capsys, cat, tmp_path):
    out = tmp_path / "default.png"
    code, _, err = run(capsys, "dream", cat, "-o", out, "--preset", "lite0-default", *TINY,
                       "--seed", "4")
    assert code == 0, err
    config = _recorded(out)
    assert (config["backbone"], config["octaves"], config["steps"], config["seed"]) == (
        "efficientnet_lite0", 1, 1, 4)


def test_a_paper_preset_with_random_weights_records_friendly_names(capsys, cat, tmp_path):
    out = tmp_path / "paper.png"
    code, _, err = run(capsys, "dream", cat, "-o", out, "--preset", "paper-inception",
                       "--weights", "random", *TINY, "--laplacian", "2")
    assert code == 0, err
    config = _recorded(out)
    assert config["backbone"] == "inception_v3" and config["weights"] == "random"
    assert [t["layer"] for t in config["maplist"]["layers"]] == [
        "mixed_6a", "mixed_6c", "mixed_6d", "mixed_6e"]
    # The preset's schedule where no flag was given; the flags where one was.
    assert (config["octave_scale"], config["step_size"], config["jitter"]) == (1.4, 0.005, 0)
    assert (config["octaves"], config["steps"], config["laplacian"]) == (1, 1, 2)
    assert config["decorrelate"] is False
    # --layer replaces the preset's maplist.
    code, _, err = run(capsys, "dream", cat, "-o", out, "--preset", "paper-inception",
                       "--weights", "random", *TINY, "--layer", "mixed0")
    assert code == 0, err
    assert _recorded(out)["maplist"]["layers"] == [{"layer": "mixed_5b", "weight": 1.0}]


@pytest.mark.parametrize(("argv", "names"), [
    (["--preset", "paper-resnet"],
     ["unknown preset 'paper-resnet'", "paper-inception", "lite0-default"]),
    (["--preset", "paper-vgg16"], ["vgg16-397923af.pth", "DREAMSUITE_WEIGHTS_DIR"]),
    (["--preset", "lite0-default", "--from-png", "{cat}"], ["--preset or --from-png"]),
])
def test_bad_presets_exit_2_with_one_line(capsys, cat, tmp_path, isolated_weights, argv, names):
    argv = [a.format(cat=cat) for a in argv]
    code, out, err = run(capsys, "dream", cat, "-o", tmp_path / "out.png", *argv, *TINY)
    assert code == 2
    assert err.startswith("dreamsuite dream: error:") and err.count("\n") == 1
    for name in names:
        assert name in err
    assert "Traceback" not in out + err
    assert not (tmp_path / "out.png").exists()


@pytest.mark.slow
def test_a_preset_dreams_remotely_as_locally(capsys, cat, tmp_path, dream_server):
    server = dream_server()
    local, remote = tmp_path / "local.png", tmp_path / "remote.png"
    argv = ["--preset", "lite0-default", "--octaves", "1", "--steps", "2", "--quiet"]
    assert run(capsys, "dream", cat, "-o", local, *argv, "--device", "cpu")[0] == 0
    code, _, err = run(capsys, "dream", cat, "-o", remote, *argv, "--remote", server.address)
    assert code == 0, err
    assert _recorded(remote) == _recorded(local)
