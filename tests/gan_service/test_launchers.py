"""The local launcher's thread budget: from the GAN service's flags to what a real trainer
process applied (trainers beside each other and the services must not each take every core)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dreamsuite.artifacts import open_store
from dreamsuite.cpus import available_cpus
from dreamsuite.errors import InvalidArgument
from dreamsuite.gan.data import write_dataset
from dreamsuite.gan.train import TrainConfig
from services.gan import server
from services.gan.config import GanServiceConfig, add_arguments, config_from_args
from services.gan.launchers import LocalLauncher, _Child


def _wait(launcher: LocalLauncher, job_id: str, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while (status := launcher.poll(job_id)) == "running":
        if time.monotonic() > deadline:
            launcher.stop(job_id, grace=0)
            pytest.fail(f"the trainer of {job_id} ran past {timeout} s: "
                        f"{launcher.log_tail(job_id)}")
        time.sleep(0.1)
    return status


# --- the budget --------------------------------------------------------------------------------

def _parse(argv: list[str]) -> GanServiceConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def test_the_budget_leaves_a_share_of_the_cpus_for_the_services(monkeypatch):
    monkeypatch.delenv("DREAMSUITE_GAN_TRAINER_THREADS", raising=False)
    assert GanServiceConfig().trainer_thread_budget(cpus=2) == 1  # one trainer + the services
    assert GanServiceConfig().trainer_thread_budget(cpus=8) == 4
    assert GanServiceConfig(max_jobs=3).trainer_thread_budget(cpus=16) == 4
    assert GanServiceConfig(max_jobs=3).trainer_thread_budget(cpus=2) == 1  # at least 1
    assert GanServiceConfig(trainer_threads=3).trainer_thread_budget(cpus=2) == 3  # as told
    assert _parse([]).trainer_threads == 0
    assert _parse(["--trainer-threads", "2"]).trainer_thread_budget(cpus=64) == 2
    monkeypatch.setenv("DREAMSUITE_GAN_TRAINER_THREADS", "5")
    assert _parse([]).trainer_threads == 5
    with pytest.raises(InvalidArgument, match="--trainer-threads"):
        GanServiceConfig(trainer_threads=-1).validate()


def test_the_drain_of_a_replaced_version_is_a_flag():
    assert _parse([]).torchserve_drain == 2.0
    assert _parse(["--torchserve-drain", "30"]).torchserve_drain == 30.0
    with pytest.raises(InvalidArgument, match="--torchserve-drain"):
        GanServiceConfig(torchserve_drain=-1).validate()


def test_the_service_gives_its_local_launcher_the_budget_and_logs_it(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger=server.__name__):
        launcher = server._launcher(GanServiceConfig(), tmp_path)
    assert isinstance(launcher, LocalLauncher)
    assert launcher.threads == max(1, available_cpus() // 2)
    assert f"local trainers get {launcher.threads} torch thread(s) each" in caplog.text
    assert server._launcher(GanServiceConfig(trainer_threads=3), tmp_path).threads == 3


def test_each_trainer_gets_the_budget_in_its_config_and_environment(tmp_path):
    fake = tmp_path / "fake-python"  # prints what the trainer would be started with
    fake.write_text('#!/bin/sh\nprintf \'{"event": "env", "omp": "%s", "mkl": "%s", '
                    '"config": "%s"}\\n\' "$OMP_NUM_THREADS" "$MKL_NUM_THREADS" "$4"\n')
    fake.chmod(0o755)
    inherited = (os.environ.get("OMP_NUM_THREADS"), os.environ.get("MKL_NUM_THREADS"))
    for threads, expected in ((3, ("3", "3")), (None, inherited)):
        launcher = LocalLauncher(tmp_path / f"work-{threads}", python=str(fake), threads=threads)
        launcher.start("j1", {"job_id": "j1", "threads": None})
        assert _wait(launcher, "j1", timeout=30) == "succeeded"
        (event,) = launcher.events("j1")
        assert (event["omp"] or None, event["mkl"] or None) == expected
        written = json.loads(Path(event["config"]).read_text())
        assert written["threads"] == threads
    with pytest.raises(ValueError, match="threads"):
        LocalLauncher(tmp_path, threads=0)


# --- a real trainer ----------------------------------------------------------------------------

@pytest.mark.slow
def test_a_real_trainer_runs_its_steps_on_the_budget(tmp_path):
    store = open_store(tmp_path / "store")
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 32, 32, generator=g) for _ in range(6)]
    write_dataset(store, "d1", {"train": [(f"p{i}", x, x) for i, x in enumerate(images[:4])],
                                "holdout": [(f"h{i}", x, x) for i, x in enumerate(images[4:])]},
                  32)
    config = TrainConfig(job_id="j1", artifacts=store.url, dataset="d1", steps=2, batch=4,
                         checkpoint_every=2, width=4, preview_seeds=0, eval_every=-1,
                         device="cpu").to_dict()
    # 3: neither torch's default here nor the OMP_NUM_THREADS the tests run with; the
    # explicit env below loses to the config, as the trainer's order says.
    launcher = LocalLauncher(tmp_path / "work", threads=3, env={"OMP_NUM_THREADS": "1"})
    launcher.start("j1", config)
    status = _wait(launcher, "j1")
    events = launcher.events("j1")
    assert status == "succeeded", launcher.log_tail("j1")
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and {e["threads"] for e in progress} == {3}, events
    assert "trainer: 3 torch threads (config)" in launcher.log_tail("j1")
    assert events[-1] == {"event": "done", "step": 2}



def _stuck_trainer(tmp_path: Path, name: str) -> subprocess.Popen:
    """A stand-in trainer that ignores SIGTERM (as one stuck mid-step would), running."""
    script = tmp_path / f"{name}.py"
    script.write_text("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                      "print('ready', flush=True)\ntime.sleep(600)\n")
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE)
    assert process.stdout.readline().strip() == b"ready"
    return process


def test_closing_stops_every_trainer_within_one_grace_and_reads_only_the_logs_end(tmp_path):
    """Trainers were stopped one after another, up to the grace each (three stuck ones: three
    graces before the service could stop)."""
    launcher = LocalLauncher(tmp_path / "work")
    for name in ("a", "b", "c"):
        log_path = tmp_path / "work" / name / "trainer.log"
        log_path.parent.mkdir(parents=True)
        log_path.write_text("x" * 100_000 + "the end")
        launcher._children[name] = _Child(_stuck_trainer(tmp_path, name), log_path=log_path)
    assert launcher.log_tail("a", chars=7) == "the end"
    started = time.monotonic()
    launcher.close(grace=1.0)
    assert time.monotonic() - started < 2.5, "one grace for all, not one each"
    assert all(launcher.poll(name) != "running" for name in ("a", "b", "c"))
