"""One suite for the launcher tests, started the way a user does: ``dreamsuite up --detach
--with-prometheus`` in a subprocess, stopped by the last test (or at teardown) with
``dreamsuite down``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-c", "import sys; from dreamsuite.cli import main; sys.exit(main())"]


def dreamsuite(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the dreamsuite CLI in a fresh interpreter (another shell, as far as it knows)."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> Path:
    """The archive is built once per session, into a folder of the test's own."""
    return tmp_path_factory.mktemp("model-store")


@pytest.fixture(scope="module")
def suite(tmp_path_factory, model_store) -> dict:
    """The state of a running suite (``state.json``) plus ``run_dir``."""
    if shutil.which("java") is None:
        pytest.fail("TorchServe needs Java 17 (`java` is not on PATH)")
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is missing: apt-get install prometheus (.ci/system-deps does)")
    run_dir = tmp_path_factory.mktemp("suite")
    up = dreamsuite("up", "--detach", "--with-prometheus", "--run-dir", str(run_dir),
                    "--model-store", str(model_store), timeout=480)
    state_file = run_dir / "state.json"
    try:
        assert up.returncode == 0, f"dreamsuite up failed:\n{up.stdout}\n{up.stderr}"
        state = json.loads(state_file.read_text())
        state["stdout"] = up.stdout
        yield state
    finally:
        if state_file.exists():
            dreamsuite("down", "--run-dir", str(run_dir))
