"""dreamsuite.gan.train: the job config, a tiny job end to end, resuming after SIGKILL and
SIGTERM (bit-exact on the CPU), and the job under torchrun.

Evaluation belongs to dreamsuite.gan.evaluate (tested on its own): in-process a stub stands in
for it through ``sys.modules``; job processes run with ``eval_every=-1`` (never).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import types
from pathlib import Path

import pytest
import torch
from PIL import Image

from dreamsuite.artifacts import open_store
from dreamsuite.errors import InvalidArgument
from dreamsuite.gan.checkpoint import load_checkpoint, load_latest, read_latest
from dreamsuite.gan.data import write_dataset
from dreamsuite.gan.sample import load_generator, sample
from dreamsuite.gan.train import DETERMINISTIC_THREADS, TrainConfig, main, run

REPO = Path(__file__).resolve().parents[2]
STUB_METRICS = {"kid_lite0": 0.5, "swd": 0.25}


def _dataset(store, *, n_train: int = 10, n_holdout: int = 2, size: int = 32) -> None:
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size, generator=g) for _ in range(n_train + n_holdout)]
    write_dataset(store, "d1", {
        "train": [(f"p{i}", x, x) for i, x in enumerate(images[:n_train])],
        "holdout": [(f"h{i}", x, x) for i, x in enumerate(images[n_train:])]}, size)


@pytest.fixture
def store(tmp_path):
    store = open_store(tmp_path.as_uri())
    _dataset(store)
    return store


@pytest.fixture
def evaluations(monkeypatch):
    """Stub evaluator: records its calls, returns :data:`STUB_METRICS`."""
    calls = []
    stub = types.ModuleType("dreamsuite.gan.evaluate")

    def job_evaluation(samples, train, holdout, *, device="cpu", seed=0):
        calls.append((samples, train, holdout, device, seed))
        return dict(STUB_METRICS)

    stub.job_evaluation = job_evaluation
    monkeypatch.setitem(sys.modules, "dreamsuite.gan.evaluate", stub)
    return calls


def _config(store, **overrides) -> TrainConfig:
    fields = dict(job_id="j1", artifacts=store.url, dataset="d1", steps=6, batch=8,
                  checkpoint_every=2, width=4, deterministic=True, preview_seeds=4)
    return TrainConfig(**{**fields, **overrides})


def _train(config: TrainConfig, store, **kwargs) -> tuple[str, list[dict]]:
    events: list[dict] = []
    outcome = run(config, store, emit=events.append, **kwargs)
    json.dumps(events, allow_nan=False)  # every event is plain JSON
    return outcome, events


def _assert_same(a, b, where: str = "") -> None:
    """Equal nested checkpoints: tensors bit for bit, everything else by ==."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


_TRAINED = ("G", "D", "G_ema", "opt_G", "opt_D", "data", "rank_rng", "step")


# --- the config -------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("job_id", "a/b"), ("dataset", ""), ("model", "nope"), ("steps", 0), ("batch", 0),
    ("seed", -1), ("checkpoint_every", 0), ("eval_every", -2), ("lr", 0.0), ("lr", float("nan")),
    ("width", 1), ("ema_decay", 1.0), ("augment", "blur"), ("preview_seeds", 1000),
    ("device", "gpu0"), ("deterministic", "yes"), ("steps", 2.5), ("threads", 0),
    ("threads", "2"),
])
def test_config_names_the_bad_field(field, value):
    with pytest.raises(InvalidArgument, match=f"^{field}: "):
        fields = {"job_id": "j", "artifacts": "/tmp/a", "dataset": "d", field: value}
        TrainConfig(**fields).validate()


def test_config_round_trips_and_refuses_unknown_fields():
    config = TrainConfig(job_id="j", artifacts="/tmp/a", dataset="d", model="fastgan128", width=16)
    assert TrainConfig.from_dict(config.to_dict()) == config
    old = {k: v for k, v in config.to_dict().items() if k != "threads"}  # before the field
    assert TrainConfig.from_dict(old).threads is None
    assert TrainConfig.from_dict({**old, "threads": 3}).threads == 3
    with pytest.raises(InvalidArgument, match="unknown training config fields: stpes"):
        TrainConfig.from_dict({**config.to_dict(), "stpes": 3})
    with pytest.raises(InvalidArgument, match="^dataset: required"):
        TrainConfig.from_dict({"job_id": "j", "artifacts": "/tmp/a"})


# --- a tiny job, in-process ---------------------------------------------------------------------


def test_tiny_job_checkpoints_previews_evaluates_and_records(store, evaluations):
    before = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    outcome, events = _train(_config(store), store)
    assert outcome == "done"
    assert (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()) == before

    progress = [e for e in events if e["event"] == "progress"]
    steps = [e["step"] for e in progress]
    assert steps == sorted(steps) and steps[0] == 1 and steps[-1] == 6
    assert all(e["total"] == 6 and e["images_seen"] == 8 * e["step"] for e in progress)
    running = [e for e in progress if e["state"] == "RUNNING"]
    assert all(-1 <= e["d_real_sign"] <= 1 and e["d_loss"] > 0 for e in running)
    assert {e["threads"] for e in progress} == {DETERMINISTIC_THREADS}, "deterministic mode"
    assert progress[-1]["state"] == "EVALUATING"

    checkpoints = [e for e in events if e["event"] == "checkpoint"]
    assert [e["step"] for e in checkpoints] == [2, 4, 6]
    for e in checkpoints:
        assert hashlib.sha256(store.get(e["key"])).hexdigest() == e["sha256"]
        assert load_checkpoint(store, e["key"], e["sha256"])["step"] == e["step"]
    assert read_latest(store, "j1") == {k: checkpoints[-1][k] for k in ("key", "step", "sha256")}

    previews = [e for e in events if e["event"] == "preview"]
    assert [e["step"] for e in previews] == [2, 4, 6]
    grid = Image.open(io.BytesIO(store.get(previews[-1]["key"])))
    assert grid.size == (2 + 2 * 66, 2 + 2 * 66)  # 4 seeds: 2x2 images of 64 px, 2 px apart

    (evaluation,) = [e for e in events if e["event"] == "evaluation"]
    assert evaluation == {"event": "evaluation", "step": 6, "metrics": STUB_METRICS}
    samples, train, holdout, device, seed = evaluations[0]
    assert samples.shape == (64, 3, 64, 64) and train.shape == (10, 3, 64, 64)
    assert holdout.shape == (2, 3, 64, 64) and (device, seed) == ("cpu", 0)
    assert samples.min() >= 0 and samples.max() <= 1 and train.min() >= 0 and train.max() <= 1

    assert events[-1] == {"event": "done", "step": 6}
    record = json.loads(store.get("models/j1.json"))
    assert record == {"model": "j1", "kind": "dcgan64", "dataset": "d1", "step": 6,
                      "checkpoint": checkpoints[-1]["key"], "sha256": checkpoints[-1]["sha256"],
                      "evaluation": STUB_METRICS, "finished": True, "size": 64}
    status = json.loads(store.get("jobs/j1/status.json"))
    assert status["event"] == "done" and status["progress"]["step"] == 6

    # started again, a finished job only says so
    outcome, events = _train(_config(store), store)
    assert (outcome, events) == ("done", [{"event": "done", "step": 6}])
    assert read_latest(store, "j1")["sha256"] == checkpoints[-1]["sha256"]


@pytest.mark.parametrize("model", ["dcgan64", "projected64"])
def test_a_stopped_job_resumes_to_the_same_weights_as_one_never_stopped(store, evaluations,
                                                                          model):
    _train(_config(store, job_id="whole", model=model), store)
    asked = iter([False] * 3 + [True])
    outcome, events = _train(_config(store, job_id="part", model=model), store,
                             should_stop=lambda: next(asked))
    assert outcome == "stopped"
    stopped = events[-1]
    assert stopped == {"event": "stopped", "step": 3, "key": "jobs/part/checkpoints/step-00000003.pt"}
    assert read_latest(store, "part")["step"] == 3
    assert json.loads(store.get("jobs/part/status.json"))["event"] == "stopped"
    outcome, events = _train(_config(store, job_id="part", model=model), store)
    assert outcome == "done" and events[0]["step"] == 4
    whole, part = load_latest(store, "whole"), load_latest(store, "part")
    for name in _TRAINED:
        _assert_same(whole[name], part[name], name)


def test_resuming_with_another_seed_or_model_is_refused(store, evaluations):
    _train(_config(store, steps=2), store)
    with pytest.raises(InvalidArgument, match="^seed: job 'j1' was started with seed=0"):
        run(_config(store, steps=4, seed=1), store)


def test_evaluation_every_n_steps_and_a_failing_evaluator_does_not_fail_the_job(store, monkeypatch):
    stub = types.ModuleType("dreamsuite.gan.evaluate")
    stub.job_evaluation = lambda *a, **k: 1 / 0
    monkeypatch.setitem(sys.modules, "dreamsuite.gan.evaluate", stub)
    outcome, events = _train(_config(store, eval_every=2, preview_seeds=0), store)
    assert outcome == "done"
    evaluations = [e for e in events if e["event"] == "evaluation"]
    assert [e["step"] for e in evaluations] == [2, 4, 6]
    assert all("ZeroDivisionError" in e["error"] and e["metrics"] == {} for e in evaluations)
    assert not [e for e in events if e["event"] == "preview"]
    assert "ZeroDivisionError" in json.loads(store.get("models/j1.json"))["evaluation"]["error"]


def test_eval_every_minus_one_never_evaluates(store, evaluations):
    outcome, events = _train(_config(store, eval_every=-1), store)
    assert outcome == "done" and not evaluations
    assert not [e for e in events if e["event"] == "evaluation"]
    assert json.loads(store.get("models/j1.json"))["evaluation"] == {}


def test_job_process_reports_a_missing_data_set_as_its_last_event(tmp_path, capsys):
    path = tmp_path / "job.json"
    path.write_text(json.dumps(TrainConfig(job_id="j1", artifacts=tmp_path.as_uri(),
                                           dataset="missing").to_dict()))
    assert main(["--config", str(path)]) == 1
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert last["event"] == "error" and "'missing'" in last["message"]
    status = json.loads(open_store(tmp_path.as_uri()).get("jobs/j1/status.json"))
    assert status["event"] == "error"


@pytest.mark.slow
def test_fastgan128_trains_checkpoints_and_samples(store, evaluations):
    config = _config(store, model="fastgan128", steps=2, batch=4, checkpoint_every=1,
                     preview_seeds=1)
    outcome, events = _train(config, store)
    assert outcome == "done"
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [1, 2]
    assert all(e["d_loss"] is not None for e in events if e["event"] == "progress")
    generator, kind = load_generator(store, "jobs/j1/checkpoints/latest", "cpu")
    assert kind.name == "fastgan128"
    images = sample(generator, [0, 1], truncation=2.0)
    assert images.shape == (2, 3, 128, 128) and images.std() > 0


def test_projected64_trains_checkpoints_and_samples(store, evaluations):
    """The projected discriminator's checkpoint holds its heads, not the frozen backbone, and
    the generator samples like any other."""
    config = _config(store, model="projected64", steps=2, batch=4, checkpoint_every=1,
                     preview_seeds=1)
    outcome, events = _train(config, store)
    assert outcome == "done"
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [1, 2]
    state = load_latest(store, "j1")
    assert state["kind"] == "projected64"
    assert {k.split(".")[0] for k in state["D"]} == {"mix_channels", "mix_scales", "heads"}
    generator, kind = load_generator(store, "jobs/j1/checkpoints/latest", "cpu")
    assert kind.name == "projected64"
    images = sample(generator, [0, 1], truncation=2.0)
    assert images.shape == (2, 3, 64, 64) and images.std() > 0


# --- job processes: SIGKILL, SIGTERM, torchrun --------------------------------------------------


class _Job:
    """``python -m dreamsuite.gan.train`` (or torchrun) with its stdout read line by line."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=REPO, env=env)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def until(self, event: str, timeout: float = 120) -> list[dict]:
        """Events up to and including the first ``event`` one."""
        seen = []
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                self.proc.kill()
                raise AssertionError(f"no {event!r} event in {timeout} s; got {seen}") from None
            if line is None:
                raise AssertionError(f"job ended without {event!r}: {seen}\n{''.join(self.stderr)}")
            seen.append(json.loads(line))
            if seen[-1]["event"] == event:
                return seen

    def finish(self, timeout: float = 300) -> tuple[int, list[dict]]:
        events = self.until("done", timeout)
        return self.proc.wait(timeout=timeout), events


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """A store with the data set, and a starter of job processes (that never evaluate)."""
    root = tmp_path_factory.mktemp("jobs")
    store = open_store(root / "store")
    _dataset(store)
    # TMPDIR: torchrun's per-run log folders (torchelastic_*) stay in this test's folder
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(root)}
    started: list[_Job] = []

    def start(job_id: str, *, launcher: list[str] | None = None, **overrides) -> _Job:
        config = _config(store, **{"job_id": job_id, "steps": 40, "checkpoint_every": 5,
                                   "preview_seeds": 0, "eval_every": -1,
                                   **overrides})
        path = root / f"{job_id}.json"
        path.write_text(json.dumps(config.to_dict()))
        argv = [*(launcher or [sys.executable]), "-m", "dreamsuite.gan.train", "--config", str(path)]
        started.append(_Job(argv, env))
        return started[-1]

    start.store = store
    yield start
    for job in started:
        if job.proc.poll() is None:
            job.proc.kill()
            job.proc.wait()


@pytest.fixture(scope="module")
def uninterrupted(jobs):
    code, events = jobs("whole").finish()
    assert code == 0 and events[-1] == {"event": "done", "step": 40}
    return load_latest(jobs.store, "whole")


@pytest.mark.slow
def test_killed_job_resumes_to_exactly_the_uninterrupted_weights(jobs, uninterrupted):
    first = jobs("killed")
    first.until("checkpoint")
    first.proc.send_signal(signal.SIGKILL)
    assert first.proc.wait(timeout=60) == -signal.SIGKILL
    saved = read_latest(jobs.store, "killed")["step"]
    assert 5 <= saved < 40, "killed mid-run, after at least one checkpoint"

    code, events = jobs("killed").finish()
    assert code == 0
    assert events[0]["event"] == "progress" and events[0]["step"] == saved + 1, "resumed"
    final = load_latest(jobs.store, "killed")
    for name in _TRAINED:
        _assert_same(uninterrupted[name], final[name], name)


@pytest.mark.slow
def test_sigterm_checkpoints_then_stops_and_loses_no_step(jobs, uninterrupted):
    first = jobs("terminated")
    first.until("checkpoint")
    first.proc.send_signal(signal.SIGTERM)
    stopped = first.until("stopped")[-1]
    assert first.proc.wait(timeout=60) == 0
    pointer = read_latest(jobs.store, "terminated")
    assert pointer["step"] == stopped["step"] and pointer["key"] == stopped["key"]
    assert stopped["step"] < 40

    code, events = jobs("terminated").finish()
    assert code == 0 and events[0]["step"] == stopped["step"] + 1
    final = load_latest(jobs.store, "terminated")
    for name in _TRAINED:
        _assert_same(uninterrupted[name], final[name], name)


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_train_shards_and_only_rank_zero_reports(jobs):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    job = jobs("ddp", steps=3, checkpoint_every=2, deterministic=False, launcher=[
        torchrun, "--standalone", "--nproc-per-node", "2"])
    code, events = job.finish()
    assert code == 0, "".join(job.stderr)
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [2, 3]
    job.proc.wait()
    rest = [json.loads(line) for line in iter(job.lines.get, None)]
    assert not any(e["event"] == "done" for e in rest), "one rank reports"
    state = load_latest(jobs.store, "ddp")
    assert len(state["rank_rng"]["noise"]) == 2, "every rank's RNG state is in the checkpoint"
    assert not torch.equal(state["rank_rng"]["noise"][0], state["rank_rng"]["noise"][1])
    assert state["step"] == 3 and state["images_seen"] == 3 * 8


@pytest.mark.slow
def test_torchrun_ranks_wait_for_rank_zeros_evaluation_mid_run(jobs):
    """Rank 0 evaluates between steps while rank 1 waits at a barrier; both go on and end."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    job = jobs("ddp-eval", steps=3, checkpoint_every=2, eval_every=2, deterministic=False,
               launcher=[torchrun, "--standalone", "--nproc-per-node", "2"])
    code, events = job.finish()
    assert code == 0, "".join(job.stderr)
    evaluations = [e for e in events if e["event"] == "evaluation"]
    assert [e["step"] for e in evaluations] == [2, 3]
    assert all(e["metrics"] and "error" not in e for e in evaluations), evaluations


@pytest.mark.parametrize("value", ["0", "-5", "soon", "nan", "inf"])
def test_a_bad_collective_timeout_is_refused_by_name(value):
    from dreamsuite.gan.train import DIST_TIMEOUT_ENV, dist_timeout

    with pytest.raises(InvalidArgument, match=DIST_TIMEOUT_ENV):
        dist_timeout({DIST_TIMEOUT_ENV: value})


def test_the_collective_timeout_outlasts_an_evaluation_by_default():
    from dreamsuite.gan.train import DIST_TIMEOUT_ENV, dist_timeout

    assert dist_timeout({}).total_seconds() == 3600  # NCCL's own default is 600
    assert dist_timeout({DIST_TIMEOUT_ENV: "90"}).total_seconds() == 90


def test_every_rank_meets_at_a_barrier_after_an_evaluation_and_the_group_gets_the_timeout(
        monkeypatch):
    """Under torchrun, rank 0 evaluates (it has the emitter) and every rank then meets at one
    barrier; the process group is created with the collective timeout."""
    import torch.distributed as dist

    from dreamsuite.gan import train as train_module
    from dreamsuite.gan.job import Job

    barriers, evaluated = [], []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "barrier", lambda **kw: barriers.append(kw))
    monkeypatch.setattr(Job, "_evaluate_here", lambda self: evaluated.append(self.emit))
    for emit in (print, None):  # rank 0, another rank
        job = Job.__new__(Job)
        job.emit, job.trainer = emit, type("T", (), {"device": torch.device("cpu")})()
        job._evaluate()
    assert evaluated == [print]
    assert barriers == [{"device_ids": None}, {"device_ids": None}]

    created = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: created.append(
        (backend, kw)))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv(train_module.DIST_TIMEOUT_ENV, "120")
    world = train_module._start_world("cpu")
    assert (world.rank, world.size) == (1, 2)
    assert created == [("gloo", {"timeout": train_module.dist_timeout()})]
    assert created[0][1]["timeout"].total_seconds() == 120
