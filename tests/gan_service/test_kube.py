"""The Kubernetes launcher: the Job the GAN service submits (validated offline like the
deploy/ manifests) and :class:`KubernetesLauncher` against a real HTTP server on loopback that
answers like the API server and records every request."""

from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dreamsuite.errors import InvalidArgument, Unauthenticated, Unavailable
from services.gan import kube, manifests
from services.gan.kube import KubernetesForbidden, KubernetesLauncher
from services.gan.manifests import (
    CONFIG_PATH,
    JOB_ID_LABEL,
    job_name,
    job_state,
    training_configmap,
    training_job_manifest,
)

NS = "dreamsuite"
TOKEN = "sa-token-1"
IMAGE = "registry.example.com/dreamsuite/dreamsuite:0.1.0-gpu"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"


def _config(job_id: str = "0f1e2d3c") -> dict:
    return {"job_id": job_id, "artifacts": "s3://dreamsuite?endpoint=minio:9000&secure=false",
            "dataset": "d1", "model": "dcgan64", "steps": 500, "batch": 32, "seed": 3,
            "checkpoint_every": 100, "eval_every": 0, "lr": 0.0002, "width": None,
            "ema_decay": 0.999, "augment": "color,translation,cutout", "device": None,
            "deterministic": False, "preview_seeds": 16}


def _validate_strict(*docs: dict) -> str:
    found = Path(sys.executable).with_name("kubernetes-validate")
    tool = str(found) if found.exists() else shutil.which("kubernetes-validate")
    if tool is None:
        pytest.fail("kubernetes-validate is missing: pip install -e '.[dev]'")
    proc = subprocess.run([tool, "--strict", "-"], input=yaml.safe_dump_all(docs),
                          capture_output=True, text=True, timeout=300)
    report = proc.stdout + proc.stderr
    bad = [line for line in report.splitlines() if not line.startswith("INFO")]
    assert proc.returncode == 0 and not bad, report
    assert report.count("passed for resource") == len(docs), report
    return report


def _container(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


# --- the manifests ------------------------------------------------------------------------------

def test_the_job_runs_the_trainer_on_its_config_and_validates_strictly():
    config = _config()
    job = training_job_manifest("0f1e2d3c", config, image=IMAGE)
    configmap = training_configmap("0f1e2d3c", config)
    _validate_strict(configmap, job)
    name = job_name("0f1e2d3c")
    assert job["metadata"]["name"] == configmap["metadata"]["name"] == name == "gan-train-0f1e2d3c"
    assert job["metadata"]["namespace"] == NS
    container = _container(job)
    assert container["image"] == IMAGE
    assert container["command"] == ["python", "-m", "dreamsuite.gan.train",
                                    "--config", CONFIG_PATH]
    # The config file is the ConfigMap's train.json, read-only.
    pod = job["spec"]["template"]["spec"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert mount == {"name": "config", "mountPath": "/etc/dreamsuite", "readOnly": True}
    assert {"name": "config", "configMap": {"name": name}} in pod["volumes"]
    assert json.loads(configmap["data"]["train.json"]) == config
    assert configmap["immutable"] is True
    for obj in (job, job["spec"]["template"], configmap):
        assert obj["metadata"]["labels"][JOB_ID_LABEL] == "0f1e2d3c"


def test_every_retry_runs_the_same_job_with_the_same_config():
    config = _config()
    job = training_job_manifest("0f1e2d3c", config, image=IMAGE, backoff_limit=5)
    spec = job["spec"]
    pod = spec["template"]["spec"]
    # One pod at a time; a failed one is replaced (after it is gone) with the same template.
    assert spec["completions"] == spec["parallelism"] == 1
    assert pod["restartPolicy"] == "Never" and spec["backoffLimit"] == 5
    assert spec["podReplacementPolicy"] == "Failed"
    assert spec["podFailurePolicy"]["rules"] == [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]
    assert spec["ttlSecondsAfterFinished"] > 0
    # The trainer checkpoints on SIGTERM: time for that.
    assert pod["terminationGracePeriodSeconds"] >= 120
    # Same inputs, same manifests: a re-submission (service restart) resumes the same job.
    assert training_job_manifest("0f1e2d3c", dict(config), image=IMAGE, backoff_limit=5) == job
    assert training_configmap("0f1e2d3c", dict(config)) == training_configmap("0f1e2d3c", config)
    digest = job["metadata"]["annotations"]["dreamsuite.io/config-sha256"]
    other = training_job_manifest("0f1e2d3c", {**config, "steps": 9}, image=IMAGE)
    assert other["metadata"]["annotations"]["dreamsuite.io/config-sha256"] != digest
    env = {e["name"]: e.get("value") for e in _container(job)["env"]}
    assert env["DREAMSUITE_GAN_JOB_ID"] == "0f1e2d3c"
    with pytest.raises(InvalidArgument, match="job"):
        training_configmap("0f1e2d3c", _config("another"))


def test_store_credentials_come_from_the_secret_and_the_pod_is_locked_down():
    job = training_job_manifest("j1", _config("j1"), image=IMAGE, secret="my-s3")
    env = {e["name"]: e for e in _container(job)["env"]}
    assert env["DREAMSUITE_S3_ACCESS_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "my-s3", "key": "access-key"}}
    assert env["DREAMSUITE_S3_SECRET_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "my-s3", "key": "secret-key"}}
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "dreamsuite-trainer"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = _container(job)["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                  "capabilities": {"drop": ["ALL"]}}
    volumes = {v["name"]: v for v in pod["volumes"]}
    tmp = next(m for m in _container(job)["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in volumes[tmp["name"]]
    resources = _container(job)["resources"]
    assert set(resources) == {"requests", "limits"} and "nvidia.com/gpu" not in resources["limits"]
    assert "nodeSelector" not in pod and "tolerations" not in pod


def test_gpus_go_in_limits_and_more_processes_run_under_torchrun():
    job = training_job_manifest("j2", _config("j2"), image=IMAGE, gpus=4, nproc=4,
                                cpu="8", memory="32Gi")
    _validate_strict(job)
    container = _container(job)
    assert container["resources"]["limits"] == {"cpu": "8", "memory": "32Gi",
                                                "nvidia.com/gpu": "4"}
    assert "nvidia.com/gpu" not in container["resources"]["requests"]
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
        pod["tolerations"])
    assert container["command"] == ["torchrun", "--standalone", "--nnodes", "1",
                                    "--nproc-per-node", "4", "-m", "dreamsuite.gan.train",
                                    "--config", CONFIG_PATH]
    shm = next(m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm")
    assert {v["name"]: v for v in pod["volumes"]}[shm["name"]]["emptyDir"]["medium"] == "Memory"
    with pytest.raises(InvalidArgument):
        training_job_manifest("j2", {}, image=IMAGE, nproc=0)
    with pytest.raises(InvalidArgument):
        training_job_manifest("j2", {}, image="")


def _threads(job: dict) -> tuple[str, str]:
    env = {e["name"]: e.get("value") for e in _container(job)["env"]}
    return env["OMP_NUM_THREADS"], env["MKL_NUM_THREADS"]


@pytest.mark.parametrize("cpu, nproc, threads", [
    ("2", 1, "2"), ("1500m", 1, "1"), ("500m", 1, "1"), ("4.5", 1, "4"), ("8", 4, "2"),
    ("2", 4, "1"), ("16000m", 2, "8"),
    # every form the Kubernetes API takes for a quantity
    ("2e0", 1, "2"), ("500000u", 1, "1"), ("4000000000n", 1, "4"), ("+3", 1, "3"),
    ("0.03k", 1, "30"), ("1E1", 2, "5"), ("1.", 1, "1"), (".5", 1, "1"), ("1M", 1, "4096"),
])
def test_each_trainer_process_gets_its_share_of_the_cpu_limit_as_its_threads(cpu, nproc,
                                                                             threads):
    """Not the node's cores, which torch would take: the pod's limit over its processes."""
    job = training_job_manifest("j3", _config("j3"), image=IMAGE, cpu=cpu, nproc=nproc,
                                gpus=nproc if nproc > 1 else 0)
    assert _threads(job) == (threads, threads)
    assert _container(job)["resources"]["limits"]["cpu"] == cpu


def test_a_cpu_limit_that_is_not_a_cpu_quantity_is_refused_at_start_up():
    for cpu in ("", "two", "0", "-1", "1Gi", "0m", "1e", "2 m", "1.5.0", "1e-1000", "3x"):
        with pytest.raises(InvalidArgument, match="cpu must be a Kubernetes CPU quantity"):
            training_job_manifest("j3", {}, image=IMAGE, cpu=cpu)
    with pytest.raises(InvalidArgument, match="1500m"):
        KubernetesLauncher(IMAGE, NS, api_url="http://127.0.0.1:9", token="t", environ={
            "DREAMSUITE_GAN_JOB_CPU": "lots"})


def test_torchrun_accepts_the_command_line():
    """The flags exist in the installed torch (its parser, not a run)."""
    run = pytest.importorskip("torch.distributed.run")
    for nproc, extra in ((2, {}), (1, {"nodes": 3, "master": "gan-train-x-0.gan-train-x:29500"})):
        command = manifests.trainer_command(nproc, **extra)
        args = run.get_args_parser().parse_args(
            [a.replace("$(NODE_RANK)", "1") for a in command[1:]])
        assert args.module and args.training_script == "dreamsuite.gan.train"
        assert args.training_script_args == ["--config", CONFIG_PATH]
        assert str(args.nproc_per_node) == str(nproc)


@pytest.mark.parametrize("job_id", ["x" * 80, "Job_With.Odd/Chars", "UPPER", "-dash-"])
def test_any_job_id_gets_a_stable_valid_name(job_id):
    name = job_name(job_id)
    assert name == job_name(job_id) and name.startswith("gan-train-") and len(name) <= 63
    job = training_job_manifest(job_id, {}, image=IMAGE)
    assert job["metadata"]["annotations"][JOB_ID_LABEL] == job_id
    _validate_strict(job)
    assert job_name(job_id + "y") != name


def test_job_state_reads_the_conditions():
    def job(*conditions):
        return {"status": {"conditions": [{"type": t, "status": s} for t, s in conditions]}}
    assert job_state({}) == job_state({"status": {"active": 1}}) == "running"
    assert job_state(job(("Complete", "True"))) == "succeeded"
    assert job_state(job(("SuccessCriteriaMet", "True"))) == "succeeded"
    assert job_state(job(("Failed", "True"))) == job_state(job(("FailureTarget", "True"))) == (
        "failed")
    assert job_state(job(("Failed", "False"), ("Suspended", "True"))) == "running"


# --- a fake API server ----------------------------------------------------------------------------

class FakeApi:
    """Jobs and ConfigMaps of one namespace, kept like the API server keeps them."""

    def __init__(self):
        self.requests: list[dict] = []
        self.objects: dict[tuple[str, str], dict] = {}
        #: (method, resource) -> (HTTP status, message): the next such requests fail so.
        self.fail: dict[tuple[str, str], tuple[int, str]] = {}
        self.lock = threading.Lock()

    def handle(self, method: str, target: str, headers, body: bytes) -> tuple[int, dict]:
        url = urlsplit(target)
        data = json.loads(body) if body else None
        with self.lock:
            self.requests.append({"method": method, "path": url.path,
                                  "query": parse_qs(url.query),
                                  "auth": headers.get("Authorization"),
                                  "content_type": headers.get("Content-Type"), "body": data})
            parts = url.path.split("/")
            if url.path.startswith(JOBS):
                resource = "jobs"
            elif url.path.startswith(CONFIGMAPS):
                resource = "configmaps"
            else:
                return 404, _status(404, "no such path")
            if (method, resource) in self.fail:
                code, message = self.fail[(method, resource)]
                return code, _status(code, message)
            name = parts[-1] if parts[-1] != resource else None
            if method == "POST":
                name = data["metadata"]["name"]
                if (resource, name) in self.objects:
                    return 409, _status(409, f'{resource} "{name}" already exists', "AlreadyExists")
                obj = {**data, "metadata": {**data["metadata"], "uid": str(uuid.uuid4())},
                       "status": {}}
                self.objects[(resource, name)] = obj
                return 201, obj
            obj = self.objects.get((resource, name))
            if obj is None:
                return 404, _status(404, f'{resource} "{name}" not found', "NotFound")
            if method == "GET":
                return 200, obj
            if method == "DELETE":
                uid = ((data or {}).get("preconditions") or {}).get("uid")
                if uid and uid != obj["metadata"]["uid"]:
                    return 409, _status(409, "precondition failed: UID", "Conflict")
                if (data or {}).get("propagationPolicy") == "Foreground":
                    obj["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
                else:
                    del self.objects[(resource, name)]
                return 200, obj
            return 405, _status(405, "method not allowed")

    def job(self, name: str) -> dict:
        return self.objects[("jobs", name)]

    def calls(self) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self.requests]


def _status(code: int, message: str, reason: str = "") -> dict:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": reason, "code": code}


def _serve(api: FakeApi, context: ssl.SSLContext | None = None):
    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            code, payload = api.handle(self.command, self.path, self.headers, body)
            raw = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def launcher(api) -> KubernetesLauncher:
    return KubernetesLauncher(IMAGE, NS, api_url=api.url, token=TOKEN, gpus=1, environ={})


# --- the launcher -------------------------------------------------------------------------------

def test_start_posts_the_job_then_its_configmap_owned_by_it(api, launcher):
    config = _config("abc123")
    launcher.start("abc123", config)
    assert api.calls() == [("POST", JOBS), ("POST", CONFIGMAPS)]
    for request in api.requests:
        assert request["auth"] == f"Bearer {TOKEN}"
        assert request["content_type"] == "application/json"
        assert request["query"] == {"fieldValidation": ["Strict"]}
    job_body, configmap_body = (r["body"] for r in api.requests)
    assert job_body == launcher.job_manifest("abc123", config)
    assert _container(job_body)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    owner = configmap_body["metadata"]["ownerReferences"]
    assert owner == [{"apiVersion": "batch/v1", "kind": "Job", "name": "gan-train-abc123",
                      "uid": api.job("gan-train-abc123")["metadata"]["uid"]}]
    assert json.loads(configmap_body["data"]["train.json"]) == config
    _validate_strict(job_body, configmap_body)
    assert launcher.events("abc123") == []


def test_poll_maps_the_job_status(api, launcher):
    assert launcher.poll("nope") == "missing"
    launcher.start("j", _config("j"))
    job = api.job("gan-train-j")
    assert launcher.poll("j") == "running"
    job["status"] = {"active": 1}
    assert launcher.poll("j") == "running"
    job["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    assert launcher.poll("j") == "succeeded"
    job["status"] = {"failed": 5, "conditions": [{"type": "Failed", "status": "True"}]}
    assert launcher.poll("j") == "failed"
    assert api.requests[-1]["method"] == "GET" and api.requests[-1]["path"] == f"{JOBS}/gan-train-j"


def test_stop_deletes_the_job_in_the_foreground_with_the_grace_period(api, launcher):
    launcher.start("j", _config("j"))
    launcher.stop("j", grace=42.5)
    request = api.requests[-1]
    assert (request["method"], request["path"]) == ("DELETE", f"{JOBS}/gan-train-j")
    assert request["body"] == {"apiVersion": "v1", "kind": "DeleteOptions",
                               "propagationPolicy": "Foreground", "gracePeriodSeconds": 43}
    assert request["auth"] == f"Bearer {TOKEN}"
    # Pods still checkpointing: the Job is there, being deleted, and counts as running.
    assert launcher.poll("j") == "running"
    del api.objects[("jobs", "gan-train-j")]
    assert launcher.poll("j") == "missing"
    launcher.stop("j", grace=1)  # gone already: no error


def test_starting_a_running_job_again_follows_it(api, launcher):
    launcher.start("j", _config("j"))
    uid = api.job("gan-train-j")["metadata"]["uid"]
    del api.objects[("configmaps", "gan-train-j")]
    api.requests.clear()
    launcher.start("j", _config("j"))  # e.g. the service restarted
    assert api.job("gan-train-j")["metadata"]["uid"] == uid
    assert api.calls() == [("POST", JOBS), ("GET", f"{JOBS}/gan-train-j"), ("POST", CONFIGMAPS)]
    assert ("configmaps", "gan-train-j") in api.objects


def test_starting_a_finished_job_again_replaces_it(api, launcher):
    launcher.start("j", _config("j"))
    old = api.job("gan-train-j")
    old["status"] = {"conditions": [{"type": "Failed", "status": "True"}]}
    api.requests.clear()
    launcher.start("j", _config("j"))  # the service's restart of a failed trainer
    new = api.job("gan-train-j")
    assert new["metadata"]["uid"] != old["metadata"]["uid"] and launcher.poll("j") == "running"
    delete = next(r for r in api.requests if r["method"] == "DELETE")
    assert delete["path"] == f"{JOBS}/gan-train-j"
    assert delete["body"]["propagationPolicy"] == "Background"
    assert delete["body"]["preconditions"] == {"uid": old["metadata"]["uid"]}
    # The old ConfigMap (not yet collected) is replaced by one owned by the new Job.
    configmap = api.objects[("configmaps", "gan-train-j")]
    assert configmap["metadata"]["ownerReferences"][0]["uid"] == new["metadata"]["uid"]


def test_starting_a_job_still_being_deleted_is_unavailable(api, launcher):
    launcher.start("j", _config("j"))
    launcher.stop("j", grace=10)
    with pytest.raises(Unavailable, match="still being deleted"):
        launcher.start("j", _config("j"))


def test_a_failed_configmap_takes_the_job_back(api, launcher):
    api.fail[("POST", "configmaps")] = (422, "ConfigMap is invalid")
    with pytest.raises(InvalidArgument, match="ConfigMap is invalid"):
        launcher.start("j", _config("j"))
    assert ("jobs", "gan-train-j") not in api.objects
    assert api.calls()[-1] == ("DELETE", f"{JOBS}/gan-train-j")


@pytest.mark.parametrize(("method", "resource", "verb", "group"), [
    ("POST", "jobs", "create", "batch"), ("GET", "jobs", "get", "batch"),
    ("DELETE", "jobs", "delete", "batch"), ("POST", "configmaps", "create", '""')])
def test_forbidden_names_the_missing_rbac_permission(api, launcher, method, resource, verb,
                                                     group):
    api.fail[(method, resource)] = (403, f'{resource} is forbidden: User "system:serviceaccount:'
                                         f'dreamsuite:dreamsuite-gan" cannot {verb} resource')
    with pytest.raises(KubernetesForbidden) as caught:
        {"POST": lambda: launcher.start("j", _config("j")),
         "GET": lambda: launcher.poll("j"),
         "DELETE": lambda: launcher.stop("j", grace=1)}[method]()
    message = str(caught.value)
    assert f"may not {verb} {resource} (apiGroup {group})" in message
    assert f"namespace {NS}" in message and "dreamsuite-gan" in message
    assert isinstance(caught.value, Unavailable) and isinstance(caught.value, PermissionError)


def test_api_errors_map_to_library_errors(api, launcher):
    api.fail[("GET", "jobs")] = (401, "Unauthorized")
    with pytest.raises(Unauthenticated, match="token"):
        launcher.poll("j")
    api.fail[("GET", "jobs")] = (503, "etcd is down")
    with pytest.raises(Unavailable, match="etcd is down"):
        launcher.poll("j")
    api.fail[("POST", "jobs")] = (422, 'Job.batch "x" is invalid')
    with pytest.raises(InvalidArgument, match="is invalid"):
        launcher.start("j", _config("j"))


def test_an_unreachable_api_server_is_unavailable():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launcher = KubernetesLauncher(IMAGE, NS, api_url=f"http://127.0.0.1:{port}", token=TOKEN,
                                  environ={}, timeout=2)
    for call in (lambda: launcher.start("j", _config("j")), lambda: launcher.poll("j"),
                 lambda: launcher.stop("j", grace=1)):
        with pytest.raises(Unavailable, match="unreachable"):
            call()


def test_in_cluster_credentials_from_the_service_account(tmp_path, monkeypatch):
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("first\n")
    (account / "namespace").write_text("team-a\n")
    monkeypatch.setattr(kube, "SERVICE_ACCOUNT_DIR", account)
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "6443",
           "DREAMSUITE_GAN_IMAGE": IMAGE, "DREAMSUITE_GAN_JOB_GPUS": "2",
           "DREAMSUITE_GAN_JOB_SECRET": "s3-creds", "DREAMSUITE_GAN_JOB_BACKOFF_LIMIT": "7"}
    launcher = KubernetesLauncher(environ=env)
    assert launcher.api_url == "https://10.0.0.1:6443" and launcher.namespace == "team-a"
    job = launcher.job_manifest("j", {})
    assert job["metadata"]["namespace"] == "team-a" and job["spec"]["backoffLimit"] == 7
    container = _container(job)
    assert container["image"] == IMAGE
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["command"][0] == "torchrun"  # one process per GPU by default
    assert container["env"][3]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"
    assert _threads(job) == ("1", "1")  # the default 2 CPUs over 2 processes
    ipv6 = KubernetesLauncher(environ={**env, "KUBERNETES_SERVICE_HOST": "fd00::1"})
    assert ipv6.api_url == "https://[fd00::1]:6443"
    assert launcher._bearer() == "first"
    (account / "token").write_text("rotated\n")  # the kubelet refreshes it
    assert launcher._bearer() == "rotated"
    with pytest.raises(Unavailable, match="KUBERNETES_SERVICE_HOST"):
        KubernetesLauncher(environ={"DREAMSUITE_GAN_IMAGE": IMAGE})
    (account / "token").unlink()
    with pytest.raises(Unavailable, match="automountServiceAccountToken"):
        KubernetesLauncher(environ=env)
    with pytest.raises(InvalidArgument, match="DREAMSUITE_GAN_IMAGE"):
        KubernetesLauncher(environ={k: v for k, v in env.items() if k != "DREAMSUITE_GAN_IMAGE"})
    with pytest.raises(InvalidArgument, match="DREAMSUITE_GAN_JOB_GPUS"):
        KubernetesLauncher(environ={**env, "DREAMSUITE_GAN_JOB_GPUS": "one"}, token="t")


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "ca.crt", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_https_with_the_cluster_ca(tmp_path):
    ca, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ca, key)
    fake = FakeApi()
    server, thread = _serve(fake, context)
    url = f"https://127.0.0.1:{server.server_address[1]}"
    try:
        token_file = tmp_path / "token"
        token_file.write_text("from-file")
        trusted = KubernetesLauncher(IMAGE, NS, api_url=url, token_file=token_file, ca_file=ca,
                                     environ={})
        assert trusted.poll("j") == "missing"
        assert fake.requests[-1]["auth"] == "Bearer from-file"
        untrusted = KubernetesLauncher(IMAGE, NS, api_url=url, token="t",
                                       ca_file=tmp_path / "absent.crt", environ={}, timeout=3)
        with pytest.raises(Unavailable, match="CERTIFICATE_VERIFY_FAILED|certificate"):
            untrusted.poll("j")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
