"""Where training jobs run: a :class:`Launcher` starts the trainer
(``python -m dreamsuite.gan.train --config FILE``) for a job, tells whether it still runs,
stops it (SIGTERM: the trainer checkpoints first) and hands over its events.

:class:`LocalLauncher` runs each trainer as a child process of the service (in its own process
group, so a crash there cannot take the server down); the Kubernetes launcher
(:mod:`services.gan.kube`) submits Jobs instead.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from dreamsuite.cpus import thread_env
from dreamsuite.errors import Unavailable

__all__ = ["Launcher", "LocalLauncher"]

log = logging.getLogger(__name__)


class Launcher(Protocol):
    #: True when the trainer's events come through the store (``jobs/<id>/status.json``)
    #: rather than from :meth:`events` (a trainer in another pod).
    events_in_store: bool

    def start(self, job_id: str, config: dict) -> None: ...

    def poll(self, job_id: str) -> str:
        """``running``, ``succeeded``, ``failed`` or ``missing``."""
        ...

    def stop(self, job_id: str, *, grace: float) -> None: ...

    def events(self, job_id: str) -> list[dict]:
        """The trainer's events since the last call (may be empty)."""
        ...


@dataclass
class _Child:
    process: subprocess.Popen
    events: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    reader: threading.Thread | None = None
    log_path: Path | None = None


class LocalLauncher:
    """Trainers as child processes; their stdout (JSON lines) becomes events, their stderr goes
    to ``work_dir/<job_id>/trainer.log``.

    ``threads``: each trainer's thread budget, in its config (``threads``) and its environment
    (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``); trainers beside each other and beside the
    services must not each take every core. None: the trainer picks its own (its
    ``$OMP_NUM_THREADS``, else the CPUs it may use)."""

    events_in_store = False

    def __init__(self, work_dir: Path, *, python: str = sys.executable,
                 env: dict[str, str] | None = None, threads: int | None = None):
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, not {threads}")
        self.work_dir = Path(work_dir)
        self.python = python
        self.env = env
        self.threads = threads
        self._children: dict[str, _Child] = {}
        self._lock = threading.Lock()

    def start(self, job_id: str, config: dict) -> None:
        folder = self.work_dir / job_id
        folder.mkdir(parents=True, exist_ok=True)
        config_path = folder / "train.json"
        budget: dict[str, str] = {}
        if self.threads is not None:
            config = {**config, "threads": self.threads}
            budget = thread_env(self.threads)
        config_path.write_text(json.dumps(config, sort_keys=True))
        log_path = folder / "trainer.log"
        try:
            with open(log_path, "ab") as stderr:
                process = subprocess.Popen(
                    [self.python, "-m", "dreamsuite.gan.train", "--config", str(config_path)],
                    stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL,
                    env={**os.environ, **budget, **(self.env or {})}, start_new_session=True,
                )
        except OSError as exc:
            raise Unavailable(f"cannot start the trainer: {exc}") from None
        child = _Child(process, log_path=log_path)
        child.reader = threading.Thread(target=self._read, args=(process.stdout, child.events),
                                        name=f"trainer-{job_id[:8]}", daemon=True)
        child.reader.start()
        with self._lock:
            self._children[job_id] = child

    @staticmethod
    def _read(stream: IO[bytes], events: queue.SimpleQueue) -> None:
        for raw in stream:
            try:
                event = json.loads(raw)
            except ValueError:
                continue  # not an event (a stray print): the log has the rest
            if isinstance(event, dict):
                events.put(event)
        stream.close()

    def _child(self, job_id: str) -> _Child | None:
        with self._lock:
            return self._children.get(job_id)

    def poll(self, job_id: str) -> str:
        child = self._child(job_id)
        if child is None:
            return "missing"
        code = child.process.poll()
        if code is None:
            return "running"
        if child.reader is not None:
            child.reader.join(timeout=5)  # every event it printed is in the queue
        return "succeeded" if code == 0 else "failed"

    def exit_code(self, job_id: str) -> int | None:
        child = self._child(job_id)
        return None if child is None else child.process.poll()

    def pid(self, job_id: str) -> int | None:
        child = self._child(job_id)
        return None if child is None else child.process.pid

    def stop(self, job_id: str, *, grace: float) -> None:
        """SIGTERM (the trainer checkpoints, then exits); SIGKILL after ``grace`` seconds."""
        child = self._child(job_id)
        if child is None or child.process.poll() is not None:
            return
        child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while child.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if child.process.poll() is None:
            log.warning("trainer of job %s did not stop within %.0f s; killing it", job_id, grace)
            child.process.kill()
            child.process.wait()

    def events(self, job_id: str) -> list[dict]:
        child = self._child(job_id)
        out: list[dict] = []
        if child is None:
            return out
        while True:
            try:
                out.append(child.events.get_nowait())
            except queue.Empty:
                return out

    def log_tail(self, job_id: str, chars: int = 2000) -> str:
        child = self._child(job_id)
        if child is None or child.log_path is None or not child.log_path.is_file():
            return ""
        with open(child.log_path, "rb") as log_file:  # the end only: a log may be large
            size = log_file.seek(0, os.SEEK_END)
            log_file.seek(max(0, size - 4 * chars))
            return log_file.read().decode(errors="replace")[-chars:]

    def close(self, grace: float = 10.0) -> None:
        """Stop every running trainer (they checkpoint first): all asked at once, so the
        service's stop waits one ``grace`` at most, not one per trainer."""
        with self._lock:
            ids = list(self._children)
        stopping = [threading.Thread(target=self.stop, args=(job_id,), kwargs={"grace": grace},
                                     name=f"stop-{job_id[:8]}") for job_id in ids]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()
