"""``dreamsuite dream`` with the cleaning options, guide masks and octave weights (recorded in
the provenance, re-run from the PNG), and ``dreamsuite bench clean``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dreamsuite.cli import main
from dreamsuite.engine import PROVENANCE_KEY
from dreamsuite.images import load_image, read_png_text, save_png

QUICK = ["--octaves", "2", "--steps", "2", "--jitter", "4", "--device", "cpu", "--quiet"]
RERUN = ["--device", "cpu", "--quiet"]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def files(tmp_path_factory, chelsea, coffee, rocket) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("regions")
    paths = {name: save_png(image, folder / f"{name}.png")
             for name, image in (("chelsea", chelsea), ("coffee", coffee), ("rocket", rocket))}
    h, w = rocket.shape[-2:]
    left = torch.zeros(3, h, w)
    left[..., : w // 2] = 1
    paths["left"] = save_png(left, folder / "left.png")
    return paths


def _provenance(path: Path) -> dict:
    return json.loads(read_png_text(path)[PROVENANCE_KEY])


def test_cleaning_flags_are_recorded_and_re_run(capsys, files, tmp_path):
    out = tmp_path / "clean.png"
    code, _, err = run(capsys, "dream", files["coffee"], "-o", out, *QUICK, "--laplacian", "2",
                       "--no-decorrelate", "--fourier", "0.5")
    assert code == 0, err
    config = _provenance(out)["config"]
    assert (config["laplacian"], config["decorrelate"], config["fourier"]) == (2, False, 0.5)
    again = tmp_path / "again.png"
    assert run(capsys, "dream", "--from-png", out, "-o", again, *RERUN)[0] == 0
    assert torch.equal(load_image(again), load_image(out))
    default = tmp_path / "default.png"
    assert run(capsys, "dream", files["coffee"], "-o", default, *QUICK)[0] == 0
    config = _provenance(default)["config"]
    assert (config["laplacian"], config["decorrelate"], config["fourier"]) == (4, True, 0.0)
    assert not torch.equal(load_image(default), load_image(out))


def test_guide_masks_and_octave_weights_are_recorded_and_re_run(capsys, files, tmp_path):
    out = tmp_path / "regions.png"
    code, _, err = run(capsys, "dream", files["rocket"], "-o", out, *QUICK,
                       "--layer", "block_8", "--layer-octaves", "block_8=1,2",
                       "--guide", files["chelsea"], "--guide-mask", files["left"],
                       "--guide-octaves", "0.5,1",
                       "--guide", files["coffee"], "--guide-mask", "none",
                       "--guide-octaves", "none")
    assert code == 0, err
    provenance = _provenance(out)
    assert provenance["guide_masks"] == [str(Path(files["left"]).resolve()), None]
    assert len(provenance["guide_masks_sha256"][0]) == 64
    assert provenance["guide_masks_sha256"][1] is None
    assert provenance["config"]["guide_octave_weights"] == [[0.5, 1.0], []]
    assert provenance["config"]["layer_octave_weights"] == {"block_8": [1.0, 2.0]}

    again = tmp_path / "again.png"
    code, _, err = run(capsys, "dream", "--from-png", out, "-o", again, *RERUN)
    assert code == 0, err
    assert torch.equal(load_image(again), load_image(out))
    unmasked = tmp_path / "unmasked.png"
    assert run(capsys, "dream", "--from-png", out, "-o", unmasked, *RERUN,
               "--guide", files["chelsea"], "--guide", files["coffee"])[0] == 0
    assert not torch.equal(load_image(unmasked), load_image(out))


@pytest.mark.parametrize("flags, message", [
    (["--guide-octaves", "1,x"], "--guide-octaves '1,x': give numbers"),
    (["--layer-octaves", "1,2"], "--layer-octaves '1,2': use LAYER=W,W"),
    (["--laplacian", "20"], "laplacian must be between 0 and 12"),
    (["--guide-mask", "none"], "guide_masks: 1 masks for 0 guides"),
])
def test_bad_flags_exit_2_with_a_message(capsys, files, tmp_path, flags, message):
    code, _, err = run(capsys, "dream", files["coffee"], "-o", tmp_path / "x.png", *QUICK,
                       *flags)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_bench_clean_prints_the_rule_per_combination(capsys):
    code, out, err = run(capsys, "bench", "clean", "--json", "--images", "coffee", "--size",
                         "64", "--octaves", "1", "--steps", "2")
    assert code == 0, err
    report = json.loads(out)
    names = [s["combination"] for s in report["summary"]]
    assert names[0] == "baseline" and len(names) == 8
    assert report["rule"] == {"max_share_ratio": 0.5, "min_gain_ratio": 0.9}
    by = {s["combination"]: s for s in report["summary"]}
    assert by["baseline"]["share_ratio"] == 1.0 and by["baseline"]["gain_ratio"] == 1.0
    assert by["laplacian + decorrelate"]["is_default"]
    for s in report["summary"]:
        assert 0.0 <= s["high_frequency_share"] <= 1.0
        assert s["meets_rule"] == (s["combination"] != "baseline" and s["share_ratio"] <= 0.5
                                   and s["gain_ratio"] >= 0.9)
