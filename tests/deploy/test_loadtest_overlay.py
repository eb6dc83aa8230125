"""The load-test overlay renders, validates strictly offline, keeps the suite's pod rules, and
its master, workers, Service and policy agree with each other and with the command line."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dreamsuite.loadtest import cli
from dreamsuite.loadtest.command import plan_from_args
from dreamsuite.loadtest.slo import parse_slo

OVERLAY = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "overlays" / "loadtest"


def _tool(name: str) -> str:
    found = Path(sys.executable).with_name(name)
    path = str(found) if found.exists() else shutil.which(name)
    if path is None:  # CI installs both: a missing tool fails, it never skips
        pytest.fail(f"{name} is not installed (kubectl ships with the machine image; "
                    "kubernetes-validate: pip install -e '.[dev]')")
    return path


@pytest.fixture(scope="module")
def rendered() -> str:
    proc = subprocess.run([_tool("kubectl"), "kustomize", str(OVERLAY)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def objects(rendered) -> dict[tuple[str, str], dict]:
    return {(o["kind"], re.sub(r"-[a-z0-9]{10}$", "", o["metadata"]["name"])): o
            for o in yaml.safe_load_all(rendered) if o}


def _container(objects, job: str) -> dict:
    return objects[("Job", job)]["spec"]["template"]["spec"]["containers"][0]


def _args(objects, job: str) -> list[str]:
    container = _container(objects, job)
    assert container["command"] == ["dreamsuite", "loadtest"]
    return container["args"]


def _parse(argv: list[str]):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_overlay_passes_kubernetes_validate_strict(rendered):
    proc = subprocess.run([_tool("kubernetes-validate"), "--strict", "-"], input=rendered,
                          capture_output=True, text=True, timeout=300)
    report = proc.stdout + proc.stderr
    bad = [line for line in report.splitlines() if not line.startswith("INFO")]
    assert proc.returncode == 0 and not bad, report  # a warning (unknown kind) fails too
    for resource in ("job/loadtest-master", "job/loadtest-worker", "service/loadtest-master",
                     "networkpolicy/loadtest-master-ingress", "configmap/dreamsuite-loadtest-"):
        assert f"resource {resource}" in report, resource


def test_pods_run_non_root_read_only_and_are_admitted_as_clients(objects):
    for job in ("loadtest-master", "loadtest-worker"):
        template = objects[("Job", job)]["spec"]["template"]
        pod = template["spec"]
        assert template["metadata"]["labels"]["dreamsuite.io/client"] == "true"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert {"requests", "limits"} <= set(c["resources"])
            tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]]
            token = next(e for e in c["env"] if e["name"] == "DREAMSUITE_TOKEN")
            assert token["valueFrom"]["secretKeyRef"]["name"] == "dreamsuite-auth"


def test_master_and_workers_agree(objects):
    master = _parse(_args(objects, "loadtest-master"))
    worker = _parse(_args(objects, "loadtest-worker"))
    workers = objects[("Job", "loadtest-worker")]["spec"]
    assert master.master and worker.worker
    assert workers["parallelism"] == workers["completions"] == master.expect_workers
    service = objects[("Service", "loadtest-master")]
    assert worker.master_host == "loadtest-master.dreamsuite.svc.cluster.local"
    assert service["spec"]["ports"][0]["port"] == master.master_port == worker.master_port
    master_labels = objects[("Job", "loadtest-master")]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= master_labels.items()
    assert objects[("Job", "loadtest-master")]["spec"]["backoffLimit"] == 0  # a missed SLO
    policy = objects[("NetworkPolicy", "loadtest-master-ingress")]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= master_labels.items()
    worker_labels = objects[("Job", "loadtest-worker")]["spec"]["template"]["metadata"]["labels"]
    (rule,) = policy["ingress"]
    assert rule["from"][0]["podSelector"]["matchLabels"].items() <= worker_labels.items()
    assert rule["ports"] == [{"port": master.master_port, "protocol": "TCP"}]


def test_the_master_runs_a_valid_plan_on_the_shipped_scenario(objects):
    container = _container(objects, "loadtest-master")
    args = _args(objects, "loadtest-master")
    mount = next(m for m in container["volumeMounts"] if m["name"] == "scenario")
    scenario_arg = next(a for a in args if a.startswith("--scenario="))
    assert scenario_arg == f"--scenario={mount['mountPath']}/scenario.yaml"
    shipped = objects[("ConfigMap", "dreamsuite-loadtest")]["data"]["scenario.yaml"]
    assert shipped == (OVERLAY / "scenario.yaml").read_text()
    local = [f"--scenario={OVERLAY / 'scenario.yaml'}" if a == scenario_arg else a for a in args]
    plan = plan_from_args(_parse(local))
    assert plan.mode == "master" and plan.targets.dream.startswith("dns:///dream.dreamsuite.svc")
    assert plan.targets.guide.startswith("dns:///guide.dreamsuite.svc")
    assert {c.kind for c in plan.scenario.active()} == {"dream", "guide_weights",
                                                         "select_neurons"}
    parse_slo(next(a for a in args if a.startswith("--slo="))[len("--slo="):])
    worker = plan_from_args(_parse(_args(objects, "loadtest-worker")))
    assert worker.mode == "worker"
