"""The :class:`Suite`: start TorchServe, the services and Prometheus in order, stop them in
reverse.

TorchServe listens on loopback with its model-control API and token authorization on: the
guide and dream services get its inference key, the GAN service its management URL, the path
of its key_file.json and the model store, so ``dreamsuite gan publish MODEL --remote GAN``
makes the dream service's fast path serve a model without a restart (PublishModel)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dreamsuite
from dreamsuite.defaults import DEFAULT_BACKBONE
from dreamsuite.errors import DreamsuiteError
from dreamsuite.launcher.processes import (
    HOST,
    STATE_FILE,
    ServiceProcess,
    read_state,
    recorded_processes,
    wait_serving,
)
from dreamsuite.launcher.prometheus import prometheus_argv
from dreamsuite.torchserve import TorchServe, TorchServePorts, free_port
from handlers import handler_file

__all__ = ["Suite", "ensure_archive", "model_store_dir", "one_pass_archives"]

def model_store_dir() -> Path:
    """Where built archives are kept: keyed by the dreamsuite version and the source of the
    ``handlers`` package (the handler and the archive builder with its batch settings), so an
    edited handler or archive default gets a fresh archive."""
    digest = hashlib.sha256()
    for source in sorted(handler_file().parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "dreamsuite" / "model-store" / f"{dreamsuite.__version__}-{digest.hexdigest()[:12]}"


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


def _dreamsuite_argv() -> list[str]:
    """The dreamsuite CLI of this interpreter (no reliance on PATH)."""
    return [sys.executable, "-c", "import sys; from dreamsuite.cli import main; sys.exit(main())"]


@dataclass
class Suite:
    """The suite in ``run_dir``. ``start()`` launches and waits; ``stop()`` ends everything."""

    run_dir: Path
    artifacts: str | None = None  # default: file://RUN_DIR/artifacts
    backbone: str = DEFAULT_BACKBONE
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
            self._start_service("guide", self._guide_args, self._torchserve_env())
            self._start_service("dream", self._dream_args, self._torchserve_env())
            self._start_service("gan", self._gan_args)
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
        store = self.model_store or model_store_dir()
        ensure_archive(self.backbone, store)
        # Beside the backbone: every one-pass model exported into the store (`gan export`).
        models = [self.backbone, *one_pass_archives(store)]
        server = TorchServe(store, models, host=HOST, ports=TorchServePorts.free(HOST),
                            workdir=self.run_dir / "torchserve",
                            startup_timeout=self.startup_timeout, token_auth=True,
                            model_api=True)
        self.model_store = store
        ports = server.ports
        server_ports = {"grpc": ports.grpc_inference, "http": ports.inference,
                        "management": ports.management, "metrics": ports.metrics}
        try:
            server.start()
        finally:
            if server.process is not None:
                self._record(ServiceProcess(
                    "torchserve", server.process.pid, server_ports, str(server.log_file),
                    health="torchserve", key_file=str(self._key_file())))

    def _key_file(self) -> Path:
        """TorchServe's key_file.json (it writes it in its working directory at start)."""
        return self.run_dir / "torchserve" / "key_file.json"

    def _torchserve_env(self) -> dict[str, str]:
        """The inference key for the guide and dream services, in the environment (flags are
        visible to every user of the machine)."""
        keys = json.loads(self._key_file().read_text())
        return {"DREAMSUITE_TORCHSERVE_TOKEN": str(keys["inference"]["key"])}

    def _start_service(self, name: str, args_for, env: dict[str, str] | None = None) -> None:
        ports = {"grpc": free_port(HOST), "metrics": free_port(HOST)}
        argv = [*_dreamsuite_argv(), "serve", name, *args_for(ports)]
        proc = self._spawn(name, argv, ports, env=env)
        wait_serving(proc, self.startup_timeout)

    def _common_args(self, ports: dict[str, int]) -> list[str]:
        return ["--host", HOST, "--port", str(ports["grpc"]),
                "--metrics-port", str(ports["metrics"]), "--artifacts", str(self.artifacts)]

    def _guide_args(self, ports: dict[str, int]) -> list[str]:
        torchserve = self.get("torchserve")
        return [*self._common_args(ports),
                "--activations", f"torchserve://{HOST}:{torchserve.ports['grpc']}"]

    def _dream_args(self, ports: dict[str, int]) -> list[str]:
        torchserve = self.get("torchserve")
        return [*self._common_args(ports), "--guide", self.get("guide").endpoint,
                "--torchserve", f"{HOST}:{torchserve.ports['grpc']}"]

    def describe(self) -> list[str]:
        """The endpoints of the started suite, one line each (for people)."""
        lines = []
        for proc in self.processes:
            main = proc.endpoint.rsplit(":", 1)[1]
            extra = "".join(f"  {k}={v}" for k, v in proc.ports.items() if str(v) != main)
            lines.append(f"  {proc.name:<11} {proc.endpoint}{extra}")
        lines += [f"  artifacts   {self.artifacts}", f"  logs        {self.run_dir / 'logs'}"]
        return lines

    def _gan_args(self, ports: dict[str, int]) -> list[str]:
        torchserve = self.get("torchserve")
        return [*self._common_args(ports), "--dream", self.get("dream").endpoint,
                "--torchserve-management", f"http://{HOST}:{torchserve.ports['management']}",
                "--torchserve-management-key-file", str(self._key_file()),
                "--torchserve-model-store", str(self.model_store)]

    def _start_prometheus(self) -> None:
        targets = {p.name: f"{HOST}:{p.ports['metrics']}" for p in self.processes}
        argv, ports, ready = prometheus_argv(self.run_dir / "prometheus", targets, HOST)
        proc = self._spawn("prometheus", argv, ports, health=ready)
        wait_serving(proc, 60.0)


# -- Prometheus ------------------------------------------------------------------------------


def one_pass_archives(store: str | os.PathLike) -> list[str]:
    """Names of the dream2dream archives (``dreamsuite gan export``) in the model store
    ``store``, sorted; other archives and unreadable files are left out."""
    names = []
    for path in sorted(Path(store).glob("*.mar")):
        try:
            with zipfile.ZipFile(path) as archive:
                if "dream2dream.json" in archive.namelist():
                    names.append(path.stem)
        except (OSError, zipfile.BadZipFile):
            continue
    return names
