"""Training jobs as Kubernetes Jobs: the manifests, and :class:`KubernetesLauncher`, the
:class:`~services.gan.launchers.Launcher` that submits them through the Kubernetes REST API.

One training job is one ``batch/v1`` Job (one pod) plus one immutable ConfigMap holding its
``TrainConfig`` (``/etc/dreamsuite/train.json`` in the pod), both named :func:`job_name` of the
job id. A pod that dies is replaced by the Job controller up to ``backoffLimit`` times with the
same ConfigMap, so every retry runs the same job id and config and resumes from the store's
latest checkpoint; disruptions (eviction, preemption, drain) do not count toward the limit. The
ConfigMap is owned by the Job, so Kubernetes deletes it with the Job (``stop``, or
``ttlSecondsAfterFinished``).

The launcher talks to the API server with the pod's service-account credentials
(``/var/run/secrets/kubernetes.io/serviceaccount``: token, CA, namespace; the token is re-read
at every request because the kubelet rotates it) at ``https://$KUBERNETES_SERVICE_HOST:
$KUBERNETES_SERVICE_PORT``, with the standard library only. It needs, in its namespace, the RBAC
verbs create, get, delete on ``batch/jobs`` and ``configmaps`` (the Role ``dreamsuite-gan`` in
``deploy/k8s/base/gan.yaml``). The trainer reports progress through the store
(``jobs/<id>/status.json``), so :meth:`KubernetesLauncher.events` returns nothing.

Settings of the submitted Jobs not passed to the constructor come from the environment
(default in brackets):

- ``DREAMSUITE_GAN_IMAGE``: the trainer image (required);
- ``DREAMSUITE_GAN_NAMESPACE``: namespace of the Jobs (the pod's own, else ``dreamsuite``);
- ``DREAMSUITE_GAN_JOB_GPUS``: ``nvidia.com/gpu`` per pod, in limits (0);
- ``DREAMSUITE_GAN_JOB_NPROC``: trainer processes per pod, > 1 under ``torchrun`` (GPUs or 1);
- ``DREAMSUITE_GAN_JOB_CPU`` / ``DREAMSUITE_GAN_JOB_MEMORY``: request = limit (2 / 8Gi);
- ``DREAMSUITE_GAN_JOB_SECRET``: Secret with keys ``access-key``, ``secret-key``
  (dreamsuite-s3);
- ``DREAMSUITE_GAN_JOB_SERVICE_ACCOUNT``: the pods' service account (dreamsuite-trainer);
- ``DREAMSUITE_GAN_JOB_BACKOFF_LIMIT``: pod retries before the Job fails (4);
- ``DREAMSUITE_GAN_JOB_TTL``: seconds a finished Job is kept (86400);
- ``DREAMSUITE_GAN_JOB_GRACE``: the pods' terminationGracePeriodSeconds (300).

The Jobs use ``podFailurePolicy`` and ``podReplacementPolicy``: Kubernetes 1.29 or later.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import math
import os
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dreamsuite.errors import (
    InvalidArgument,
    NotFound,
    RemoteError,
    Unauthenticated,
    Unavailable,
    shorten,
)

__all__ = [
    "CONFIG_PATH",
    "JOB_ID_LABEL",
    "KubernetesForbidden",
    "KubernetesLauncher",
    "job_name",
    "job_state",
    "multinode_training_manifests",
    "trainer_command",
    "training_configmap",
    "training_job_manifest",
]

log = logging.getLogger(__name__)

#: Where the trainer pod reads its ``TrainConfig`` (a ConfigMap volume).
CONFIG_PATH = "/etc/dreamsuite/train.json"
TRAINER_MODULE = "dreamsuite.gan.train"
#: Label (and annotation, unshortened) carrying the job id on the Job, its pods and ConfigMap.
JOB_ID_LABEL = "dreamsuite.io/job-id"
TRAINER_NAME = "gan-trainer"
NAME_PREFIX = "gan-train-"
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_MAX_NAME = 63  # the Job controller copies the name into a label of every pod


class KubernetesForbidden(Unavailable, PermissionError):
    """The API server refused a call (HTTP 403): the service account lacks an RBAC permission,
    which the message names."""


class _Conflict(Exception):
    """HTTP 409: the object exists already (handled inside :meth:`KubernetesLauncher.start`)."""


# --- manifests ------------------------------------------------------------------------------

def job_name(job_id: str) -> str:
    """The name of the Job and ConfigMap of ``job_id``: ``gan-train-<id>`` when the id is a
    short DNS label, else a sanitised, shortened id with a hash of the original (stable)."""
    if not job_id:
        raise InvalidArgument("job_id is empty")
    name = NAME_PREFIX + job_id
    if len(name) <= _MAX_NAME and _DNS_LABEL.fullmatch(name):
        return name
    digest = hashlib.sha256(job_id.encode()).hexdigest()[:10]
    clean = re.sub(r"[^a-z0-9-]+", "-", job_id.lower()).strip("-")
    clean = clean[:_MAX_NAME - len(NAME_PREFIX) - len(digest) - 1].strip("-")
    return f"{NAME_PREFIX}{clean}-{digest}" if clean else f"{NAME_PREFIX}{digest}"


def _job_label(job_id: str) -> str:
    if len(job_id) <= 63 and _LABEL_VALUE.fullmatch(job_id):
        return job_id
    return job_name(job_id)[len(NAME_PREFIX):]


def _labels(job_id: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": TRAINER_NAME,
        "app.kubernetes.io/component": "trainer",
        "app.kubernetes.io/part-of": "dreamsuite",
        "app.kubernetes.io/managed-by": "dreamsuite-gan",
        JOB_ID_LABEL: _job_label(job_id),
    }


def _config_text(job_id: str, config: Mapping[str, Any]) -> str:
    if config.get("job_id", job_id) != job_id:
        raise InvalidArgument(f"the config is for job {shorten(config['job_id'])!r}, "
                              f"not {shorten(job_id)!r}")
    return json.dumps({**config, "job_id": job_id}, indent=2, sort_keys=True) + "\n"


def trainer_command(nproc: int = 1, config_path: str = CONFIG_PATH, *, nodes: int = 1,
                    master: str = "") -> list[str]:
    """The trainer's command line: the module itself, or ``torchrun`` with ``nproc`` processes
    in this pod (one per GPU); with ``nodes`` > 1, ``torchrun`` of one of ``nodes`` pods that
    meet at ``master`` (HOST:PORT of node 0), its rank in ``$(NODE_RANK)``."""
    if nproc < 1 or nodes < 1:
        raise InvalidArgument(f"nproc and nodes must be >= 1, not {nproc} and {nodes}")
    tail = ["-m", TRAINER_MODULE, "--config", config_path]
    if nodes > 1:
        host, _, port = master.rpartition(":")
        if not host or not port.isdigit():
            raise InvalidArgument(f"master must be HOST:PORT, not {master!r}")
        return ["torchrun", "--nnodes", str(nodes), "--nproc-per-node", str(nproc),
                "--node-rank", "$(NODE_RANK)", "--master-addr", host, "--master-port", port,
                *tail]
    if nproc == 1:
        return ["python", *tail]
    return ["torchrun", "--standalone", "--nnodes", "1", "--nproc-per-node", str(nproc), *tail]


def training_configmap(job_id: str, config: Mapping[str, Any], *,
                       namespace: str = "dreamsuite") -> dict:
    """The immutable ConfigMap holding ``config`` (``TrainConfig.to_dict()``) as ``train.json``."""
    name = job_name(job_id)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels(job_id),
                     "annotations": {JOB_ID_LABEL: job_id}},
        "immutable": True,
        "data": {Path(CONFIG_PATH).name: _config_text(job_id, config)},
    }


def training_job_manifest(job_id: str, config: Mapping[str, Any], *, image: str,
                          namespace: str = "dreamsuite", secret: str = "dreamsuite-s3",
                          gpus: int = 0, nproc: int = 1,
                          service_account: str = "dreamsuite-trainer",
                          cpu: str = "2", memory: str = "8Gi", backoff_limit: int = 4,
                          ttl_seconds: int = 86400, grace_seconds: int = 300,
                          active_deadline_seconds: int | None = None,
                          tmp_size: str = "4Gi", shm_size: str = "1Gi") -> dict:
    """The ``batch/v1`` Job that trains ``job_id`` with ``config`` (read from the ConfigMap of
    :func:`training_configmap`, which must exist under the same name).

    One pod, ``restartPolicy: Never``; a failed pod is replaced (``backoffLimit`` times, pod
    disruptions not counted, never while the old pod still terminates) and the new trainer
    resumes from the store's latest checkpoint. On SIGTERM the trainer checkpoints, so
    ``grace_seconds`` must cover writing one. ``gpus`` > 0 puts ``nvidia.com/gpu`` in limits
    and schedules on GPU nodes; ``nproc`` > 1 runs ``torchrun --nproc-per-node nproc``."""
    if not image:
        raise InvalidArgument("the trainer image is empty (set DREAMSUITE_GAN_IMAGE)")
    if gpus < 0:
        raise InvalidArgument(f"gpus must be >= 0, not {gpus}")
    if backoff_limit < 0 or ttl_seconds < 0 or grace_seconds < 0:
        raise InvalidArgument("backoff_limit, ttl_seconds and grace_seconds must be >= 0")
    name = job_name(job_id)
    labels = _labels(job_id)
    annotations = {
        JOB_ID_LABEL: job_id,
        "dreamsuite.io/config-sha256": hashlib.sha256(
            _config_text(job_id, config).encode()).hexdigest(),
    }
    resources: dict[str, dict[str, str]] = {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"cpu": cpu, "memory": memory},
    }
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # SIGTERM (stop, eviction, drain): the trainer writes a checkpoint, then exits.
        "terminationGracePeriodSeconds": grace_seconds,
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [{
            "name": "trainer",
            "image": image,
            "command": trainer_command(nproc),
            "env": [
                {"name": "DREAMSUITE_GAN_JOB_ID", "value": job_id},
                {"name": "PYTHONUNBUFFERED", "value": "1"},
                {"name": "XDG_CACHE_HOME", "value": "/tmp/cache"},
                {"name": "DREAMSUITE_S3_ACCESS_KEY",
                 "valueFrom": {"secretKeyRef": {"name": secret, "key": "access-key"}}},
                {"name": "DREAMSUITE_S3_SECRET_KEY",
                 "valueFrom": {"secretKeyRef": {"name": secret, "key": "secret-key"}}},
            ],
            "resources": resources,
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            },
            "volumeMounts": [
                {"name": "config", "mountPath": str(Path(CONFIG_PATH).parent), "readOnly": True},
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "shm", "mountPath": "/dev/shm"},
            ],
        }],
        "volumes": [
            {"name": "config", "configMap": {"name": name}},
            {"name": "tmp", "emptyDir": {"sizeLimit": tmp_size}},
            # torch's worker processes and NCCL share memory through /dev/shm.
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}},
        ],
    }
    if gpus > 0:
        resources["limits"]["nvidia.com/gpu"] = str(gpus)
        pod["nodeSelector"] = {"nvidia.com/gpu.present": "true"}
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists",
                               "effect": "NoSchedule"}]
    spec: dict[str, Any] = {
        "completions": 1,
        "parallelism": 1,
        "backoffLimit": backoff_limit,
        "ttlSecondsAfterFinished": ttl_seconds,
        # A replacement pod starts only once the old one is gone: never two trainers writing.
        "podReplacementPolicy": "Failed",
        "podFailurePolicy": {"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]},
        "template": {"metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                     "spec": pod},
    }
    if active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels,
                     "annotations": annotations},
        "spec": spec,
    }


def multinode_training_manifests(job_id: str, config: Mapping[str, Any], *, nodes: int,
                                 port: int = 29500, **options: Any) -> list[dict]:
    """ConfigMap, headless Service and indexed Job of a training over ``nodes`` pods
    (``options``: those of :func:`training_job_manifest`; ``nproc`` processes per pod).

    Pod ``i`` (``completionMode: Indexed``) is ``<name>-<i>.<name>`` in DNS through the
    Service; ``torchrun`` takes ``--node-rank`` from the completion index and meets node 0 at
    ``port``. A failed pod makes the others fail at their next collective; the Job replaces
    them (``backoffLimit`` counts every pod) and each resumes from the latest checkpoint."""
    if nodes < 2:
        raise InvalidArgument(f"a multi-node training needs nodes >= 2, not {nodes}")
    job = training_job_manifest(job_id, config, **options)
    name = job["metadata"]["name"]
    if len(f"{name}-{nodes - 1}") > _MAX_NAME:
        raise InvalidArgument(f"job id {shorten(job_id)!r} is too long for {nodes} pod host names")
    namespace = job["metadata"]["namespace"]
    spec = job["spec"] = {"completionMode": "Indexed", "completions": nodes,
                          "parallelism": nodes,
                          **{k: v for k, v in job["spec"].items()
                             if k not in ("completions", "parallelism")}}
    pod = spec["template"]["spec"]
    pod["subdomain"] = name
    container = pod["containers"][0]
    container["command"] = trainer_command(options.get("nproc", 1), nodes=nodes,
                                           master=f"{name}-0.{name}:{port}")
    container["env"].insert(0, {"name": "NODE_RANK", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}})
    container["ports"] = [{"name": "rendezvous", "containerPort": port, "protocol": "TCP"}]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels(job_id)},
        "spec": {
            "clusterIP": "None",
            # Node 0 must be found before any trainer reports ready (none does: no probes).
            "publishNotReadyAddresses": True,
            "selector": {JOB_ID_LABEL: _job_label(job_id),
                         "app.kubernetes.io/name": TRAINER_NAME},
            "ports": [{"name": "rendezvous", "port": port, "targetPort": port,
                       "protocol": "TCP"}],
        },
    }
    configmap = training_configmap(job_id, config, namespace=namespace)
    return [configmap, service, job]


def job_state(job: Mapping[str, Any]) -> str:
    """``succeeded``, ``failed`` or ``running`` (pending and terminating included) for a Job
    object as the API server returns it."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "succeeded"
        if condition.get("type") in ("Failed", "FailureTarget"):
            return "failed"
    return "running"


def _owned_by(obj: dict, job: Mapping[str, Any]) -> dict:
    meta = job.get("metadata") or {}
    if not meta.get("uid"):
        return obj
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"]}
    return {**obj, "metadata": {**obj["metadata"], "ownerReferences": [owner]}}


# --- the launcher ---------------------------------------------------------------------------

def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise InvalidArgument(f"{name}={shorten(text)!r} is not an integer") from None


class KubernetesLauncher:
    """Training jobs as Kubernetes Jobs (see the module's documentation).

    In a pod, ``KubernetesLauncher(image=..., namespace=...)`` is enough; ``api_url``, ``token``
    (or ``token_file``) and ``ca_file`` point it elsewhere (tests: a plain ``http://`` URL needs
    no CA). Jobs keep running when the service stops: there is no ``close``."""

    def __init__(self, image: str | None = None, namespace: str | None = None, *,
                 api_url: str | None = None, token: str | None = None,
                 token_file: str | Path | None = None, ca_file: str | Path | None = None,
                 secret: str | None = None, gpus: int | None = None, nproc: int | None = None,
                 service_account: str | None = None, cpu: str | None = None,
                 memory: str | None = None, backoff_limit: int | None = None,
                 ttl_seconds: int | None = None, grace_seconds: int | None = None,
                 timeout: float = 10.0, environ: Mapping[str, str] | None = None):
        env = os.environ if environ is None else environ
        sa = SERVICE_ACCOUNT_DIR
        self.image = image or env.get("DREAMSUITE_GAN_IMAGE", "")
        if not self.image:
            raise InvalidArgument("the Kubernetes launcher needs the trainer image "
                                  "(DREAMSUITE_GAN_IMAGE)")
        if namespace is None:
            namespace = env.get("DREAMSUITE_GAN_NAMESPACE") or _read(sa / "namespace") or (
                "dreamsuite")
        self.namespace = namespace.strip()
        gpus = _env_int(env, "DREAMSUITE_GAN_JOB_GPUS", 0) if gpus is None else gpus
        nproc = (_env_int(env, "DREAMSUITE_GAN_JOB_NPROC", max(gpus, 1)) if nproc is None
                 else nproc)
        self.job_options: dict[str, Any] = {
            "secret": secret or env.get("DREAMSUITE_GAN_JOB_SECRET") or "dreamsuite-s3",
            "gpus": gpus,
            "nproc": nproc,
            "service_account": (service_account or env.get("DREAMSUITE_GAN_JOB_SERVICE_ACCOUNT")
                                or "dreamsuite-trainer"),
            "cpu": cpu or env.get("DREAMSUITE_GAN_JOB_CPU") or "2",
            "memory": memory or env.get("DREAMSUITE_GAN_JOB_MEMORY") or "8Gi",
            "backoff_limit": (_env_int(env, "DREAMSUITE_GAN_JOB_BACKOFF_LIMIT", 4)
                              if backoff_limit is None else backoff_limit),
            "ttl_seconds": (_env_int(env, "DREAMSUITE_GAN_JOB_TTL", 86400)
                            if ttl_seconds is None else ttl_seconds),
            "grace_seconds": (_env_int(env, "DREAMSUITE_GAN_JOB_GRACE", 300)
                              if grace_seconds is None else grace_seconds),
        }
        # Fail at start-up, not at the first job, on settings the manifest refuses.
        training_job_manifest("check", {}, image=self.image, namespace=self.namespace,
                              **self.job_options)
        trainer_command(nproc)

        if api_url is None:
            host = env.get("KUBERNETES_SERVICE_HOST")
            port = env.get("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                raise Unavailable("not inside a Kubernetes pod (KUBERNETES_SERVICE_HOST is unset): "
                                  "the kubernetes launcher needs the API server")
            api_url = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        self.api_url = api_url.rstrip("/")
        self._token = token
        self._token_file = Path(token_file) if token_file else sa / "token"
        if token is None and not self._token_file.is_file():
            raise Unavailable(f"no service-account token at {self._token_file}: the GAN pod needs "
                              "automountServiceAccountToken: true and the dreamsuite-gan account")
        self.timeout = timeout
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
        if self.api_url.startswith("https:"):
            ca = Path(ca_file) if ca_file else sa / "ca.crt"
            context = ssl.create_default_context(cafile=str(ca) if ca.is_file() else None)
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)

    # --- the Launcher protocol ----------------------------------------------------------

    def start(self, job_id: str, config: dict) -> None:
        """Create the Job, then its ConfigMap (owned by the Job, so deleted with it; the pod
        waits for the ConfigMap). A running Job of the same id is left alone (a restarted
        service resumes following it); a finished one is replaced, so the trainer resumes from
        the latest checkpoint."""
        job = self.job_manifest(job_id, config)
        configmap = training_configmap(job_id, config, namespace=self.namespace)
        name = job["metadata"]["name"]
        try:
            created = self._post(self._jobs(), job, "jobs")
        except _Conflict:
            created, running = self._replace_existing(job_id, name, job)
            if created is None:  # that job runs already: make sure its config is there
                with contextlib.suppress(_Conflict):
                    self._post(self._configmaps(), _owned_by(configmap, running), "configmaps")
                return
        try:
            try:
                self._post(self._configmaps(), _owned_by(configmap, created), "configmaps")
            except _Conflict:  # left by an earlier Job of this id, not yet collected
                with contextlib.suppress(NotFound):
                    self._delete(f"{self._configmaps()}/{name}", "configmaps", {})
                self._post(self._configmaps(), _owned_by(configmap, created), "configmaps")
        except BaseException:
            try:
                self._delete(f"{self._jobs()}/{name}", "jobs", {"propagationPolicy": "Background"})
            except Exception as exc:  # the original error matters more
                log.warning("cannot delete the Job %s after a failed start: %s", name, exc)
            raise
        log.info("submitted Kubernetes Job %s/%s for job %s", self.namespace, name, job_id)

    def poll(self, job_id: str) -> str:
        job = self._get_job(job_name(job_id))
        return "missing" if job is None else job_state(job)

    def stop(self, job_id: str, *, grace: float) -> None:
        """Delete the Job (foreground: its pods first). Each pod gets SIGTERM, checkpoints and
        exits; Kubernetes deletes the pods of a Job with their own
        ``terminationGracePeriodSeconds`` (the ``grace`` sent here is not passed on), which
        is why the Jobs carry a generous one. A Job already gone is no error."""
        options = {"propagationPolicy": "Foreground",
                   "gracePeriodSeconds": max(0, math.ceil(grace))}
        with contextlib.suppress(NotFound):
            self._delete(f"{self._jobs()}/{job_name(job_id)}", "jobs", options)

    def events(self, job_id: str) -> list[dict]:
        """Nothing: the trainer's events reach the service through ``jobs/<id>/status.json``."""
        return []

    # --- helpers ------------------------------------------------------------------------

    def job_manifest(self, job_id: str, config: Mapping[str, Any]) -> dict:
        """The Job :meth:`start` submits for ``job_id``."""
        return training_job_manifest(job_id, config, image=self.image, namespace=self.namespace,
                                     **self.job_options)

    def _jobs(self) -> str:
        return f"/apis/batch/v1/namespaces/{urllib.parse.quote(self.namespace)}/jobs"

    def _configmaps(self) -> str:
        return f"/api/v1/namespaces/{urllib.parse.quote(self.namespace)}/configmaps"

    def _get_job(self, name: str) -> dict | None:
        try:
            return self._request("GET", f"{self._jobs()}/{name}", None, "jobs")
        except NotFound:
            return None

    def _replace_existing(self, job_id: str, name: str, job: dict) -> tuple[dict | None, dict]:
        """After a 409: ``(None, existing)`` when the existing Job still runs, else
        ``(created, {})``, the Job created in place of the finished one."""
        existing = self._get_job(name)
        if existing is not None:
            meta = existing.get("metadata") or {}
            if meta.get("deletionTimestamp"):
                raise Unavailable(f"job {shorten(job_id)}: its Kubernetes Job {name} is still being "
                                  "deleted (its pod checkpoints first); start it again shortly")
            if job_state(existing) == "running":
                log.info("Kubernetes Job %s of job %s runs already; following it", name, job_id)
                return None, existing
            options = {"propagationPolicy": "Background"}
            if meta.get("uid"):
                options["preconditions"] = {"uid": meta["uid"]}
            with contextlib.suppress(NotFound, _Conflict):  # gone, or replaced meanwhile
                self._delete(f"{self._jobs()}/{name}", "jobs", options)
        try:
            return self._post(self._jobs(), job, "jobs"), {}
        except _Conflict:
            raise Unavailable(f"job {shorten(job_id)}: a Kubernetes Job {name} is in the way; "
                              "start it again shortly") from None

    def _post(self, path: str, body: dict, resource: str) -> dict:
        return self._request("POST", f"{path}?fieldValidation=Strict", body, resource)

    def _delete(self, path: str, resource: str, options: dict) -> dict:
        body = {"apiVersion": "v1", "kind": "DeleteOptions", **options}
        return self._request("DELETE", path, body, resource)

    def _bearer(self) -> str:
        if self._token is not None:
            return self._token
        try:  # re-read: the kubelet rotates projected tokens
            return self._token_file.read_text().strip()
        except OSError as exc:
            raise Unavailable(f"cannot read the service-account token {self._token_file}: "
                              f"{exc}") from None

    def _request(self, method: str, path: str, body: dict | None, resource: str) -> dict:
        verb = {"POST": "create", "GET": "get", "DELETE": "delete"}.get(method, method.lower())
        request = urllib.request.Request(
            self.api_url + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self._bearer()}",
                     "Accept": "application/json", "Content-Type": "application/json",
                     "User-Agent": "dreamsuite-gan"})
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise self._error(exc.code, exc.read(), verb, resource, path) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unavailable(f"the Kubernetes API at {self.api_url} is unreachable "
                              f"({method} {resource}): {reason}") from None
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            raise RemoteError(f"the Kubernetes API answered {method} {path} with something that "
                              "is not JSON") from None

    def _error(self, status: int, raw: bytes, verb: str, resource: str,
               path: str) -> Exception:
        try:
            message = str(json.loads(raw).get("message", ""))
        except (ValueError, AttributeError):
            message = raw.decode(errors="replace")
        message = shorten(message, 300)
        group = "batch" if resource == "jobs" else '""'
        if status == 404:
            return NotFound(f"{resource} {path.rsplit('/', 1)[-1]} not found in namespace "
                            f"{self.namespace}")
        if status == 409:
            return _Conflict(message)
        if status == 401:
            return Unauthenticated(f"the Kubernetes API rejected the service-account token "
                                   f"({message})")
        if status == 403:
            return KubernetesForbidden(
                f"RBAC: the service account may not {verb} {resource} (apiGroup {group}) in "
                f"namespace {self.namespace}; grant verb {verb!r} on resource {resource!r} "
                f"(apiGroups: [{group}]) in a Role bound to it, as the Role dreamsuite-gan "
                f"of deploy/k8s/base/gan.yaml does. API server: {message}")
        if status in (400, 422):
            return InvalidArgument(f"the Kubernetes API refused to {verb} {resource}: {message}")
        if status == 429 or status >= 500:
            return Unavailable(f"the Kubernetes API could not {verb} {resource} now "
                               f"(HTTP {status}): {message}")
        return RemoteError(f"the Kubernetes API answered {verb} {resource} with HTTP {status}: "
                           f"{message}")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
