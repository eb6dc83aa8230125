"""Shared paths and loaders for the static checks of deploy/ and docker-compose.yml."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("cpu", "gpu", "dev")


def require_tool(name: str, hint: str) -> str:
    """The tool's path; a missing tool fails the test (CI installs them), it never skips."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: {hint}")
    return path


@pytest.fixture(scope="session")
def rendered() -> dict[str, str]:
    """``kubectl kustomize`` output of every overlay, by overlay name."""
    kubectl = require_tool("kubectl", "it ships with the machine image (kubectl kustomize)")
    out = {}
    for overlay in OVERLAYS:
        proc = subprocess.run([kubectl, "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"kustomize {overlay} failed:\n{proc.stderr}"
        out[overlay] = proc.stdout
    return out


@pytest.fixture(scope="session")
def manifests(rendered) -> dict[str, list[dict]]:
    """The rendered objects of every overlay."""
    return {name: [d for d in yaml.safe_load_all(text) if d] for name, text in rendered.items()}


@pytest.fixture(scope="session")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())
