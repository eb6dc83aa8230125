"""``dreamsuite gan demo``, shortened: the built-in photos dreamed with the demo's dream config,
a GAN trained on them, and every file the README shows (grid, curves, evaluation table)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from dreamsuite.cli import main
from dreamsuite.engine.config import check_config
from dreamsuite.gan.data import read_manifest
from dreamsuite.launcher.gan import DEMO_DREAM, store_of

pytestmark = pytest.mark.slow

CLAIMS = {"nearer_dreams_than_photos/kid_lite2", "nearer_dreams_than_photos/swd",
          "learned_dream_not_photos/kid_lite2", "learned_dream_not_photos/swd"}


def test_demo_dreams_the_builtin_photos_trains_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "gan"
    assert main(["gan", "demo", "--out", str(out), "--steps", "2", "--crops", "1"]) == 0
    printed = capsys.readouterr().out
    assert "claims (difference, 95% interval)" in printed

    for name in ("samples.png", "dreamed-train.png", "source-photos.png", "curves.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 64, name
    report = json.loads((out / "evaluation.json").read_text())
    # One crop of each of the seven built-in photos: five train, two held out, by photo.
    assert report["sizes"] == {"S": 5, "Dtr": 5, "Dho": 2, "G": 7}
    assert set(report["claims"]) == CLAIMS
    assert set(report["floor"]) == {"kid_lite2", "swd"}
    assert (out / "evaluation.txt").read_text().startswith("sets: S=5 Dtr=5 Dho=2 G=7")

    # The data set was dreamed with the demo's own (documented) dream config.
    store = store_of(str(out / "artifacts"))
    (dataset,) = {key.split("/")[1] for key in store.iter_keys("datasets/")}
    manifest = read_manifest(store, dataset)
    expected = check_config(DEMO_DREAM).config.to_dict()
    assert {k: manifest.dream_config[k] for k in ("octaves", "steps", "step_size", "seed")} == \
        {k: expected[k] for k in ("octaves", "steps", "step_size", "seed")}

    # The demo's GAN, under a job id that names it (another --model in the same folder is a
    # new job, not a refused resume).
    records = [json.loads(store.get(key)) for key in store.iter_keys("models/")
               if key.endswith(".json") and not key.endswith(".meta.json")]
    assert [(r["kind"], r["model"]) for r in records] == [
        ("projected64", f"demo-projected64-{dataset[:12]}")]
