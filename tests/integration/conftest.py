"""Fixtures of the integration tests: the suite's services started the way users start them,
``dreamsuite serve dream|guide`` in a subprocess of its own (a process group, so a test can send
it real signals), with everything it logs captured to a file.

``serve("dream", "--grace-seconds", "5", env={...})`` starts one on a free loopback port (it
binds port 0 and the test reads the port from its log line), waits until gRPC health says
SERVING and returns a :class:`Served`; whatever is still running at teardown is killed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dreamsuite.clients import open_channel

_EXE = Path(sys.executable).with_name("dreamsuite")
#: The installed entry point (what users run), else the same main() in a fresh interpreter.
CLI = [str(_EXE)] if _EXE.exists() else [
    sys.executable, "-c", "import sys; from dreamsuite.cli import main; sys.exit(main())"]
_SERVING_LINE = re.compile(r"serving (?:\S+, )*\S+ on [^\s:]+:(\d+) \((TLS|plaintext)\)")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def clean_env(env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment without any ``DREAMSUITE_*``/``AWS_*`` setting of the shell
    that runs the tests, plus ``env`` (a ``None`` value removes the variable)."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("DREAMSUITE_", "AWS_"))}
    base["PYTHONUNBUFFERED"] = "1"
    for key, value in (env or {}).items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def run_cli(*args: str, env: Mapping[str, str | None] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """``dreamsuite ARGS...`` in a fresh process: its exit code, stdout and stderr."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env=clean_env(env))


@dataclass
class Served:
    """A ``dreamsuite serve`` process and where it listens."""

    name: str
    process: subprocess.Popen
    log: Path
    tls_ca: Path | None = None
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        """Everything the process wrote so far (stdout and stderr)."""
        return self.log.read_text(errors="replace")

    def health(self, service: str = "", timeout: float = 5) -> int:
        """The gRPC health status (``SERVING`` ...); grpc.RpcError when nothing answers."""
        with open_channel(self.address, tls_ca=self.tls_ca) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return reply.status

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def ready(self, timeout: float = 300) -> Served:
        """Wait until it listens (its port read from its log) and reports SERVING."""
        if not self.port:
            self.port = _wait_for_port(self, timeout)
            _wait_serving(self, timeout)
        return self

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)


def _wait_for_port(served: Served, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _SERVING_LINE.search(served.output())
        if found:
            return int(found.group(1))
        if served.process.poll() is not None:
            break
        time.sleep(0.1)
    served.kill()
    raise AssertionError(f"dreamsuite serve {served.name} did not start "
                         f"(exit code {served.process.poll()}):\n{served.output()[-4000:]}")


def _wait_serving(served: Served, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if served.health() == SERVING:
                return
        except grpc.RpcError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{served.name} never reported SERVING:\n{served.output()}")
        time.sleep(0.1)


DEFAULT_FLAGS = {
    "dream": ["--preload", "", "--device", "cpu"],
    "guide": ["--activations", "inprocess", "--device", "cpu"],
}


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """``serve(service, *flags, env=None, tls_ca=None, verbose=False, wait=True)``:
    ``dreamsuite serve SERVICE`` on 127.0.0.1, a port of its own choosing, metrics off, CPU; the
    dream service stores artifacts under ``tmp_path`` and preloads nothing. ``env`` is added to
    a clean environment (see :func:`clean_env`); ``tls_ca`` is what health checks trust.
    ``wait=False`` returns at once (start several side by side, then call ``ready()``)."""
    started: list[Served] = []

    def start(service: str, *flags: str, env: Mapping[str, str | None] | None = None,
              tls_ca: Path | None = None, verbose: bool = False, wait: bool = True,
              timeout: float = 300) -> Served:
        log = tmp_path / f"{service}-{len(started)}.log"
        defaults = list(DEFAULT_FLAGS[service])
        if service == "dream" and "--artifacts" not in flags:
            defaults += ["--artifacts", (tmp_path / "artifacts").as_uri()]
        command = [*CLI, *(["-v"] if verbose else []), "serve", service, "--host", "127.0.0.1",
                   "--port", "0", "--metrics-port", "-1", *defaults, *flags]
        with open(log, "wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                       env=clean_env(env), start_new_session=True)
        served = Served(service, process, log, tls_ca)
        started.append(served)
        return served.ready(timeout) if wait else served

    yield start
    for served in started:
        served.kill()


# --- following calls from background threads -----------------------------------------------


class HealthWatch:
    """``grpc.health.v1.Health/Watch`` of one service, followed in a background thread: every
    status the server sends, in order."""

    def __init__(self, address: str, service: str = "", tls_ca: Path | None = None):
        self.statuses: list[int] = []
        self.error: grpc.RpcError | None = None
        self.ended = False
        self._changed = threading.Condition()
        self._channel = open_channel(address, tls_ca=tls_ca)
        self._call = health_pb2_grpc.HealthStub(self._channel).Watch(
            health_pb2.HealthCheckRequest(service=service), timeout=900)
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.thread.start()

    def _follow(self) -> None:
        try:
            for reply in self._call:
                with self._changed:
                    self.statuses.append(reply.status)
                    self._changed.notify_all()
        except grpc.RpcError as exc:
            self.error = exc
        with self._changed:
            self.ended = True
            self._changed.notify_all()

    def wait_for(self, status: int, timeout: float = 30) -> bool:
        """Whether ``status`` arrives (or had arrived) within ``timeout`` seconds."""
        with self._changed:
            self._changed.wait_for(lambda: status in self.statuses or self.ended, timeout)
            return status in self.statuses

    def close(self) -> None:
        self._call.cancel()
        self._channel.close()


class Following:
    """A server-streaming call drained in a background thread: the messages with the time each
    arrived, the error it ended with (if any), an event set at the first message."""

    def __init__(self, call):
        self.call = call
        self.messages: list = []
        self.arrived: list[float] = []
        self.error: grpc.RpcError | None = None
        self.first = threading.Event()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        try:
            for message in self.call:
                self.messages.append(message)
                self.arrived.append(time.monotonic())
                self.first.set()
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self.first.set()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the call did not end within {timeout} s"


@pytest.fixture(scope="session")
def follow() -> SimpleNamespace:
    """``follow.health(address, service)`` and ``follow.stream(call)`` (conftest modules are not
    importable under importlib mode)."""
    return SimpleNamespace(health=HealthWatch, stream=Following, cli=run_cli)
