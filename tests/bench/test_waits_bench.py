"""``dreamsuite bench waits``: each dream runs in its own process under the wait policy it is
labelled with, beside a neighbour only where it says so."""

from __future__ import annotations

import json

import pytest

from dreamsuite.cli import main

pytestmark = pytest.mark.slow


def test_each_policy_is_the_one_its_dreams_ran_under(capsys):
    assert main(["bench", "waits", "--json", "--size", "64", "--octaves", "1", "--steps", "1",
                 "--rounds", "1", "--threads", "2"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [f["setting"] for f in report["figures"]] == ["idle", "busy neighbour"]
    runs = report["runs"]
    assert len(runs) == 4
    for run in runs:
        # "default" is OpenMP's own (the variable unset in the dreaming process), whatever the
        # command itself runs with; "passive" the suite's.
        assert run["policy"] == {"default": None, "passive": "PASSIVE"}[run["waits"]]
        assert run["threads"] == 2 and run["seconds"] > 0
    for figure in report["figures"]:
        assert figure["ratio"] == pytest.approx(figure["passive_seconds"] /
                                                figure["default_seconds"])
