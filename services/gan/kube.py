"""Training jobs as Kubernetes Jobs: :class:`KubernetesLauncher`, the
:class:`~services.gan.launchers.Launcher` that submits the objects of
:mod:`services.gan.manifests` through the Kubernetes REST API.

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
- ``DREAMSUITE_GAN_JOB_CPU`` / ``DREAMSUITE_GAN_JOB_MEMORY``: request = limit (2 / 8Gi); each
  trainer process gets its share of the CPU limit, rounded down, as ``OMP_NUM_THREADS``
  (:func:`~services.gan.manifests.trainer_threads`: torch would take every core of the node);
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
import http.client
import json
import logging
import math
import os
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
from services.gan.manifests import (
    job_name,
    job_state,
    trainer_command,
    training_configmap,
    training_job_manifest,
)

__all__ = ["KubernetesForbidden", "KubernetesLauncher"]

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubernetesForbidden(Unavailable, PermissionError):
    """The API server refused a call (HTTP 403): the service account lacks an RBAC permission,
    which the message names."""


class _Conflict(Exception):
    """HTTP 409: the object exists already (handled inside :meth:`KubernetesLauncher.start`)."""


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

    #: The trainer runs in another pod: its events are read from the store.
    events_in_store = True

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
