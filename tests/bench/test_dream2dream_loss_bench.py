"""``dreamsuite bench dream2dream-loss``: both losses trained on the same pairs, evaluated on the
same held-out pairs, compared in one table, and shown side by side."""

from __future__ import annotations

import json

import pytest

from dreamsuite.artifacts import open_store
from dreamsuite.cli import main as cli_main
from dreamsuite.gan.records import read_model
from dreamsuite.images import load_image, read_png_text
from tests.gan.test_dream2dream import SIZE, paired_dataset

pytestmark = pytest.mark.slow


def test_the_bench_trains_both_losses_alike_and_picks_by_held_out_ratio(tmp_path, capsys):
    store = open_store(tmp_path.as_uri())
    paired_dataset(store, "da", 1.0)
    png = tmp_path / "losses.png"
    assert cli_main(["bench", "dream2dream-loss", "da", "--artifacts", store.url, "--steps", "4",
                     "--batch", "2", "--eval-every", "2", "--crop", "24", "--width", "4",
                     "--png", str(png), "--json", "--losses", "paired", "pix2pix"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    jobs = report["jobs"]
    assert list(jobs) == ["paired", "pix2pix"]
    for job in jobs.values():
        record = read_model(store, job["job"])
        assert record["finished"] and record["step"] == 4
        # evaluated at the same steps on the same held-out pairs
        assert sorted(map(int, job["evaluations"])) == [2, 4]
        assert job["evaluations"]["4"]["pairs"] == 2 and job["seconds_per_step"] > 0
    ratios = report["final_perceptual_ratio"]
    assert ratios == {loss: jobs[loss]["evaluations"]["4"]["perceptual_ratio"] for loss in jobs}
    assert report["best"] == min(ratios, key=ratios.get)
    # These pairs' dreams are synthetic: no dream config to dream them again with.
    assert "cannot be dreamed again" in report["seed_floor"]["error"]
    # two held-out rows of photo | dream | paired | pix2pix
    grid = load_image(png)
    assert grid.shape == (3, 2 + 2 * (SIZE + 2), 2 + 4 * (SIZE + 2))
    assert read_png_text(png)["columns"] == "photo | optimised dream | paired | pix2pix"


def test_unknown_losses_are_refused(tmp_path, capsys):
    assert cli_main(["bench", "dream2dream-loss", "da", "--artifacts", tmp_path.as_uri(),
                     "--losses", "paired", "johnson"]) != 0
    assert "--losses: give distinct losses among paired, pix2pix, objective" in capsys.readouterr().err
