"""``dreamsuite gan`` on this machine: build a tiny data set, train, list, sample, evaluate."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from dreamsuite.cli import main
from dreamsuite.cli.gan import parse_seeds
from dreamsuite.errors import InvalidArgument

pytestmark = pytest.mark.slow


def test_seed_lists():
    assert parse_seeds("1-4") == [1, 2, 3, 4]
    assert parse_seeds("0-1,7, 9") == [0, 1, 7, 9]
    for bad in ("", "a-b", "1-"):
        with pytest.raises(InvalidArgument):
            parse_seeds(bad)


def test_build_train_list_sample_and_evaluate_locally(tmp_path, capsys):
    store = str(tmp_path / "store")
    assert main(["gan", "build-dataset", "--builtin", "skimage", "--size", "32", "--crops", "1",
                 "--octaves", "1", "--steps", "1", "--artifacts", store, "--quiet"]) == 0
    out = capsys.readouterr().out
    dataset = re.search(r"data set (\w+): 5 train, 2 holdout images", out).group(1)
    assert main(["gan", "build-dataset", "--builtin", "skimage", "--size", "32", "--crops", "1",
                 "--octaves", "1", "--steps", "1", "--artifacts", store, "--quiet"]) == 0
    assert f"data set {dataset}: 5 train" in capsys.readouterr().out  # the same id again

    assert main(["gan", "train", dataset, "--steps", "3", "--batch", "4", "--width", "8",
                 "--checkpoint-every", "1", "--eval-every", "-1", "--job-id", "cli-job",
                 "--artifacts", store, "--quiet"]) == 0
    assert "job cli-job: done" in capsys.readouterr().out

    assert main(["gan", "models", "--json", "--artifacts", store]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert (record["model"], record["dataset"], record["step"], record["finished"]) == \
        ("cli-job", dataset, 3, True)

    grid = tmp_path / "grid.png"
    assert main(["gan", "sample", "cli-job", "--seeds", "0-3", "-o", str(grid),
                 "--each", str(tmp_path / "each"), "--artifacts", store]) == 0
    assert "wrote" in capsys.readouterr().out
    assert Image.open(grid).size == (2 + 2 * 66, 2 + 2 * 66)  # 2x2 grid of dcgan64, 2 px gaps
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == [
        f"seed_{s:06d}.png" for s in range(4)]

    assert main(["gan", "evaluate", "cli-job", "--samples", "12", "--bootstrap", "5", "--json",
                 "--artifacts", store]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "claims" in report


def test_unknown_model_is_exit_code_2(tmp_path, capsys):
    assert main(["gan", "sample", "nope", "-o", str(tmp_path / "x.png"),
                 "--artifacts", str(tmp_path)]) == 2
    assert "no model 'nope'" in capsys.readouterr().err


def test_dream2dream_trains_on_two_data_sets_lists_and_exports_locally(tmp_path, capsys):
    import torch

    from dreamsuite.artifacts import open_store
    from dreamsuite.gan.data import write_dataset

    store = str(tmp_path / "store")
    g = torch.Generator().manual_seed(0)
    for name in ("dreams-a", "dreams-b"):
        photos = [torch.rand(3, 16, 16, generator=g) for _ in range(3)]
        write_dataset(open_store((tmp_path / "store").as_uri()), name, {
            "train": [(f"p{i}", x, x.flip(-1)) for i, x in enumerate(photos[:2])],
            "holdout": [("h", photos[2], photos[2].flip(-1))]}, 16)
    assert main(["gan", "train", "dreams-a", "dreams-b", "--model", "dream2dream", "--steps", "2",
                 "--batch", "2", "--width", "4", "--crop", "12", "--eval-every", "-1",
                 "--job-id", "d2d", "--artifacts", store, "--quiet"]) == 0
    assert "job d2d: done" in capsys.readouterr().out
    assert main(["gan", "models", "--artifacts", store]) == 0
    assert "dream2dream step 2      data sets dreams-a, dreams-b" in capsys.readouterr().out
    # An evaluated model's quality figures are listed (written into its record here).
    from dreamsuite.gan.checkpoint import model_record_key, put_json
    from dreamsuite.gan.records import read_model

    record = read_model(open_store((tmp_path / "store").as_uri()), "d2d")
    record["evaluation"] = {"perceptual_ratio": 0.981, "style_ratio": 1.084}
    put_json(open_store((tmp_path / "store").as_uri()), model_record_key("d2d"), record)
    assert main(["gan", "models", "--artifacts", store]) == 0
    assert "perceptual(out,dream)/(photo,dream) 0.981  style 1.084" in capsys.readouterr().out
    assert main(["gan", "export", "d2d", "-o", str(tmp_path / "ms"), "--name", "one-pass",
                 "--artifacts", store]) == 0
    assert "2 condition(s): 0=dreams-a, 1=dreams-b" in capsys.readouterr().out
    assert (tmp_path / "ms" / "one-pass.mar").is_file()
    assert main(["gan", "train", "dreams-a", "dreams-b", "--artifacts", store, "--quiet"]) == 2
    assert "datasets: a dcgan64 trains on one data set" in capsys.readouterr().err
