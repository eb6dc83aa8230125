"""The Kubernetes objects of a training job: a ``batch/v1`` Job (one pod, or an indexed Job
of several nodes under ``torchrun``) and the immutable ConfigMap holding its ``TrainConfig``;
:mod:`services.gan.kube` submits them. See that module for the settings and the retry story.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from dreamsuite.cpus import MAX_THREADS, thread_env
from dreamsuite.errors import InvalidArgument, shorten

__all__ = [
    "CONFIG_PATH",
    "JOB_ID_LABEL",
    "cpu_quantity",
    "job_name",
    "job_state",
    "multinode_training_manifests",
    "trainer_command",
    "training_configmap",
    "training_job_manifest",
    "trainer_threads",
]

#: Where the trainer pod reads its ``TrainConfig`` (a ConfigMap volume).
CONFIG_PATH = "/etc/dreamsuite/train.json"
TRAINER_MODULE = "dreamsuite.gan.train"
#: Label (and annotation, unshortened) carrying the job id on the Job, its pods and ConfigMap.
JOB_ID_LABEL = "dreamsuite.io/job-id"
TRAINER_NAME = "gan-trainer"
NAME_PREFIX = "gan-train-"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_MAX_NAME = 63  # the Job controller copies the name into a label of every pod
#: The CPU quantities of the Jobs: cores (``2``, ``1.5``) or millicores (``1500m``).
# A Kubernetes quantity (apimachinery's grammar): a signed decimal number, then a decimal SI
# suffix or a decimal exponent. Binary suffixes (Ki, Mi, ...) are memory units: refused for CPU.
_CPU = re.compile(r"(?P<number>[+-]?(?:[0-9]{1,18}(?:\.[0-9]{0,18})?|\.[0-9]{1,18}))"
                  r"(?:(?P<si>[numkMGTPE]?)|[eE](?P<exponent>[+-]?[0-9]{1,3}))")
_DECIMAL_SI = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15,
               "E": 18}


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


def cpu_quantity(cpu: str) -> Decimal:
    """The CPUs of a Kubernetes CPU quantity, in any form the API takes: ``"2"`` -> 2,
    ``"1500m"`` -> 1.5, ``"2e0"`` -> 2, ``"500000u"`` -> 0.5, ``"+1.5"`` -> 1.5. It must be
    above 0; binary suffixes (``Ki``, ``Mi``, ...) are memory units and are refused."""
    match = _CPU.fullmatch(str(cpu).strip())
    value = Decimal(0)
    if match is not None:
        power = (int(match["exponent"]) if match["exponent"] is not None
                 else _DECIMAL_SI[match["si"]])
        value = Decimal(match["number"]).scaleb(power)
    if not value > 0:
        raise InvalidArgument(f"cpu must be a Kubernetes CPU quantity above 0, such as 2, 1.5, "
                              f"1500m or 2e0, not {shorten(str(cpu))!r}")
    return value


def trainer_threads(cpu: str, nproc: int = 1) -> int:
    """Torch threads of each of ``nproc`` trainer processes in a pod whose CPU limit is
    ``cpu``: its share, rounded down, at least 1 (``"2"`` -> 2, ``"1500m"`` -> 1). The pod's
    ``OMP_NUM_THREADS``: torch would otherwise start one thread per core of the node."""
    share = cpu_quantity(cpu) / max(1, nproc)
    return max(1, min(MAX_THREADS, math.floor(share)))


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
                *({"name": name, "value": value}
                  for name, value in thread_env(trainer_threads(cpu, nproc)).items()),
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
