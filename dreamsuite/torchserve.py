"""Start and stop a local TorchServe (Java 17) serving dreamsuite model archives.

>>> with TorchServe(model_store, models=["efficientnet_lite0"]) as ts:   # free loopback ports
...     backend = TorchServeBackend(ts.grpc_target)                      # torchserve://...

TorchServe runs offline in the foreground (``--foreground --ncs``) from a generated
config.properties: loopback addresses only, token authorization off (safe only on loopback),
model-control API off, ``metrics_mode=prometheus``, request/response limits raised to what the
backbone handler returns. ``stop()`` ends the whole process tree (launcher, Java frontend,
Python workers).

``model_api=True`` turns TorchServe's model-control API on (registering an archive runs its
code), which needs token authorization: :meth:`TorchServe.register` and
:func:`register_model` send the management key. TorchServe 0.12 takes no keys from outside: it
generates them at every start into ``key_file.json`` in its working directory (readable by its
user only); :func:`read_management_key` reads the management key from there, or from a file
holding just the key. :func:`model_versions`, :func:`describe_model`,
:func:`set_default_version` and :func:`unregister_model` (one version) work with TorchServe's
model versions: an archive of a served name with a new version is registered beside it and then
made the default, so the name never stops answering. :func:`management_endpoints` turns one
management URL into one per replica (every address of its host name: a headless Kubernetes
Service has one per pod).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dreamsuite.defaults import DEFAULT_MAX_RESPONSE_BYTES
from dreamsuite.errors import Unavailable

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MODEL_NAME",
    "PUBLISHED_PREFIX",
    "TOKEN_MINUTES",
    "TorchServePorts",
    "TorchServe",
    "free_port",
    "management_endpoints",
    "describe_model",
    "model_versions",
    "read_management_key",
    "register_model",
    "served_models",
    "set_default_version",
    "unregister_model",
    "render_config",
    "require_java",
]

#: TorchServe's max_request_size / max_response_size: above the handler's response cap
#: (DEFAULT_MAX_RESPONSE_BYTES) so that the handler, not the frame limit, refuses big answers.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
assert MAX_MESSAGE_BYTES > DEFAULT_MAX_RESPONSE_BYTES

#: Names TorchServe accepts for a model: letters, digits, '_', '-', '.'; a letter or digit first.
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

#: Where the GAN service keeps published one-pass models in the artifact store:
#: ``published/<name>.mar`` and ``published/<name>.json`` (the list of what every TorchServe
#: replica should serve; the dream service reads it to tell "not registered here yet" from
#: "unknown").
PUBLISHED_PREFIX = "published/"

#: Lifetime of TorchServe's generated keys (``token_expiration_min``; its default is 60): the
#: services read a key once, so a key must live as long as the TorchServe that made it.
TOKEN_MINUTES = 60 * 24 * 365


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class TorchServePorts:
    """The ports one TorchServe instance listens on (all on the same host)."""

    inference: int = 8080
    management: int = 8081
    metrics: int = 8082
    grpc_inference: int = 7070
    grpc_management: int = 7071
    worker: int = 9000

    @classmethod
    def free(cls, host: str = "127.0.0.1") -> TorchServePorts:
        """Free ports for every listener (the worker sockets start at a random high port)."""
        return cls(*(free_port(host) for _ in range(5)), worker=free_port(host))


def render_config(
    *,
    model_store: str | os.PathLike,
    ports: TorchServePorts = TorchServePorts(),
    host: str = "127.0.0.1",
    models: Sequence[str] = (),
    token_auth: bool = False,
    workers: int = 1,
    model_api: bool = False,
) -> str:
    """config.properties for a TorchServe that serves dreamsuite archives.

    ``token_auth=False`` (``disable_token_authorization=true``) is only for loopback; a
    deployment that listens on other addresses keeps token authorization on and gives the guide
    service the inference key (``--torchserve-token``)."""
    if not token_auth and host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"token authorization may only be off on loopback, not on {host!r}")
    if model_api and not token_auth:
        raise ValueError("the model-control API registers archives, whose code TorchServe runs: "
                         "it needs token authorization")
    lines = [
        f"inference_address=http://{host}:{ports.inference}",
        f"management_address=http://{host}:{ports.management}",
        f"metrics_address=http://{host}:{ports.metrics}",
        f"grpc_inference_address={host}",
        f"grpc_inference_port={ports.grpc_inference}",
        f"grpc_management_address={host}",
        f"grpc_management_port={ports.grpc_management}",
        f"initial_worker_port={ports.worker}",
        f"model_store={Path(model_store).resolve()}",
        f"load_models={','.join(f'{m}.mar' for m in models)}" if models else "",
        "metrics_mode=prometheus",
        f"disable_token_authorization={'false' if token_auth else 'true'}",
        f"token_expiration_min={TOKEN_MINUTES}" if token_auth else "",
        f"enable_model_api={'true' if model_api else 'false'}",
        f"max_request_size={MAX_MESSAGE_BYTES}",
        f"max_response_size={MAX_MESSAGE_BYTES}",
        f"default_workers_per_model={workers}",
        "install_py_dep_per_model=false",
        "default_response_timeout=120",
    ]
    return "\n".join(line for line in lines if line) + "\n"


def _call(request: urllib.request.Request, key: str | None, what: str,
          timeout: float) -> tuple[int, bytes]:
    """Send ``request`` to TorchServe's management API with the management ``key``: its status
    and body; 404 and 409 come back as statuses, other failures as :class:`Unavailable`."""
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    where = urllib.parse.urlsplit(request.full_url)
    base = f"{where.scheme}://{where.netloc}"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        if exc.code in (404, 409):
            return exc.code, detail.encode()
        # TorchServe 0.12 answers a missing or wrong key with 400 InvalidKeyException.
        if exc.code in (401, 403) or "InvalidKeyException" in detail:
            raise Unavailable(f"TorchServe at {base} refused to {what} ({exc.code}): the "
                              "management key is missing or wrong") from None
        raise Unavailable(f"TorchServe at {base} could not {what} ({exc.code}: {detail})"
                          ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise Unavailable(f"TorchServe's management API at {base} is unreachable ({exc})"
                          ) from None


def register_model(management_url: str, archive: str, key: str | None, *, workers: int = 1,
                   timeout: float = 300.0) -> str:
    """Register the model archive ``archive`` (a ``.mar`` in TorchServe's model store, or a
    URL its ``allowed_urls`` accept) through the model-control API at ``management_url``,
    sending the management ``key``; blocks until its ``workers`` are up. Returns the model
    name TorchServe gave it. The name and version come from the archive's MANIFEST: a version
    already registered is left as it is; a new version of a served name is registered beside
    the others, not as the default (:func:`set_default_version`). :class:`Unavailable` says why
    TorchServe refused (workers that fail to load the archive: 500, and TorchServe unregisters
    that version again)."""
    query = urllib.parse.urlencode({"url": archive, "initial_workers": workers,
                                    "synchronous": "true"})
    request = urllib.request.Request(f"{management_url}/models?{query}", method="POST")
    name = Path(urllib.parse.urlparse(archive).path).name.removesuffix(".mar")
    code, body = _call(request, key, f"register {archive!r}", timeout)
    if code == 404:
        raise Unavailable(f"TorchServe at {management_url} found no archive {archive!r} "
                          f"({body.decode(errors='replace')[:200]})")
    if code == 409:  # already registered
        return name
    # "Model \"d2d\" Version: 1.0 registered with 1 initial workers"
    status = json.loads(body or b"{}").get("status", "")
    if status.startswith("Model \""):
        name = status.split("\"", 2)[1]
    return name


def unregister_model(management_url: str, name: str, key: str | None, *,
                     version: str | None = None, timeout: float = 120.0) -> bool:
    """Unregister ``version`` of the model ``name`` (default: its default version, which
    TorchServe refuses while other versions are registered); it stops that version's workers,
    failing the requests they hold. ``False`` when TorchServe at ``management_url`` serves no
    such model or version."""
    code, _ = _call(urllib.request.Request(_model_url(management_url, name, version),
                                           method="DELETE"),
                    key, f"unregister {_which(name, version)}", timeout)
    return code != 404


def describe_model(management_url: str, name: str, key: str | None, *,
                   version: str | None = None, timeout: float = 10.0) -> list[dict]:
    """TorchServe's description of the model ``name``: one entry (``modelVersion``,
    ``workers`` with their ``status``, ``jobQueueStatus``, ...) for its default version, for
    ``version``, or for every version with ``version="all"``; ``[]`` when it serves no such
    model or version."""
    code, body = _call(urllib.request.Request(_model_url(management_url, name, version)), key,
                       f"describe {_which(name, version)}", timeout)
    return [] if code == 404 else list(json.loads(body or b"[]"))


def model_versions(management_url: str, name: str, key: str | None, *,
                   timeout: float = 10.0) -> list[str]:
    """The registered versions of the model ``name``, the default (the one
    ``/predictions/NAME`` reaches) first; ``[]`` when it is not served."""
    default = describe_model(management_url, name, key, timeout=timeout)
    if not default:
        return []
    first = str(default[0]["modelVersion"])
    every = describe_model(management_url, name, key, version="all", timeout=timeout)
    return [first, *sorted({str(e["modelVersion"]) for e in every} - {first})]


def set_default_version(management_url: str, name: str, version: str, key: str | None, *,
                        timeout: float = 30.0) -> None:
    """Make ``version`` of ``name`` its default version: requests that name no version (the
    dream service's, ``/predictions/NAME``) go to it from now on. :class:`Unavailable` when
    TorchServe has no such version."""
    request = urllib.request.Request(f"{_model_url(management_url, name, version)}/set-default",
                                     method="PUT")
    code, body = _call(request, key, f"make version {version!r} of {name!r} the default",
                       timeout)
    if code == 404:
        raise Unavailable(f"TorchServe at {management_url} has no {_which(name, version)} to "
                          f"make the default ({body.decode(errors='replace')[:200]})")


def _model_url(management_url: str, name: str, version: str | None) -> str:
    url = f"{management_url}/models/{urllib.parse.quote(name)}"
    return f"{url}/{urllib.parse.quote(version, safe='')}" if version else url


def _which(name: str, version: str | None) -> str:
    return f"version {version!r} of {name!r}" if version else repr(name)


def served_models(management_url: str, key: str | None, *, timeout: float = 10.0) -> list[str]:
    """Names of the models TorchServe at ``management_url`` serves."""
    request = urllib.request.Request(f"{management_url}/models?limit=1000")
    _, body = _call(request, key, "list its models", timeout)
    return [m["modelName"] for m in json.loads(body or b"{}").get("models", [])]


def management_endpoints(management_url: str) -> list[str]:
    """One management URL per address of ``management_url``'s host, sorted (a headless
    Kubernetes Service resolves to one address per ready pod); :class:`Unavailable` when the
    name does not resolve."""
    where = urllib.parse.urlsplit(management_url)
    if not where.hostname:
        raise Unavailable(f"{management_url!r} is no management URL (http://HOST:PORT)")
    port = where.port or (443 if where.scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(where.hostname, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Unavailable(f"cannot resolve TorchServe's management host {where.hostname!r} "
                          f"({exc})") from None
    addresses = sorted({info[4][0] for info in found})
    return [f"{where.scheme}://{f'[{a}]' if ':' in a else a}:{port}" for a in addresses]


def read_management_key(path: str | os.PathLike) -> str:
    """The management key in ``path``: TorchServe's ``key_file.json`` or a file that holds
    only the key (a mounted Secret). Read at every call: TorchServe writes new keys when it
    restarts."""
    text = Path(path).read_text().strip()
    if text.startswith("{"):
        try:
            return str(json.loads(text)["management"]["key"])
        except (ValueError, KeyError, TypeError):
            raise Unavailable(f"{path} is no TorchServe key file (no management key)") from None
    return text


def require_java() -> str:
    """The ``java`` executable; :class:`Unavailable` says how to install it when missing."""
    java = shutil.which("java")
    if java is None:
        raise Unavailable(
            "TorchServe needs Java 17 but `java` is not on PATH; install a JRE 17 "
            "(e.g. apt-get install openjdk-17-jre-headless) or use --activations inprocess"
        )
    return java


@dataclass
class TorchServe:
    """A TorchServe process serving ``models`` (archive names without ``.mar``) from
    ``model_store``. Logs go to ``workdir`` (a temporary folder by default)."""

    model_store: Path
    models: Sequence[str]
    host: str = "127.0.0.1"
    ports: TorchServePorts = field(default_factory=TorchServePorts.free)
    workdir: Path | None = None
    startup_timeout: float = 180.0
    token_auth: bool = False
    model_api: bool = False
    process: subprocess.Popen | None = field(default=None, init=False)

    @property
    def grpc_target(self) -> str:
        """``HOST:PORT`` of the gRPC inference API."""
        return f"{self.host}:{self.ports.grpc_inference}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.ports.metrics}/metrics"

    @property
    def log_file(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "torchserve.log"

    def start(self) -> TorchServe:
        """Start TorchServe and wait until every model has a READY worker."""
        require_java()
        missing = [m for m in self.models if not (Path(self.model_store) / f"{m}.mar").is_file()]
        if missing:
            raise FileNotFoundError(
                f"no archive for {', '.join(missing)} in {self.model_store}; build it with "
                f"`dreamsuite archive --backbone {missing[0]} -o {self.model_store}`"
            )
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="dreamsuite-torchserve-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.properties"
        config.write_text(render_config(model_store=self.model_store, ports=self.ports,
                                        host=self.host, models=self.models,
                                        token_auth=self.token_auth, model_api=self.model_api))
        command = [sys.executable, "-c", "from ts.model_server import start; start()",
                   "--start", "--foreground", "--ncs", "--ts-config", str(config),
                   "--model-store", str(self.model_store)]
        # TorchServe keeps one pid file in the temporary folder and refuses to start when it
        # names a live server: a temporary folder per instance lets several run side by side.
        tmp = self.workdir / "tmp"
        tmp.mkdir(exist_ok=True)
        env = {**os.environ, "LOG_LOCATION": str(self.workdir / "logs"),
               "METRICS_LOCATION": str(self.workdir / "logs"),
               "TEMP": str(tmp), "TMPDIR": str(tmp), "TMP": str(tmp)}
        with open(self.log_file, "ab") as log:
            # A session of its own, so stop() can end the launcher, Java and the workers at once.
            self.process = subprocess.Popen(command, cwd=self.workdir, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.wait_ready(self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        """Block until every model has a READY worker; :class:`Unavailable` on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise Unavailable(f"TorchServe exited with {self.process.returncode} while "
                                  f"starting:\n{self.log_tail()}")
            if self._up() and all(self._model_ready(m) for m in self.models):
                return
            time.sleep(0.5)
        raise Unavailable(f"TorchServe was not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def keys(self) -> dict[str, str]:
        """The keys TorchServe generated when ``token_auth`` is on: ``{"inference": ...,
        "management": ..., "API": ...}`` (from ``key_file.json`` in ``workdir``)."""
        assert self.workdir is not None
        data = json.loads((self.workdir / "key_file.json").read_text())
        return {name: str(entry["key"]) for name, entry in data.items()}

    def inference_key(self) -> str:
        """The key a client of the inference API sends (``token_auth`` only)."""
        return self.keys()["inference"]

    @property
    def management_url(self) -> str:
        return f"http://{self.host}:{self.ports.management}"

    def register(self, archive: str, *, workers: int = 1, timeout: float = 300.0) -> str:
        """Register ``archive`` (a ``.mar`` file name in the model store) with ``workers``
        workers and wait until they are ready (``model_api`` and ``token_auth`` only); returns
        the model's name."""
        name = register_model(self.management_url, archive, self.keys()["management"],
                              workers=workers, timeout=timeout)
        self.models = [*self.models, name]
        return name

    def _up(self) -> bool:
        """Whether TorchServe's frontend answers (and has written its keys, when token
        authorization is on): for a TorchServe started with no model to wait for."""
        if self.token_auth and not (self.workdir is not None
                                    and (self.workdir / "key_file.json").is_file()):
            return False
        url = f"http://{self.host}:{self.ports.inference}/ping"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except urllib.error.HTTPError:  # it answers (token authorization wants a key here)
            return True
        except (urllib.error.URLError, OSError):
            return False

    def _model_ready(self, model: str) -> bool:
        url = f"http://{self.host}:{self.ports.management}/models/{model}"
        request = urllib.request.Request(url)
        if self.token_auth:
            try:
                management = self.keys()["management"]
            except (OSError, ValueError, KeyError):
                return False  # not written yet
            request.add_header("Authorization", f"Bearer {management}")
        try:
            with urllib.request.urlopen(request, timeout=2) as reply:
                described = json.loads(reply.read())
        except (urllib.error.URLError, OSError, ValueError):
            return False
        workers = [w for entry in described for w in entry.get("workers", [])]
        return any(w.get("status") == "READY" for w in workers)

    def worker_pids(self) -> list[int]:
        """Process ids of the Python model workers (for tests that kill one)."""
        import psutil  # optional: a [dev] dependency, needed only by the tests that call this

        if self.process is None:
            return []
        children = psutil.Process(self.process.pid).children(recursive=True)
        return [p.pid for p in children if "model_service_worker" in " ".join(p.cmdline())]

    def log_tail(self, lines: int = 40) -> str:
        if self.workdir is None or not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        """End the whole process tree: SIGTERM, then SIGKILL after ``grace`` seconds."""
        process, self.process = self.process, None
        if process is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(grace)
                # The launcher is gone; workers of the same group may linger a moment.
                os.killpg(process.pid, signal.SIGKILL)
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                pass
            break

    def __enter__(self) -> TorchServe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
