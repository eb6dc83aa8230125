"""Dockerfiles (multi-stage, pinned bases, non-root, health checks) and the Prometheus config."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "deploy" / "docker").glob("*.Dockerfile"))


def _final_stage(text: str) -> str:
    return text[text.rindex("\nFROM "):]


def _base_images(text: str) -> list[str]:
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    images = re.findall(r"^FROM (\S+)", text, re.M)
    return [args.get(i[2:-1], i) if i.startswith("${") else i for i in images]


def test_there_are_dockerfiles():
    assert {p.name for p in DOCKERFILES} >= {"service.Dockerfile", "torchserve.Dockerfile"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_is_multi_stage_with_pinned_bases(path):
    text = path.read_text()
    images = _base_images(text)
    assert len(images) >= 2, "not multi-stage"
    for image in images:
        assert re.search(r":\d[\w.-]*$", image), f"{image} is not pinned to a version tag"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runs_non_root_with_a_health_check(path):
    final = _final_stage(path.read_text())
    user = re.findall(r"^USER (\S+)", final, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0"), "final stage runs as root"
    assert re.search(r"^HEALTHCHECK ", final, re.M), "no HEALTHCHECK"


def test_service_image_health_check_asks_grpc_health():
    final = _final_stage((ROOT / "deploy/docker/service.Dockerfile").read_text())
    assert '["dreamsuite", "health", "--timeout", "4"]' in final
    assert "DREAMSUITE_HEALTH_TARGET=127.0.0.1:50051" in final


def test_torchserve_image_health_check_pings_its_grpc_api():
    final = _final_stage((ROOT / "deploy/docker/torchserve.Dockerfile").read_text())
    assert '["dreamsuite", "health", "127.0.0.1:7070", "--torchserve"' in final


def test_dockerfiles_copy_only_what_exists():
    for path in DOCKERFILES:
        for source in re.findall(r"^COPY (?!--from)(?:--\S+ )*(\S+) ", path.read_text(), re.M):
            assert (ROOT / source).exists(), (
                f"{path.name} copies {source}, which is not in the repository")


def test_promtool_accepts_the_prometheus_config():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: apt-get install prometheus (.ci/system-deps does)")
    config = ROOT / "deploy" / "prometheus" / "prometheus.yml"
    proc = subprocess.run([promtool, "check", "config", str(config)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr
