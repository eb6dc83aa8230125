"""``dreamsuite bench service --json`` runs both paths and reports the ratio (tiny workload)."""

from __future__ import annotations

import json

import pytest

from dreamsuite.cli import main as cli_main


@pytest.mark.slow
def test_bench_service_reports_a_ratio(capsys):
    code = cli_main(["bench", "service", "--json", "--size", "64", "--octaves", "1",
                     "--steps", "1", "--rounds", "1", "--device", "cpu"])
    assert code == 0
    figure = json.loads(capsys.readouterr().out)
    assert figure["ratio"] == figure["service_seconds"] / figure["in_process_seconds"]
    assert figure["ratio"] > 0 and figure["target"] == 1.05
