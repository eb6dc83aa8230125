"""``dreamsuite reconstruct`` and ``dreamsuite style``, locally and with ``--remote``."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from dreamsuite.cli import main
from dreamsuite.engine.provenance import PROVENANCE_KEY
from dreamsuite.images import load_image, sample_image, save_png

pytestmark = pytest.mark.slow


@pytest.fixture
def photos(tmp_path):
    content = save_png(sample_image("coffee", size=64), tmp_path / "content.png")
    style = save_png(sample_image("chelsea", size=64), tmp_path / "style.png")
    other = save_png(sample_image("astronaut", size=64), tmp_path / "other.png")
    return content, style, other


def test_style_locally_and_remotely_give_the_same_image(photos, tmp_path, dream_server,
                                                        capsys):
    content, style, other = photos
    args = ["style", str(content), "--style", str(style), "--style", f"{other}=0.3",
            "--iterations", "4", "--seed", "1"]
    assert main([*args, "-o", str(tmp_path / "local.png")]) == 0
    server = dream_server()
    assert main([*args, "-o", str(tmp_path / "remote.png"), "--remote", server.address]) == 0
    local, remote = load_image(tmp_path / "local.png"), load_image(tmp_path / "remote.png")
    assert (local - remote).abs().max() <= 1 / 255 + 1e-6
    assert (local - load_image(content)).abs().mean() > 0.005
    provenance = json.loads(Image.open(tmp_path / "remote.png").text[PROVENANCE_KEY])
    assert provenance["style_weights"] == [1.0, 0.3]
    assert "iteration 4/4" in capsys.readouterr().err  # the live progress line


def test_reconstruct_writes_a_row_from_shallow_to_deep(photos, tmp_path):
    content, _, _ = photos
    out = tmp_path / "row"
    assert main(["reconstruct", str(content), "--layer", "stem", "--layer", "block_6",
                 "--iterations", "10", "-o", str(out)]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["00-stem.png", "01-block_6.png"]
    original = load_image(content)
    errors = [float((load_image(out / f) - original).abs().mean()) for f in files]
    assert errors[0] < errors[1]


def test_bad_style_arguments_are_one_line_errors(photos, tmp_path, capsys):
    content, style, _ = photos
    code = main(["style", str(content), "--style", str(style), "--iterations", "0",
                 "-o", str(tmp_path / "x.png")])
    assert code != 0
    err = capsys.readouterr().err
    assert "iterations must be between 1 and 10000" in err and "Traceback" not in err
