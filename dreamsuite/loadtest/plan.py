"""One load test as data: what the command line hands the Locust process (a JSON file).

The command line checks everything before it writes a plan, so the Locust process trusts it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dreamsuite.loadtest.scenario import Scenario, Targets

__all__ = ["RunPlan", "MODES", "DEFAULT_MASTER_PORT"]

MODES = ("local", "master", "worker")
#: Locust's default port for its master (workers connect to it).
DEFAULT_MASTER_PORT = 5557


@dataclass(frozen=True)
class RunPlan:
    """A load test: whom to call (``targets``), with what (``scenario``), how hard (``users``
    started at ``spawn_rate`` per second) and until when (``duration`` seconds and/or
    ``dreams`` completed dreams, whichever comes first); ``stop_timeout`` is how long calls in
    flight may finish after that. ``mode``: ``local``, ``master`` (``expect_workers`` workers
    connect to ``master_bind_host:master_port``) or ``worker`` (connects to
    ``master_host:master_port``)."""

    targets: Targets
    scenario: Scenario
    users: int = 8
    spawn_rate: float = 2.0
    duration: float | None = 60.0
    dreams: int | None = None
    stop_timeout: float = 30.0
    mode: str = "local"
    master_host: str = "127.0.0.1"
    master_bind_host: str = "*"
    master_port: int = DEFAULT_MASTER_PORT
    expect_workers: int = 1
    expect_workers_timeout: float = 300.0
    csv_prefix: str | None = None
    html: str | None = None
    progress: bool = True
    verbose: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data["scenario"] = self.scenario.to_dict()
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> RunPlan:
        data = json.loads(text)
        data["targets"] = Targets(**data["targets"])
        data["scenario"] = Scenario.from_dict(data["scenario"])
        return cls(**data)

    def write(self, path: str | os.PathLike) -> Path:
        """Write the plan, readable by its owner only (it may carry the bearer token)."""
        path = Path(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(self.to_json())
        return path

    @classmethod
    def read(cls, path: str | os.PathLike) -> RunPlan:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))
