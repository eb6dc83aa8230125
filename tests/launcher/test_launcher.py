"""The local launcher: everything starts and serves, dreams go through it, Prometheus scrapes
it, and after ``down`` (or Ctrl-C) no process of the suite is left."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest
import torch

from dreamsuite.clients.dream import DreamClient, request_from_config
from dreamsuite.engine import DreamConfig
from dreamsuite.images import encode_png, load_image, sample_image
from dreamsuite.launcher import check_health, check_torchserve

SERVICES = {"torchserve", "guide", "dream", "gan", "prometheus"}
GRPC_NAMES = {"dream": "dreamsuite.v1.DreamService", "guide": "dreamsuite.v1.GuideService"}
CLI = [sys.executable, "-c", "import sys; from dreamsuite.cli import main; sys.exit(main())"]
TINY = DreamConfig(octaves=2, steps=2, octave_scale=1.4, seed=3)


def _ports(suite, name):
    return next(s for s in suite["services"] if s["name"] == name)["ports"]


def _target(suite, name):
    return f"127.0.0.1:{_ports(suite, name)['grpc']}"


def _metrics(suite, name) -> str:
    url = f"http://127.0.0.1:{_ports(suite, name)['metrics']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.read().decode()


def _counter(text: str, family: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(family + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _suite_pids(suite) -> list[psutil.Process]:
    """Every process of the suite: each recorded group leader and all its descendants."""
    found = []
    for service in suite["services"]:
        try:
            leader = psutil.Process(service["pid"])
        except psutil.NoSuchProcess:
            continue
        found += [leader, *leader.children(recursive=True)]
    return found


def _left(processes: list[psutil.Process]) -> list[str]:
    left = []
    for proc in processes:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
    return left


def test_up_prints_every_endpoint(suite):
    assert {s["name"] for s in suite["services"]} == SERVICES
    for service in suite["services"]:
        assert service["name"] in suite["stdout"]
    assert "dreamsuite down" in suite["stdout"]


def test_every_service_reports_serving(suite):
    for name, grpc_name in GRPC_NAMES.items():
        assert check_health(_target(suite, name)) == "SERVING", name
        assert check_health(_target(suite, name), grpc_name) == "SERVING", grpc_name
    # TorchServe runs with token authorization (its model-control API is on for PublishModel).
    keys = json.loads((Path(suite["run_dir"]) / "torchserve" / "key_file.json").read_text())
    key = keys["inference"]["key"]
    assert check_torchserve(_target(suite, "torchserve")) == "UNREACHABLE"  # no key: refused
    assert check_torchserve(_target(suite, "torchserve"), token=key) == "SERVING"
    probe = subprocess.run([*CLI, "health", _target(suite, "torchserve"), "--torchserve",
                            "--torchserve-token", key], capture_output=True, text=True,
                           timeout=60)
    assert probe.returncode == 0, probe.stdout + probe.stderr


def test_status_from_another_shell(suite):
    proc = subprocess.run([*CLI, "status", "--json", "--run-dir", suite["run_dir"]],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert {s["name"]: s["status"] for s in report["services"]} == dict.fromkeys(
        SERVICES, "SERVING")


def _dream(suite, guides=()) -> torch.Tensor:
    image = encode_png(sample_image("chelsea", size=64))
    request = request_from_config(TINY, image, guides=[encode_png(g) for g in guides])
    request.output.inline_images = True
    updates = []
    with DreamClient(_target(suite, "dream")) as client:
        updates = list(client.dream(request, timeout=300))
    assert [u.octave for u in updates] == list(range(len(updates))) and updates
    assert updates[-1].HasField("result")
    result = updates[-1].result
    assert result.artifact.uri.startswith("file://")
    return load_image(result.image)


def test_a_dream_through_the_suite(suite):
    out = _dream(suite)
    assert out.shape == (3, 64, 96) and torch.isfinite(out).all()


def test_a_guided_dream_goes_through_guide_service_and_torchserve(suite):
    before_guide = _counter(_metrics(suite, "guide"), "grpc_server_handled_total",
                            grpc_method="ComputeGuideWeights", grpc_code="OK")
    before_ts = _counter(_metrics(suite, "torchserve"), "ts_inference_requests_total")
    out = _dream(suite, guides=[sample_image("coffee", size=64)])
    assert out.shape == (3, 64, 96)
    after_guide = _counter(_metrics(suite, "guide"), "grpc_server_handled_total",
                           grpc_method="ComputeGuideWeights", grpc_code="OK")
    assert after_guide == before_guide + 1, "the dream service did not ask the guide service"
    after_ts = _counter(_metrics(suite, "torchserve"), "ts_inference_requests_total")
    assert after_ts > before_ts, "the guide service did not ask TorchServe"


def test_prometheus_scrapes_every_target(suite):
    port = _ports(suite, "prometheus")["http"]
    query = urllib.parse.urlencode({"query": "up"})
    deadline, up = time.monotonic() + 90, {}
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?{query}",
                                    timeout=5) as reply:
            data = json.loads(reply.read())
        up = {r["metric"]["job"]: r["value"][1] for r in data["data"]["result"]}
        if set(up) == SERVICES and set(up.values()) == {"1"}:
            break
        time.sleep(1)
    assert up == dict.fromkeys(SERVICES, "1")


def test_down_stops_everything_and_leaves_no_process(suite):
    processes = _suite_pids(suite)
    assert len(processes) >= len(SERVICES)
    proc = subprocess.run([*CLI, "down", "--run-dir", suite["run_dir"]], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "stopped" in proc.stdout, proc.stdout + proc.stderr
    assert _left(processes) == []
    status = subprocess.run([*CLI, "status", "--run-dir", suite["run_dir"]],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 3, status.stdout


@pytest.mark.slow
def test_ctrl_c_stops_a_foreground_suite(tmp_path, model_store):
    run_dir = tmp_path / "suite"
    up = subprocess.Popen([*CLI, "up", "--run-dir", str(run_dir), "--model-store",
                           str(model_store)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    try:
        for line in up.stdout:
            if "Ctrl-C" in line:
                break
        else:
            pytest.fail(f"dreamsuite up ended early (rc {up.wait()})")
        state = json.loads((run_dir / "state.json").read_text())
        processes = _suite_pids(state)
        assert {p["name"] for p in state["services"]} == {"torchserve", "guide", "dream", "gan"}
        up.send_signal(signal.SIGINT)
        assert up.wait(120) == 0
        assert _left(processes) == []
        assert not (run_dir / "state.json").exists()
    finally:
        if up.poll() is None:
            up.kill()
            subprocess.run([*CLI, "down", "--run-dir", str(run_dir)], timeout=120)
