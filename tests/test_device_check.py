"""scripts/device_check.py, the CUDA paths in one short run, runs its checks on the CPU too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_the_device_check_passes_on_the_cpu_and_writes_its_report(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "device_check.py"), "--device", "cpu",
         "--skip", "bench", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "device_check.json").read_text())
    checks = report["checks"]
    assert set(checks) == {"dream", "batch", "guided_match", "style", "gan", "oom"}
    assert all(check["ok"] for check in checks.values())
    assert checks["oom"]["skipped"] == "CPU"
    assert checks["gan"]["resumed_step"] == 20
    assert (tmp_path / "dream.png").stat().st_size > 0 and (tmp_path / "style.png").exists()
    for name in checks:  # one line per check on stdout
        assert any(line.startswith(name) for line in done.stdout.splitlines()), name
