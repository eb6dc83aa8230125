"""The Kustomize overlays render, validate strictly offline and keep the suite's rules."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

OVERLAYS = ("cpu", "gpu", "dev")
WORKLOADS = ("Deployment", "StatefulSet", "Job")


def _validator() -> str:
    found = Path(sys.executable).with_name("kubernetes-validate")
    path = str(found) if found.exists() else shutil.which("kubernetes-validate")
    if path is None:
        pytest.fail("kubernetes-validate is missing: pip install -e '.[dev]'")
    return path


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_kubernetes_validate_strict(rendered, overlay):
    proc = subprocess.run([_validator(), "--strict", "-"], input=rendered[overlay],
                          capture_output=True, text=True, timeout=300)
    report = proc.stdout + proc.stderr
    # A warning (an unknown kind has no schema, so it is not checked at all) is a failure too.
    bad = [line for line in report.splitlines() if not line.startswith("INFO")]
    assert proc.returncode == 0 and not bad, f"{overlay}:\n{report}"
    assert report.count("passed for resource") >= 15, report


def _objects(manifests, overlay, kind):
    return {o["metadata"]["name"]: o for o in manifests[overlay] if o["kind"] == kind}


def _pod_specs(manifests, overlay):
    for obj in manifests[overlay]:
        if obj["kind"] in WORKLOADS:
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_non_root_with_read_only_root(manifests, overlay):
    for name, pod in _pod_specs(manifests, overlay):
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert {"requests", "limits"} <= set(c["resources"]), name
            tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{name}: /tmp is no emptyDir"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_have_grpc_probes_headless_services_and_secrets(manifests, overlay):
    deployments = _objects(manifests, overlay, "Deployment")
    services = _objects(manifests, overlay, "Service")
    for name in ("dream", "guide"):
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert "grpc" in container[probe], f"{name} {probe} is not a native gRPC probe"
        refs = {e["valueFrom"]["secretKeyRef"]["name"].rsplit("-", 1)[0]
                if overlay == "dev" else e["valueFrom"]["secretKeyRef"]["name"]
                for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
        assert refs == {"dreamsuite-s3", "dreamsuite-auth"}, refs
        assert any("configMapRef" in s for s in container["envFrom"])
    for name in ("dream", "guide", "torchserve"):
        assert services[name]["spec"]["clusterIP"] == "None", f"{name} service is not headless"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_scales_on_a_rate_and_pdbs_cover_every_deployment(manifests, overlay):
    hpas = [o for o in manifests[overlay] if o["kind"] == "HorizontalPodAutoscaler"]
    assert hpas and all(h["apiVersion"] == "autoscaling/v2" for h in hpas)
    dream = next(h for h in hpas if h["metadata"]["name"] == "dream")
    metric = dream["spec"]["metrics"][0]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"].endswith("_per_second")
    pdbs = {o["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
            for o in manifests[overlay] if o["kind"] == "PodDisruptionBudget"}
    assert all(o["apiVersion"] == "policy/v1" for o in manifests[overlay]
               if o["kind"] == "PodDisruptionBudget")
    assert set(_objects(manifests, overlay, "Deployment")) <= pdbs


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_admit_the_callers(manifests, overlay):
    policies = _objects(manifests, overlay, "NetworkPolicy")
    assert policies["default-deny-ingress"]["spec"]["podSelector"] == {}
    torchserve = policies["torchserve-ingress"]["spec"]["ingress"][0]
    assert torchserve["from"] == [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "guide"}}}]
    guide_callers = policies["guide-ingress"]["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "dream"}}} in guide_callers


def test_gpu_overlay_puts_the_gpu_in_limits(manifests):
    for overlay in OVERLAYS:
        dream = _objects(manifests, overlay, "Deployment")["dream"]
        limits = dream["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert (limits.get("nvidia.com/gpu") == "1") == (overlay == "gpu"), overlay


def test_dev_overlay_runs_minio_as_a_statefulset(manifests):
    assert "minio" in _objects(manifests, "dev", "StatefulSet")
    assert "minio-bucket" in _objects(manifests, "dev", "Job")
    assert "minio" not in _objects(manifests, "cpu", "StatefulSet")
    config = next(o for o in manifests["dev"] if o["kind"] == "ConfigMap")
    assert "minio.dreamsuite.svc" in config["data"]["DREAMSUITE_ARTIFACTS"]
