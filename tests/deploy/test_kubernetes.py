"""The Kustomize overlays render, validate strictly offline and keep the suite's rules."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from services.gan.kube import KubernetesLauncher
from services.gan.manifests import (
    multinode_training_manifests,
    training_configmap,
    training_job_manifest,
)

OVERLAYS = ("cpu", "gpu", "dev")
WORKLOADS = ("Deployment", "StatefulSet", "Job")
EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "examples"
#: The only pod with a service-account token: the GAN service creates the trainer Jobs.
API_CLIENTS = {"gan"}


def _validator() -> str:
    found = Path(sys.executable).with_name("kubernetes-validate")
    path = str(found) if found.exists() else shutil.which("kubernetes-validate")
    if path is None:
        pytest.fail("kubernetes-validate is missing: pip install -e '.[dev]'")
    return path


def validate_strict(text: str) -> str:
    """``kubernetes-validate --strict`` of YAML ``text``; its report. A warning (an unknown
    kind has no schema, so it is not checked at all) is a failure too."""
    proc = subprocess.run([_validator(), "--strict", "-"], input=text,
                          capture_output=True, text=True, timeout=300)
    report = proc.stdout + proc.stderr
    bad = [line for line in report.splitlines() if not line.startswith("INFO")]
    assert proc.returncode == 0 and not bad, report
    return report


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_kubernetes_validate_strict(rendered, overlay):
    report = validate_strict(rendered[overlay])
    assert report.count("passed for resource") >= 22, report
    for kind, name in (("deployment", "gan"), ("role", "dreamsuite-gan"),
                       ("rolebinding", "dreamsuite-gan"), ("serviceaccount", "dreamsuite-trainer"),
                       ("networkpolicy", "gan-trainer-ingress")):
        assert f"resource {kind}/{name} " in report, f"{overlay}: {kind}/{name} not validated"


def test_strict_validation_catches_a_misspelt_job_field():
    job = training_job_manifest("typo", {}, image="example/image:1")
    job["spec"]["backofLimit"] = job["spec"].pop("backoffLimit")
    proc = subprocess.run([_validator(), "--strict", "-"], input=yaml.safe_dump(job),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "backofLimit" in proc.stdout + proc.stderr


def _objects(manifests, overlay, kind):
    return {o["metadata"]["name"]: o for o in manifests[overlay] if o["kind"] == kind}


def _pod_specs(manifests, overlay):
    for obj in manifests[overlay]:
        if obj["kind"] in WORKLOADS:
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def _secret_refs(container: dict) -> set[str]:
    """The Secrets a container's environment names (generated ones without their hash)."""
    return {re.sub(r"-[a-z0-9]{10}$", "", e["valueFrom"]["secretKeyRef"]["name"])
            for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}


def _check_pod(name: str, pod: dict, token: bool = False) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True, name
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
    assert pod["automountServiceAccountToken"] is token, name
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
def test_pods_run_non_root_with_read_only_root(manifests, overlay):
    for name, pod in _pod_specs(manifests, overlay):
        _check_pod(name, pod, token=name in API_CLIENTS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_have_grpc_probes_headless_services_and_secrets(manifests, overlay):
    deployments = _objects(manifests, overlay, "Deployment")
    services = _objects(manifests, overlay, "Service")
    for name in ("dream", "guide", "gan"):
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert "grpc" in container[probe], f"{name} {probe} is not a native gRPC probe"
        # Generated secrets (dev overlay) carry a hash suffix, except dreamsuite-s3.
        refs = _secret_refs(container)
        extra = {"dreamsuite-management-key"} if name == "gan" else set()
        assert refs == {"dreamsuite-s3", "dreamsuite-auth", *extra}, refs
        assert any("configMapRef" in s for s in container["envFrom"])
    for name in ("dream", "guide", "torchserve", "gan"):
        assert services[name]["spec"]["clusterIP"] == "None", f"{name} service is not headless"
    gan = deployments["gan"]["spec"]["template"]
    assert gan["spec"]["containers"][0]["readinessProbe"]["grpc"] == {
        "port": 50053, "service": "dreamsuite.v1.GanService"}
    assert gan["metadata"]["annotations"]["prometheus.io/port"] == "9103"


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
    # The guide service (activations) and the dream service (one-pass models), no one else.
    assert torchserve["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "guide"}}},
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "dream"}}}]
    assert torchserve["ports"] == [{"port": 7070, "protocol": "TCP"}]
    guide_callers = policies["guide-ingress"]["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "dream"}}} in guide_callers
    # The GAN service admits labelled clients like the dream service, and dreams its data sets.
    assert (policies["gan-ingress"]["spec"]["ingress"][0]["from"]
            == policies["dream-ingress"]["spec"]["ingress"][0]["from"][1:])
    assert policies["gan-ingress"]["spec"]["ingress"][0]["ports"] == [
        {"port": 50053, "protocol": "TCP"}]
    dream_callers = policies["dream-ingress"]["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gan"}}} in dream_callers
    # Trainer pods take traffic from trainer pods only (multi-pod training), on any port.
    trainer = policies["gan-trainer-ingress"]["spec"]
    assert trainer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "gan-trainer"}}
    assert trainer["ingress"] == [{"from": [{"podSelector": trainer["podSelector"]}]}]
    if overlay == "dev":
        minio_callers = policies["minio-ingress"]["spec"]["ingress"][0]["from"]
        for name in ("gan-trainer",):
            assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": name}}} in (
                minio_callers)
        # The GAN service pods are services: admitted with them.
        assert {"podSelector": {"matchLabels": {"app.kubernetes.io/component": "service"}}} in (
            minio_callers)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gan_service_reaches_torchserve_management_with_the_secret_key(manifests,
                                                                               overlay):
    policies = _objects(manifests, overlay, "NetworkPolicy")
    # Every policy that admits anything to port 8081 admits the GAN pods only.
    to_8081 = [rule for policy in policies.values() for rule in policy["spec"].get("ingress", [])
               if any(p.get("port") == 8081 for p in rule.get("ports", []))]
    assert to_8081 and all(rule["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gan"}}}] for rule in to_8081)
    management = policies["torchserve-management-ingress"]["spec"]
    assert management["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "torchserve"}}
    assert management["ingress"][0]["ports"] == [{"port": 8081, "protocol": "TCP"}]
    # No rule without ports (all ports) lets anyone else near TorchServe.
    selects_torchserve = [p for p in policies.values() if p["spec"]["podSelector"] in (
        {}, {"matchLabels": {"app.kubernetes.io/name": "torchserve"}})]
    assert all(rule.get("ports") for p in selects_torchserve for rule in p["spec"].get(
        "ingress", []))

    deployments = _objects(manifests, overlay, "Deployment")
    pod = deployments["torchserve"]["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    gateway = containers["management-gateway"]
    assert gateway["command"][-1] == "dreamsuite.torchserve_gateway"
    assert gateway["ports"] == [{"name": "management", "containerPort": 8081, "protocol": "TCP"}]
    assert _secret_refs(gateway) == {"dreamsuite-management-key"}
    assert _secret_refs(containers["torchserve"]) == set()  # TorchServe never sees the key
    # One writable model store per pod, seeded from the image, shared with the gateway.
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["model-store"]
    for container in (containers["torchserve"], gateway, pod["initContainers"][0]):
        assert "model-store" in {m["name"] for m in container["volumeMounts"]}
    ports = _objects(manifests, overlay, "Service")["torchserve"]["spec"]["ports"]
    assert {"name": "management", "port": 8081, "targetPort": "management"} in ports

    gan = deployments["gan"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in gan["env"]}
    assert env["DREAMSUITE_TORCHSERVE_MANAGEMENT"]["value"] == (
        "http://torchserve.dreamsuite.svc.cluster.local:8081")
    key = env["DREAMSUITE_TORCHSERVE_MANAGEMENT_KEY"]["valueFrom"]["secretKeyRef"]
    assert re.sub(r"-[a-z0-9]{10}$", "", key["name"]) == "dreamsuite-management-key"
    assert float(env["DREAMSUITE_TORCHSERVE_RESYNC"]["value"]) > 0  # pods started later
    # Only the GAN service and the gateway hold the key.
    holders = {name for name, spec in _pod_specs(manifests, overlay)
               for c in spec["containers"] if "dreamsuite-management-key" in _secret_refs(c)}
    assert holders == {"gan", "torchserve"}
    if overlay == "dev":
        secrets = {re.sub(r"-[a-z0-9]{10}$", "", n) for n in _objects(manifests, overlay, "Secret")}
        assert "dreamsuite-management-key" in secrets


def test_torchserve_config_keeps_management_on_loopback_behind_the_gateway():
    path = Path(__file__).resolve().parents[2] / "deploy" / "torchserve" / "config.properties"
    props = dict(line.split("=", 1) for line in path.read_text().splitlines()
                 if line and not line.startswith("#"))
    assert props["management_address"] == "http://127.0.0.1:8085"
    assert props["grpc_management_address"] == "127.0.0.1"
    assert props["enable_model_api"] == "true"


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


# --- the GAN service and its trainer Jobs ------------------------------------------------------

def _gan_env(manifests, overlay) -> dict[str, str]:
    gan = _objects(manifests, overlay, "Deployment")["gan"]
    container = gan["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env.update({k: v for k, v in next(o for o in manifests[overlay] if o["kind"] == "ConfigMap"
                                      and o["metadata"]["name"].startswith("dreamsuite-config"))
                ["data"].items()})
    return env


def _submitted_job(manifests, overlay) -> dict:
    """The Job the GAN service of ``overlay`` would submit, from its rendered environment."""
    env = _gan_env(manifests, overlay)
    launcher = KubernetesLauncher(namespace="dreamsuite", api_url="http://127.0.0.1:9",
                                  token="unused", environ=env)
    config = {"job_id": "0123abcd", "artifacts": env["DREAMSUITE_ARTIFACTS"],
              "dataset": "d1", "model": "dcgan64", "steps": 100}
    return launcher.job_manifest("0123abcd", config)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gan_service_runs_one_replica_that_launches_kubernetes_jobs(manifests, overlay):
    gan = _objects(manifests, overlay, "Deployment")["gan"]
    assert gan["spec"]["replicas"] == 1 and gan["spec"]["strategy"] == {"type": "Recreate"}
    assert "gan" not in {h["spec"]["scaleTargetRef"]["name"] for h in manifests[overlay]
                         if h["kind"] == "HorizontalPodAutoscaler"}
    pod = gan["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "dreamsuite-gan"
    env = _gan_env(manifests, overlay)
    assert env["DREAMSUITE_GAN_LAUNCHER"] == "kubernetes"
    assert env["DREAMSUITE_DREAM"].startswith("dream.") and env["DREAMSUITE_GAN_PORT"] == "50053"
    namespace = next(e for e in pod["containers"][0]["env"]
                     if e["name"] == "DREAMSUITE_GAN_NAMESPACE")
    assert namespace["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # The trainer image is the dream service's, after the overlay's `images:`.
    dream = _objects(manifests, overlay, "Deployment")["dream"]
    assert env["DREAMSUITE_GAN_IMAGE"] == dream["spec"]["template"]["spec"]["containers"][0][
        "image"]
    assert env["DREAMSUITE_GAN_IMAGE"].startswith("registry.example.com/")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gan_service_may_manage_jobs_and_configmaps(manifests, overlay):
    roles = _objects(manifests, overlay, "Role")
    assert set(roles) == {"dreamsuite-gan"}
    assert not [o for o in manifests[overlay] if o["kind"] in ("ClusterRole",
                                                               "ClusterRoleBinding")]
    rules = {(g, r): set(rule["verbs"]) for rule in roles["dreamsuite-gan"]["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}
    verbs = {"create", "get", "list", "watch", "delete"}
    assert rules == {("batch", "jobs"): verbs, ("", "configmaps"): verbs}
    binding = _objects(manifests, overlay, "RoleBinding")["dreamsuite-gan"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "dreamsuite-gan"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "dreamsuite-gan",
                                    "namespace": "dreamsuite"}]
    accounts = _objects(manifests, overlay, "ServiceAccount")
    assert accounts["dreamsuite-trainer"]["automountServiceAccountToken"] is False
    assert accounts["dreamsuite"]["automountServiceAccountToken"] is False
    tokens = {name for name, pod in _pod_specs(manifests, overlay)
              if pod["automountServiceAccountToken"]}
    assert tokens == API_CLIENTS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_trainer_job_the_service_submits_validates_and_fits_the_overlay(manifests, overlay):
    job = _submitted_job(manifests, overlay)
    validate_strict(yaml.safe_dump(job))
    pod = job["spec"]["template"]["spec"]
    _check_pod("trainer", pod)
    container = pod["containers"][0]
    dream = _objects(manifests, overlay, "Deployment")["dream"]
    assert container["image"] == dream["spec"]["template"]["spec"]["containers"][0]["image"]
    limits = container["resources"]["limits"]
    assert (limits.get("nvidia.com/gpu") == "1") == (overlay == "gpu"), overlay
    assert ("tolerations" in pod) == (overlay == "gpu")
    assert pod["serviceAccountName"] in _objects(manifests, overlay, "ServiceAccount")
    # The Secret it names exists under that name where the overlay ships one (dev: no hash).
    secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]
               if "secretKeyRef" in e.get("valueFrom", {})}
    assert secrets == {"dreamsuite-s3"}
    # torch's threads: the pod's CPU limit, not the node's cores.
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert 1 <= int(env["OMP_NUM_THREADS"]) <= max(1, float(limits["cpu"].removesuffix("m")) / (
        1000 if limits["cpu"].endswith("m") else 1)), (overlay, limits)
    if overlay == "dev":
        assert "dreamsuite-s3" in _objects(manifests, overlay, "Secret")
        assert container["resources"]["requests"] == {"cpu": "1", "memory": "4Gi"}
        assert env["OMP_NUM_THREADS"] == "1"


# --- examples ------------------------------------------------------------------------------------

def _example(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]


def _example_config(job_id: str) -> dict:
    return {"job_id": job_id,
            "artifacts": "s3://dreamsuite?endpoint=minio.dreamsuite.svc.cluster.local:9000"
                         "&secure=false",
            "dataset": "example", "model": "dcgan64", "steps": 2000, "batch": 32, "seed": 0,
            "checkpoint_every": 200, "eval_every": 0, "lr": 0.0002, "width": None,
            "ema_decay": 0.999, "augment": "color,translation,cutout", "device": None,
            "deterministic": False, "preview_seeds": 16}


EXAMPLE_OPTIONS = {"image": "registry.example.com/dreamsuite/dreamsuite:0.1.0-gpu", "gpus": 1,
                   "cpu": "4", "memory": "16Gi"}


@pytest.mark.parametrize("name", ["train-job.yaml", "train-multinode.yaml"])
def test_examples_pass_kubernetes_validate_strict(name):
    docs = _example(name)
    report = validate_strict((EXAMPLES / name).read_text())
    assert report.count("passed for resource") == len(docs), report
    for doc in docs:
        assert doc["metadata"]["namespace"] == "dreamsuite"
        if doc["kind"] == "Job":
            _check_pod(doc["metadata"]["name"], doc["spec"]["template"]["spec"])
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert labels["app.kubernetes.io/name"] == "gan-trainer"  # gan-trainer-ingress


def test_the_single_pod_example_is_what_the_service_submits():
    configmap, job = _example("train-job.yaml")
    config = _example_config("example")
    assert configmap == training_configmap("example", config), "regenerate the example"
    assert job == training_job_manifest("example", config, **EXAMPLE_OPTIONS), (
        "regenerate deploy/k8s/examples/train-job.yaml from training_job_manifest")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:3] == ["python", "-m", "dreamsuite.gan.train"]
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 1
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"name": "OMP_NUM_THREADS", "value": "4"} in container["env"]  # cpu: "4"


def test_the_multinode_example_is_an_indexed_job_with_a_rendezvous_service():
    docs = _example("train-multinode.yaml")
    expected = multinode_training_manifests("example-multinode",
                                            _example_config("example-multinode"), nodes=2,
                                            nproc=1, **EXAMPLE_OPTIONS)
    assert docs == expected, "regenerate deploy/k8s/examples/train-multinode.yaml"
    configmap, service, job = docs
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 2
    pod = spec["template"]["spec"]
    name = job["metadata"]["name"]
    assert pod["subdomain"] == service["metadata"]["name"] == name
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    labels = spec["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    container = pod["containers"][0]
    command = container["command"]
    arg = dict(zip(command[1::], command[2::], strict=False))
    assert command[0] == "torchrun" and arg["--nnodes"] == "2"
    assert arg["--node-rank"] == "$(NODE_RANK)"
    assert arg["--master-addr"] == f"{name}-0.{name}"
    assert arg["--master-port"] == str(service["spec"]["ports"][0]["port"])
    rank = next(e for e in container["env"] if e["name"] == "NODE_RANK")
    assert rank["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']")
    assert pod["volumes"][0] == {"name": "config", "configMap": {"name": configmap["metadata"][
        "name"]}}
