"""Child processes of the suite: health checks, stopping process groups, the run directory's
state."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dreamsuite.activations.tsproto import torchserve_inference_pb2 as tspb
from dreamsuite.clients import open_channel
from dreamsuite.errors import Unavailable

__all__ = [
    "HOST", "ORDER", "STATE_FILE", "ServiceProcess", "check_health", "check_torchserve",
    "default_run_dir", "read_state", "recorded_processes", "stop_recorded", "wait_serving",
]

HOST = "127.0.0.1"
STATE_FILE = "state.json"
#: Start order; stop runs in reverse.
ORDER = ("torchserve", "guide", "dream", "prometheus")


def default_run_dir() -> Path:
    """``$DREAMSUITE_RUN_DIR``, else ``$XDG_STATE_HOME/dreamsuite/suite`` (~/.local/state)."""
    if os.environ.get("DREAMSUITE_RUN_DIR"):
        return Path(os.environ["DREAMSUITE_RUN_DIR"])
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state / "dreamsuite" / "suite"


def check_health(target: str, service: str = "", timeout: float = 2.0) -> str:
    """The gRPC health status name of ``service`` at ``target`` (``SERVING``, ``NOT_SERVING``,
    ...), or ``UNREACHABLE`` when nothing answers in ``timeout`` seconds. TLS when
    ``$DREAMSUITE_TLS_CA`` is set, like every client of the suite."""
    with open_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            return "UNKNOWN_SERVICE" if code == grpc.StatusCode.NOT_FOUND else "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def check_torchserve(target: str, timeout: float = 2.0, token: str | None = None) -> str:
    """TorchServe's health through its gRPC inference API (``Ping``; it implements no
    grpc.health.v1): ``SERVING`` when it says Healthy, ``NOT_SERVING`` when it answers
    otherwise (e.g. a model without a worker), ``UNREACHABLE`` when it does not answer.
    ``token``: its inference key, where its token authorization is on."""
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    with grpc.insecure_channel(target) as channel:
        ping = channel.unary_unary(
            "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Ping",
            request_serializer=empty_pb2.Empty.SerializeToString,
            response_deserializer=tspb.TorchServeHealthResponse.FromString)
        try:
            reply = ping(empty_pb2.Empty(), timeout=timeout, metadata=metadata)
        except grpc.RpcError:
            return "UNREACHABLE"
    healthy = '"Healthy"' in reply.health or reply.health.strip() == "Healthy"
    return "SERVING" if healthy else "NOT_SERVING"


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return 200 <= reply.status < 300
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class ServiceProcess:
    """One child of the suite: a process group and the ports it listens on."""

    name: str
    pid: int
    ports: dict[str, int]
    log: str
    #: How to ask it whether it serves: "grpc" (grpc.health.v1), "torchserve" (TorchServe's
    #: gRPC Ping) or an HTTP URL.
    health: str = "grpc"
    #: TorchServe with token authorization: its key_file.json (the Ping sends the inference key).
    key_file: str = ""

    @property
    def endpoint(self) -> str:
        port = self.ports.get("grpc") or self.ports.get("http")
        return f"{HOST}:{port}"

    def alive(self) -> bool:
        """Whether anything of its process group is left (an exited child of ours is reaped)."""
        _reap(self.pid)
        return _exists(os.killpg, self.pid)

    def status(self, timeout: float = 2.0) -> str:
        """SERVING / NOT_SERVING / UNREACHABLE / EXITED."""
        if not self.alive():
            return "EXITED"
        if self.health == "grpc":
            return check_health(self.endpoint, "", timeout)
        if self.health == "torchserve":
            return check_torchserve(self.endpoint, timeout, _inference_key(self.key_file))
        return "SERVING" if _http_ok(self.health, timeout) else "UNREACHABLE"

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM to the group, SIGKILL to whatever is left after ``grace`` seconds."""
        _terminate(os.killpg, self.pid, grace)


def _inference_key(key_file: str) -> str | None:
    if not key_file:
        return None
    try:
        return str(json.loads(Path(key_file).read_text())["inference"]["key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _exists(kill, target: int) -> bool:
    try:
        kill(target, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _terminate(kill, target: int, grace: float) -> None:
    """SIGTERM ``target`` (``kill`` is os.kill or os.killpg), SIGKILL it after ``grace`` s."""
    with contextlib.suppress(ProcessLookupError):
        kill(target, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(target)
        if not _exists(kill, target):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        kill(target, signal.SIGKILL)
    time.sleep(0.2)
    _reap(target)


def _reap(pid: int) -> None:
    """Collect the exit status of our own child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def wait_serving(process: ServiceProcess, timeout: float) -> None:
    """Block until ``process`` reports SERVING; :class:`Unavailable` with its log on failure."""
    deadline = time.monotonic() + timeout
    status = "UNREACHABLE"
    while time.monotonic() < deadline:
        status = process.status(timeout=2.0)
        if status == "SERVING":
            return
        if status == "EXITED":
            break
        time.sleep(0.3)
    raise Unavailable(f"{process.name} is {status} after {timeout:.0f} s; its log "
                      f"({process.log}) ends:\n{_tail(Path(process.log))}")


def _tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def read_state(run_dir: Path) -> dict | None:
    """The recorded state of a suite started in ``run_dir`` (None when there is none)."""
    path = Path(run_dir) / STATE_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def recorded_processes(state: dict) -> list[ServiceProcess]:
    """The children a state file lists, in start order."""
    procs = [ServiceProcess(**entry) for entry in state.get("services", [])]
    return sorted(procs, key=lambda p: ORDER.index(p.name) if p.name in ORDER else len(ORDER))


def stop_recorded(run_dir: Path, grace: float = 15.0) -> list[str]:
    """Stop a suite from its state file (another shell, or after a crashed launcher): the
    launcher first, so it stops its children in order, then any group that is still there.
    Returns the names of what was stopped."""
    state = read_state(run_dir)
    if state is None:
        return []
    launcher = state.get("launcher_pid")
    if launcher and launcher != os.getpid() and _is_launcher(launcher, run_dir):
        _terminate(os.kill, launcher, grace * 2)
    stopped = []
    for proc in reversed(recorded_processes(state)):
        if proc.alive():
            proc.stop(grace)
        stopped.append(proc.name)
    (Path(run_dir) / STATE_FILE).unlink(missing_ok=True)
    return stopped


def _is_launcher(pid: int, run_dir: Path) -> bool:
    """Whether ``pid`` is still a ``dreamsuite up`` (not a process that reused the pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: trust the state file
        return _exists(os.kill, pid)
    return b"up" in cmdline and any(b"dreamsuite" in part for part in cmdline)


