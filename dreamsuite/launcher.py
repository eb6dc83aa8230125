"""The whole suite on one machine, no containers: TorchServe, the guide and the dream service
(and Prometheus, when asked) as child processes on loopback ports.

>>> with Suite(run_dir).start() as suite:        # waits until every service is SERVING
...     suite.endpoints()["dream"]               # "127.0.0.1:PORT"

Every child runs in a process group of its own; :meth:`Suite.stop` ends each group (SIGTERM,
then SIGKILL after a grace period), the dream service first, TorchServe last. The run directory
holds ``state.json`` (pids, process groups, ports) and the logs, so ``dreamsuite status`` and
``dreamsuite down`` work from another shell, and a crashed launcher leaves nothing that
``down`` cannot find.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dreamsuite
from dreamsuite.errors import DreamsuiteError, Unavailable

__all__ = [
    "ServiceProcess",
    "Suite",
    "check_health",
    "check_torchserve",
    "default_run_dir",
    "read_state",
    "stop_recorded",
    "wait_serving",
    "prometheus_config",
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
    ...), or ``UNREACHABLE`` when nothing answers in ``timeout`` seconds."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            return "UNKNOWN_SERVICE" if code == grpc.StatusCode.NOT_FOUND else "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def check_torchserve(target: str, timeout: float = 2.0) -> str:
    """TorchServe's health through its gRPC inference API (``Ping``; it implements no
    grpc.health.v1): ``SERVING`` when it says Healthy, ``NOT_SERVING`` when it answers
    otherwise (e.g. a model without a worker), ``UNREACHABLE`` when it does not answer."""
    import grpc
    from google.protobuf import empty_pb2

    from dreamsuite.activations.tsproto import torchserve_inference_pb2 as tspb

    with grpc.insecure_channel(target) as channel:
        ping = channel.unary_unary(
            "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Ping",
            request_serializer=empty_pb2.Empty.SerializeToString,
            response_deserializer=tspb.TorchServeHealthResponse.FromString)
        try:
            reply = ping(empty_pb2.Empty(), timeout=timeout)
        except grpc.RpcError:
            return "UNREACHABLE"
    healthy = '"Healthy"' in reply.health or reply.health.strip() == "Healthy"
    return "SERVING" if healthy else "NOT_SERVING"


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    import urllib.error
    import urllib.request

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
            return check_torchserve(self.endpoint, timeout)
        return "SERVING" if _http_ok(self.health, timeout) else "UNREACHABLE"

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM to the group, SIGKILL to whatever is left after ``grace`` seconds."""
        _terminate(os.killpg, self.pid, grace)


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


def model_store_dir() -> Path:
    """Where built archives are kept: keyed by the dreamsuite version and the handler source, so
    an edited handler gets a fresh archive."""
    from dreamsuite.cli.archive import handler_file

    digest = hashlib.sha256(handler_file().read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "dreamsuite" / "model-store" / f"{dreamsuite.__version__}-{digest}"


def ensure_archive(backbone: str, model_store: Path) -> Path:
    """``model_store/BACKBONE.mar``, built with ``dreamsuite archive`` when missing."""
    archive = model_store / f"{backbone}.mar"
    if archive.is_file():
        return archive
    model_store.mkdir(parents=True, exist_ok=True)
    command = [*_dreamsuite_argv(), "archive", "--backbone", backbone, "-o", str(model_store)]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0 or not archive.is_file():
        raise DreamsuiteError(f"building the {backbone} archive failed:\n{proc.stderr[-2000:]}")
    return archive


def serve_flags(service: str) -> set[str]:
    """The option strings ``dreamsuite serve SERVICE`` accepts."""
    import argparse

    from dreamsuite.cli import build_parser

    def choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        for action in parser._actions:  # noqa: SLF001  (argparse has no public walk)
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                return dict(action.choices)
        return {}

    serve = choices(build_parser()).get("serve")
    parser = choices(serve).get(service) if serve is not None else None
    if parser is None:
        raise DreamsuiteError(f"`dreamsuite serve {service}` is not installed")
    return {flag for action in parser._actions for flag in action.option_strings}  # noqa: SLF001


def _dreamsuite_argv() -> list[str]:
    """The dreamsuite CLI of this interpreter (no reliance on PATH)."""
    return [sys.executable, "-c", "import sys; from dreamsuite.cli import main; sys.exit(main())"]


@dataclass
class Suite:
    """The suite in ``run_dir``. ``start()`` launches and waits; ``stop()`` ends everything."""

    run_dir: Path
    artifacts: str | None = None  # default: file://RUN_DIR/artifacts
    backbone: str = "efficientnet_lite0"
    with_prometheus: bool = False
    startup_timeout: float = 240.0
    model_store: Path | None = None
    processes: list[ServiceProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir).resolve()
        if self.artifacts is None:
            self.artifacts = (self.run_dir / "artifacts").as_uri()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Suite:
        """Start every service and wait until each reports SERVING (rolls back on failure)."""
        existing = read_state(self.run_dir)
        if existing and any(p.alive() for p in recorded_processes(existing)):
            raise DreamsuiteError(f"a suite already runs from {self.run_dir}; "
                                  f"stop it with `dreamsuite down --run-dir {self.run_dir}`")
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        try:
            self._start_torchserve()
            self._start_service("guide", self._guide_args)
            self._start_service("dream", self._dream_args)
            if self.with_prometheus:
                self._start_prometheus()
        except BaseException:
            self.stop()
            raise
        return self

    def detach(self) -> None:
        """Leave the children running without this process (``dreamsuite down`` stops them)."""
        self._write_state(launcher_pid=None)
        self.processes.clear()

    def stop(self, grace: float = 15.0) -> None:
        """Stop the children, last started first; forget the state file."""
        for proc in reversed(self.processes):
            proc.stop(grace)
        self.processes.clear()
        (self.run_dir / STATE_FILE).unlink(missing_ok=True)

    def __enter__(self) -> Suite:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what runs ---------------------------------------------------------------------------

    def endpoints(self) -> dict[str, str]:
        """``name -> HOST:PORT`` of each child's main listener."""
        return {p.name: p.endpoint for p in self.processes}

    def get(self, name: str) -> ServiceProcess:
        return next(p for p in self.processes if p.name == name)

    def _record(self, proc: ServiceProcess) -> None:
        self.processes.append(proc)
        self._write_state(launcher_pid=os.getpid())

    def _write_state(self, launcher_pid: int | None) -> None:
        state = {"launcher_pid": launcher_pid, "run_dir": str(self.run_dir),
                 "artifacts": self.artifacts, "started": time.time(),
                 "services": [asdict(p) for p in self.processes]}
        tmp = self.run_dir / (STATE_FILE + ".part")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.run_dir / STATE_FILE)

    def _spawn(self, name: str, argv: list[str], ports: dict[str, int], health: str = "grpc",
               env: dict[str, str] | None = None) -> ServiceProcess:
        log = self.run_dir / "logs" / f"{name}.log"
        with open(log, "ab") as out:
            # A session of its own: Ctrl-C in the terminal reaches only the launcher, which then
            # stops the children in order; stop() can end each child's whole tree at once.
            child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     cwd=self.run_dir, env={**os.environ, **(env or {})})
        proc = ServiceProcess(name, child.pid, ports, str(log), health)
        self._record(proc)
        return proc

    def _start_torchserve(self) -> None:
        from dreamsuite.torchserve import TorchServe, TorchServePorts

        store = self.model_store or model_store_dir()
        ensure_archive(self.backbone, store)
        server = TorchServe(store, [self.backbone], host=HOST, ports=TorchServePorts.free(HOST),
                            workdir=self.run_dir / "torchserve",
                            startup_timeout=self.startup_timeout)
        ports = server.ports
        server_ports = {"grpc": ports.grpc_inference, "http": ports.inference,
                        "management": ports.management, "metrics": ports.metrics}
        try:
            server.start()
        finally:
            if server.process is not None:
                self._record(ServiceProcess(
                    "torchserve", server.process.pid, server_ports, str(server.log_file),
                    health="torchserve"))

    def _start_service(self, name: str, args_for) -> None:
        from dreamsuite.torchserve import free_port

        ports = {"grpc": free_port(HOST), "metrics": free_port(HOST)}
        argv = [*_dreamsuite_argv(), "serve", name, *args_for(ports)]
        proc = self._spawn(name, argv, ports)
        wait_serving(proc, self.startup_timeout)

    def _common_args(self, ports: dict[str, int]) -> list[str]:
        return ["--host", HOST, "--port", str(ports["grpc"]),
                "--metrics-port", str(ports["metrics"]), "--artifacts", str(self.artifacts)]

    def _guide_args(self, ports: dict[str, int]) -> list[str]:
        torchserve = self.get("torchserve")
        return [*self._common_args(ports),
                "--activations", f"torchserve://{HOST}:{torchserve.ports['grpc']}"]

    def _dream_args(self, ports: dict[str, int]) -> list[str]:
        args = self._common_args(ports)
        if "--guide" in serve_flags("dream"):
            args += ["--guide", self.get("guide").endpoint]
        return args

    def _start_prometheus(self) -> None:
        targets = {p.name: f"{HOST}:{p.ports['metrics']}" for p in self.processes}
        argv, ports, ready = prometheus_argv(self.run_dir / "prometheus", targets, HOST)
        proc = self._spawn("prometheus", argv, ports, health=ready)
        wait_serving(proc, 60.0)


# -- Prometheus ------------------------------------------------------------------------------

def _deploy_prometheus_dir() -> Path | None:
    """deploy/prometheus of a source checkout (absent from an installed wheel)."""
    folder = Path(dreamsuite.__file__).resolve().parents[1] / "deploy" / "prometheus"
    return folder if (folder / "prometheus.yml").is_file() else None


def prometheus_config(targets: dict[str, str], self_target: str,
                      scrape_interval: str = "5s") -> dict:
    """The deploy/ Prometheus config with its targets on loopback: each job keeps its name and
    labels, scrapes ``targets[job]`` instead; jobs with no local process are dropped."""
    import yaml

    folder = _deploy_prometheus_dir()
    if folder is None:
        config = {"global": {}, "scrape_configs": [
            {"job_name": name, "static_configs": [{"targets": ["x"]}]}
            for name in (*targets, "prometheus")]}
    else:
        config = yaml.safe_load((folder / "prometheus.yml").read_text())
    config["global"] = {**config.get("global", {}), "scrape_interval": scrape_interval,
                        "evaluation_interval": scrape_interval}
    local = {**targets, "prometheus": self_target}
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] in local:
            job["static_configs"] = [{**sc, "targets": [local[job["job_name"]]]}
                                     for sc in job["static_configs"][:1]]
            jobs.append(job)
    config["scrape_configs"] = jobs
    return config


def prometheus_argv(folder: Path, targets: dict[str, str],
                    host: str = HOST) -> tuple[list[str], dict[str, int], str]:
    """Write a local config into ``folder``; the command, its ports and its readiness URL."""
    import shutil

    import yaml

    from dreamsuite.torchserve import free_port

    binary = shutil.which("prometheus")
    if binary is None:
        raise DreamsuiteError("--with-prometheus needs the `prometheus` binary on PATH "
                              "(Debian/Ubuntu: apt-get install prometheus)")
    port = free_port(host)
    folder.mkdir(parents=True, exist_ok=True)
    config = prometheus_config(targets, f"{host}:{port}")
    source = _deploy_prometheus_dir()
    for rules in config.get("rule_files", []):
        if source is not None and (source / rules).is_file():
            shutil.copy(source / rules, folder / rules)
    config["rule_files"] = [r for r in config.get("rule_files", []) if (folder / r).is_file()]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [binary, f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address={host}:{port}",
            "--storage.tsdb.retention.time=1d"]
    return argv, {"http": port}, f"http://{host}:{port}/-/ready"
