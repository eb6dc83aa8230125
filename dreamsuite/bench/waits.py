"""``dreamsuite bench waits``: a dream's time with OpenMP's default waits and with passive ones
(``OMP_WAIT_POLICY=PASSIVE``), on an idle machine and beside a busy process, in one run: the
figures an operator needs to choose the policy for a dream service that shares its machine.

OpenMP threads that wait at a barrier spin for a while by default (libgomp). On an idle machine
that is fastest; when another process holds a core, a team's spinning threads keep its own
descheduled thread from running and every parallel region waits for the scheduler. Measured on
2 cores (384 px, 3 octaves x 5 steps, 2 threads): idle 1.25 s default, 1.63 s passive; beside
one busy single-thread process 4.54 s default, 2.02 s passive. Neither is right for both, so
the suite leaves the variable to the operator (README, "Sharing a machine").

Each dream runs in a fresh process, since OpenMP reads the policy once, when torch loads it,
with ``--threads`` torch threads (default: every CPU this process may use). The busy neighbour
is another process doing matrix products on one thread, as a GAN trainer or a TorchServe worker
shares a machine with the dream service. Within each setting the two policies take turns, and
each figure is the median of ``--rounds`` dreams.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from dreamsuite.cpus import available_cpus

__all__ = ["main", "measure", "POLICIES"]

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
#: label -> the value of OMP_WAIT_POLICY in the dreaming process (None: unset, OpenMP's own).
POLICIES = {"default": None, "passive": "PASSIVE"}

_DREAM = """
import json, os, sys, time
import torch
torch.set_num_threads({threads})
from dreamsuite.engine import DreamConfig, dream
from dreamsuite.images import sample_image
image = sample_image("astronaut", size={size})
dream(image, DreamConfig(octaves=1, steps=1))  # load and warm outside the timed dream
started = time.perf_counter()
dream(image, DreamConfig(octaves={octaves}, steps={steps}, seed=0))
print(json.dumps({{"seconds": time.perf_counter() - started,
                  "policy": os.environ.get("{env}"), "threads": torch.get_num_threads()}}))
"""

_NEIGHBOUR = """
import torch
torch.set_num_threads(1)
a = torch.randn(384, 384)
while True:
    a = torch.tanh(a @ a)
"""


@dataclass
class WaitFigure:
    setting: str  # "idle" or "busy neighbour"
    default_seconds: float
    passive_seconds: float

    @property
    def ratio(self) -> float:
        return self.passive_seconds / self.default_seconds


def _child_env(policy: str | None, threads: int | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != WAIT_POLICY_ENV}
    if policy is not None:
        env[WAIT_POLICY_ENV] = policy
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _dream_once(args: argparse.Namespace, policy: str | None) -> dict:
    code = _DREAM.format(threads=args.threads, size=args.size, octaves=args.octaves,
                         steps=args.steps, env=WAIT_POLICY_ENV)
    out = subprocess.run([sys.executable, "-c", code], env=_child_env(policy), check=True,
                         capture_output=True, text=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(args: argparse.Namespace, setting: str) -> tuple[WaitFigure, list[dict]]:
    """Both policies, ``args.rounds`` dreams each, taking turns; ``setting`` is ``"idle"`` or
    ``"busy neighbour"`` (the neighbour process runs for the whole measurement)."""
    neighbour = None
    if setting != "idle":
        neighbour = subprocess.Popen([sys.executable, "-c", _NEIGHBOUR],
                                     env=_child_env("PASSIVE", threads=1),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # let it load torch and start working
    runs: dict[str, list[dict]] = {label: [] for label in POLICIES}
    try:
        for index in range(args.rounds):
            order = list(POLICIES) if index % 2 == 0 else list(reversed(POLICIES))
            for label in order:
                print(f"  {setting}: {label} waits, round {index + 1}/{args.rounds} ...",
                      file=sys.stderr, flush=True)
                runs[label].append(_dream_once(args, POLICIES[label]))
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    seconds = {label: statistics.median(r["seconds"] for r in rs) for label, rs in runs.items()}
    return (WaitFigure(setting, seconds["default"], seconds["passive"]),
            [{"setting": setting, "waits": label, **r} for label, rs in runs.items() for r in rs])


def main(args: argparse.Namespace) -> int:
    args.threads = args.threads or available_cpus()
    figures, runs = [], []
    for setting in ("idle", "busy neighbour"):
        figure, raw = measure(args, setting)
        figures.append(figure)
        runs += raw
    if args.json:
        print(json.dumps({"threads": args.threads, "size": args.size, "octaves": args.octaves,
                          "steps": args.steps, "rounds": args.rounds,
                          "figures": [{**asdict(f), "ratio": f.ratio} for f in figures],
                          "runs": runs}))
        return 0
    print(f"dream: {args.size} px, {args.octaves} octaves x {args.steps} steps, {args.threads} "
          f"torch threads, median of {args.rounds}; busy neighbour: one process, one thread")
    print(f"{'':<16}{'default waits':>15}{'passive waits':>15}{'passive/default':>17}")
    for f in figures:
        print(f"{f.setting:<16}{f.default_seconds:>13.2f} s{f.passive_seconds:>13.2f} s"
              f"{f.ratio:>17.2f}")
    return 0
