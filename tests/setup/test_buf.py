"""buf's proto checks (buf.yaml): lint passes on our protos, and the breaking-change check
against the committed baseline bites on a removed field but lets new files through.

buf is the version the Makefile pins, installed by `make test` into .tools/buf; a missing buf
fails these tests rather than skipping them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / ".tools" / "buf" / "node_modules" / ".bin" / "buf"
BASELINE = ROOT / "protos" / "buf-baseline.binpb"
DREAM_PROTO = Path("protos") / "dreamsuite" / "v1" / "dream.proto"


@pytest.fixture(scope="module")
def buf() -> str:
    if not BUF.exists():
        pytest.fail(f"buf is not installed at {BUF.relative_to(ROOT)}: "
                    "`make test` (or `make proto-lint`) installs it")
    pinned = re.search(r"^BUF_VERSION\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert pinned, "the Makefile pins no BUF_VERSION"
    version = run([str(BUF), "--version"], ROOT).stdout.strip()
    assert version == pinned.group(1), f"buf {version} installed, the Makefile pins {pinned.group(1)}"
    return str(BUF)


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


@pytest.fixture
def protos_copy(tmp_path) -> Path:
    """A scratch copy of buf.yaml and protos/ (without the baseline)."""
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(ROOT / "protos", tmp_path / "protos",
                    ignore=shutil.ignore_patterns("*.binpb"))
    return tmp_path


def breaking(buf: str, workspace: Path) -> subprocess.CompletedProcess[str]:
    return run([buf, "breaking", "protos", "--against", str(BASELINE)], workspace)


def test_lint_passes_on_the_repo_protos(buf):
    proc = run([buf, "lint"], ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_vendored_torchserve_proto_is_left_out(buf):
    files = run([buf, "ls-files"], ROOT).stdout.split()
    assert files, "buf sees no proto files"
    assert all(f.startswith("protos/dreamsuite/") for f in files), files


def test_repo_protos_are_compatible_with_the_baseline(buf):
    proc = breaking(buf, ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_breaking_fails_when_a_field_is_removed(buf, protos_copy):
    proto = protos_copy / DREAM_PROTO
    text = proto.read_text()
    assert "  double loss = 5;\n" in text
    proto.write_text(text.replace("  double loss = 5;\n", ""))
    proc = breaking(buf, protos_copy)
    assert proc.returncode != 0, "buf breaking accepted a removed field"
    out = proc.stdout + proc.stderr
    assert "DreamUpdate" in out and "loss" in out, out


def test_a_new_proto_file_is_compatible_and_linted(buf, protos_copy):
    gan = protos_copy / "protos" / "dreamsuite" / "v1" / "gan.proto"
    gan.write_text("""syntax = "proto3";

package dreamsuite.v1;

import "dreamsuite/v1/common.proto";

service GanService {
  rpc Sample(SampleRequest) returns (SampleResponse);
}

message SampleRequest {
  int64 seed = 1;
}

message SampleResponse {
  Artifact artifact = 1;
}
""")
    proc = breaking(buf, protos_copy)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert run([buf, "lint"], protos_copy).returncode == 0

    # The naming exceptions in buf.yaml are per file: a new file gets the STANDARD rules.
    gan.write_text(gan.read_text().replace("SampleResponse", "Samples"))
    proc = run([buf, "lint"], protos_copy)
    assert proc.returncode != 0
    assert "gan.proto" in proc.stdout and "SampleResponse" in proc.stdout, proc.stdout
