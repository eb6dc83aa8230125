"""The import contract in pyproject.toml holds on the tree, and bites when it is broken."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_tree(dest: Path) -> None:
    for name in ("dreamsuite", "services", "handlers"):
        shutil.copytree(ROOT / name, dest / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    assert LINT_IMPORTS.exists(), "lint-imports is missing: `make test` installs it (import-linter)"
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_tree_keeps_every_contract():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "source", "contract"), [
    ("dreamsuite/engine/_bad.py", "from dreamsuite.cli import main\n",
     "Nothing but the command line imports the command line"),
    ("dreamsuite/clients/_bad.py", "import services.dream.server\n",
     "Command line > launcher, benches > services"),
    ("services/guide/_bad.py", "from services.dream import runner\n",
     "Services talk to each other only through clients"),
    ("handlers/_bad.py", "from dreamsuite.clients import open_channel\n",
     "TorchServe handlers import only the library"),
    ("dreamsuite/backbones/_bad.py", "from dreamsuite.engine import dream\n",
     "Inside the library"),
])
def test_a_module_that_breaks_the_layers_fails_the_check(tmp_path, module, source, contract):
    _copy_tree(tmp_path)
    (tmp_path / module).write_text(source)
    result = _lint(tmp_path)
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken and module.removesuffix(".py").replace("/", ".") in broken
