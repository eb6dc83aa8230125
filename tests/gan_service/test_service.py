"""The GAN service on loopback: data sets dreamed through a real dream service, training jobs
in real child processes (watched, cancelled, killed and resumed), sampling by seed, errors."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
import torch

from dreamsuite.artifacts import open_store
from dreamsuite.clients.gan import GanClient
from dreamsuite.engine import DreamConfig
from dreamsuite.errors import InvalidArgument, NotFound, ResourceExhausted
from dreamsuite.gan.checkpoint import load_checkpoint
from dreamsuite.gan.data import read_manifest
from dreamsuite.gan.records import read_model
from dreamsuite.images import load_image
from dreamsuite.v1 import gan_pb2
from dreamsuite.wire.convert import request_from_config
from services.common.config import ServerConfig
from services.common.loop_thread import LoopThread
from services.gan.config import GanServiceConfig
from services.gan.launchers import LocalLauncher
from services.gan.server import GanServer, start_gan_server

pytestmark = pytest.mark.slow

SIZE = 32
TEMPLATE_CONFIG = DreamConfig(octaves=1, steps=2, seed=3)


@dataclass
class Gan:
    server: GanServer
    loop: LoopThread
    launcher: LocalLauncher
    artifacts: str

    def client(self) -> GanClient:
        return GanClient(self.server.address, timeout=60)

    def stop(self) -> None:
        self.loop.run(self.server.stop(grace=0), timeout=120)


@pytest.fixture
def gan_factory(tmp_path) -> Iterator:
    started: list[Gan] = []
    loop = LoopThread()

    def start(*, dream: str | None = None, artifacts: str | None = None, **fields) -> Gan:
        artifacts = artifacts or (tmp_path / "store").as_uri()
        launcher = LocalLauncher(tmp_path / f"work{len(started)}")
        config = GanServiceConfig(
            server=ServerConfig(host="127.0.0.1", port=0, metrics_port=0, grace_seconds=0),
            artifacts=artifacts, dream=dream, device="cpu", train_device="cpu",
            stop_grace=30, deterministic=True, **fields)
        server = loop.run(start_gan_server(config, launcher=launcher,
                                           work_dir=tmp_path / "work"), timeout=120)
        gan = Gan(server, loop, launcher, artifacts)
        started.append(gan)
        return gan

    yield start
    for gan in started:
        gan.stop()
    loop.close()


def _template() -> object:
    request = request_from_config(TEMPLATE_CONFIG, b"x")
    request.ClearField("image")
    return request


def _build(client: GanClient, **fields) -> list[gan_pb2.BuildDatasetResponse]:
    request = gan_pb2.BuildDatasetRequest(
        source=gan_pb2.DatasetSource(builtin="skimage"), dream=_template(),
        **{"size": SIZE, "crops_per_photo": 2, "concurrency": 2, **fields})
    return list(client.build_dataset(request, timeout=300))


@pytest.fixture
def built(dream_server, gan_factory):
    """A running dream service, a GAN service on it and a small built-in data set."""
    dreams = dream_server(queue_size=8)
    gan = gan_factory(dream=dreams.address)
    with gan.client() as client:
        updates = _build(client)
    return dreams, gan, updates


def test_a_data_set_builds_through_the_dream_service_and_a_rebuild_is_a_no_op(built):
    dreams, gan, updates = built
    last = updates[-1]
    assert last.HasField("dataset") and not last.existing
    assert [u.done for u in updates] == sorted(u.done for u in updates)
    assert last.done == last.total == 14  # 7 built-in photos x 2 crops
    store = open_store(gan.artifacts)
    manifest = read_manifest(store, last.dataset_id)
    assert (manifest.counts["train"], manifest.counts["holdout"]) == (10, 4)  # 2 photos held out
    holdout_photos = {i.photo for i in manifest.items if i.split == "holdout"}
    train_photos = {i.photo for i in manifest.items if i.split == "train"}
    assert len(holdout_photos) == 2 and not holdout_photos & train_photos  # split by photo
    assert manifest.dream_config["steps"] == 2 and manifest.dream_config["maplist"]
    item = manifest.items[0]
    dreamed, source = load_image(store.get(item.dream)), load_image(store.get(item.source))
    assert dreamed.shape == source.shape == (3, SIZE, SIZE)
    assert (dreamed - source).abs().mean() > 0.01  # it was dreamed, not copied
    served = dreams.sample("grpc_server_handled_total", {
        "grpc_method": "Dream", "grpc_code": "OK", "grpc_service": "dreamsuite.v1.DreamService",
        "grpc_type": "server_stream"})
    assert served == 14
    with gan.client() as client:
        again = _build(client)
    assert again[-1].existing and again[-1].dataset_id == last.dataset_id
    assert dreams.sample("grpc_server_handled_total", {
        "grpc_method": "Dream", "grpc_code": "OK", "grpc_service": "dreamsuite.v1.DreamService",
        "grpc_type": "server_stream"}) == 14  # nothing dreamed again


def test_bad_data_set_requests_get_the_right_codes(dream_server, gan_factory, tmp_path):
    gan = gan_factory(dream=dream_server().address, folder_roots=(tmp_path,))
    with gan.client() as client:
        with pytest.raises(InvalidArgument, match="source.folder"):
            list(client.build_dataset(gan_pb2.BuildDatasetRequest(
                source=gan_pb2.DatasetSource(folder="/etc"), dream=_template())))
        with pytest.raises(InvalidArgument, match="dream.image"):
            list(client.build_dataset(gan_pb2.BuildDatasetRequest(
                source=gan_pb2.DatasetSource(builtin="skimage"),
                dream=request_from_config(TEMPLATE_CONFIG, b"x"))))
        with pytest.raises(InvalidArgument, match="source.builtin"):
            list(client.build_dataset(gan_pb2.BuildDatasetRequest(
                source=gan_pb2.DatasetSource(builtin="nope"), dream=_template())))
        with pytest.raises(InvalidArgument, match="size"):
            _build(client, size=100_000)
        with pytest.raises(NotFound):
            client.start_training(gan_pb2.StartTrainingRequest(dataset="0" * 24, steps=2))
        with pytest.raises(NotFound):
            client.sample(gan_pb2.SampleRequest(model="nope", seeds=[1]))


def test_a_folder_source_reports_bad_images_and_skips_them(dream_server, gan_factory, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    from dreamsuite.images import sample_image, save_png

    for name in ("coffee", "rocket", "astronaut"):
        save_png(sample_image(name, size=48), photos / f"{name}.png")
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    gan = gan_factory(dream=dream_server().address, folder_roots=(tmp_path,))
    with gan.client() as client:
        updates = list(client.build_dataset(gan_pb2.BuildDatasetRequest(
            source=gan_pb2.DatasetSource(folder=str(photos)), dream=_template(), size=SIZE)))
    last = updates[-1]
    assert last.dataset.train + last.dataset.holdout == 3
    assert {(f.reason, f.count) for f in last.failures} == {("unreadable image", 1)}


def _train(client: GanClient, dataset: str, **fields) -> str:
    request = gan_pb2.StartTrainingRequest(dataset=dataset, model="dcgan64", batch=4, seed=7,
                                           **{"steps": 6, "checkpoint_every": 2,
                                              "eval_every": -1, **fields})
    request.width = 8
    return client.start_training(request)


def _state(progress: gan_pb2.TrainProgress) -> str:
    return gan_pb2.JobState.Name(progress.state).removeprefix("JOB_STATE_")


def test_a_job_streams_monotone_steps_checkpoints_evaluates_and_succeeds(built):
    _, gan, updates = built
    dataset = updates[-1].dataset_id
    with gan.client() as client:
        job = _train(client, dataset, eval_every=6)
        seen = list(client.watch(job, timeout=300))
        late = list(client.watch(job, timeout=30))  # a late watcher gets the final state
        models = client.models()
        jobs = client.jobs()
    steps = [p.step for p in seen]
    assert steps == sorted(steps) and _state(seen[-1]) == "SUCCEEDED" and seen[-1].step == 6
    assert seen[-1].checkpoint.step == 6 and seen[-1].checkpoint.sha256
    assert seen[-1].evaluation.metrics and seen[-1].HasField("preview")
    assert len(late) == 1 and _state(late[0]) == "SUCCEEDED"
    (model,) = [m for m in models if m.model == job]
    assert model.finished and model.step == 6 and model.dataset == dataset
    assert [j.job_id for j in jobs] == [job]


def test_cancel_checkpoints_then_ends_cancelled(built):
    _, gan, updates = built
    with gan.client() as client:
        job = _train(client, updates[-1].dataset_id, steps=100_000, checkpoint_every=1000)
        for progress in client.watch(job, timeout=300):
            if progress.step >= 2:
                break
        done = client.cancel(job)
    assert _state(done) == "CANCELLED" and done.checkpoint.step >= 2
    assert done.checkpoint.step == done.step  # SIGTERM checkpointed where it stopped


def test_over_the_job_limit_is_resource_exhausted(built):
    _, gan, updates = built
    with gan.client() as client:
        job = _train(client, updates[-1].dataset_id, steps=100_000, checkpoint_every=1000)
        with pytest.raises(ResourceExhausted, match="retry"):
            _train(client, updates[-1].dataset_id)
        client.cancel(job)


def _final_state(store, job: str) -> dict:
    record = read_model(store, job)
    return load_checkpoint(store, record["checkpoint"])


def test_a_killed_trainer_is_resumed_and_ends_with_the_weights_of_an_uninterrupted_run(built):
    _, gan, updates = built
    dataset = updates[-1].dataset_id
    with gan.client() as client:
        steady = _train(client, dataset, steps=8, checkpoint_every=2)
        list(client.watch(steady, timeout=300))
        killed = _train(client, dataset, steps=8, checkpoint_every=2)
        for progress in client.watch(killed, timeout=300):
            if progress.HasField("checkpoint") and progress.checkpoint.step >= 2:
                os.kill(gan.launcher.pid(killed), signal.SIGKILL)
                break
        final = list(client.watch(killed, timeout=300))[-1]
    assert _state(final) == "SUCCEEDED" and final.restarts == 1, final.message
    store = open_store(gan.artifacts)
    a, b = _final_state(store, steady), _final_state(store, killed)
    for key in ("G", "D", "G_ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after the resume"


def test_sampling_depends_on_the_seed_alone(built):
    _, gan, updates = built
    with gan.client() as client:
        job = _train(client, updates[-1].dataset_id, steps=2)
        list(client.watch(job, timeout=300))
        batch = client.sample(gan_pb2.SampleRequest(model=job, seeds=[5, 11, 12],
                                                    inline_images=True))
        again = client.sample(gan_pb2.SampleRequest(model=job, seeds=[5, 11, 12],
                                                    inline_images=True))
        alone = client.sample(gan_pb2.SampleRequest(model=job, seed=11, count=1,
                                                    inline_images=True))
        with pytest.raises(InvalidArgument):
            client.sample(gan_pb2.SampleRequest(model=job, seeds=[1], seed=2, count=2))
        with pytest.raises(InvalidArgument):
            client.sample(gan_pb2.SampleRequest(model=job, seeds=[1], truncation=-2))
        with pytest.raises(InvalidArgument):
            client.sample(gan_pb2.SampleRequest(model=job, seed=0, count=5000))
    assert [i.image for i in batch.images] == [i.image for i in again.images]
    difference = (load_image(batch.images[1].image) - load_image(alone.images[0].image)).abs()
    assert difference.max() <= 1 / 255 + 1e-6
    assert batch.images[0].image != batch.images[1].image
    assert all(i.artifact.uri and i.artifact.sha256 for i in batch.images)


def test_s3_down_during_a_checkpoint_loses_nothing_and_the_server_keeps_serving(
        s3, dream_server, gan_factory):
    artifacts = f"s3://gan?endpoint={s3.endpoint}&secure=false&retries=2"
    gan = gan_factory(dream=dream_server(queue_size=8).address, artifacts=artifacts)
    with gan.client() as client:
        dataset = _build(client)[-1].dataset_id
        job = _train(client, dataset, steps=8, checkpoint_every=2)
        stopped = threading.Event()
        for progress in client.watch(job, timeout=300):
            if progress.step >= 1 and not stopped.is_set():
                s3.stop()  # the next checkpoint fails; the trainer dies or retries
                stopped.set()
                time.sleep(3)
                s3.start()
        final = list(client.watch(job, timeout=300))[-1]
        assert gan.server.running.health  # the server object is alive
    assert _state(final) == "SUCCEEDED" and final.step == 8, final.message
    store = open_store(artifacts)
    latest = json.loads(store.get(f"jobs/{job}/checkpoints/latest"))
    assert latest["step"] == 8
    with GanClient(gan.server.address) as client:
        assert client.jobs()
    channel = grpc.insecure_channel(gan.server.address)
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    channel.close()


def test_unfinished_jobs_resume_when_the_service_restarts(built, gan_factory):
    dreams, gan, updates = built
    with gan.client() as client:
        job = _train(client, updates[-1].dataset_id, steps=10, checkpoint_every=2)
        for progress in client.watch(job, timeout=300):
            if progress.HasField("checkpoint"):
                break
    gan.stop()  # the trainer is stopped (it checkpoints); the job stays RUNNING in the store
    again = gan_factory(dream=dreams.address, artifacts=gan.artifacts)
    with again.client() as client:
        final = list(client.watch(job, timeout=300))[-1]
    assert _state(final) == "SUCCEEDED" and final.step == 10


# --- dream2dream: a one-pass dream model trained on (photo, dream) pairs as a job --------------


def _paired_datasets(artifacts: str, sizes: tuple[int, ...] = (24, 24)) -> list[str]:
    """Paired data sets written straight to the store (stripes stand in for dreams)."""
    from dreamsuite.gan.data import write_dataset

    store = open_store(artifacts)
    g = torch.Generator().manual_seed(0)
    ids = []
    for i, size in enumerate(sizes):
        photos = [torch.rand(3, size, size, generator=g) for _ in range(4)]
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        stripes = 0.5 + 0.5 * torch.sin((xx + (1 - 2 * i) * yy) * 0.8)
        write_dataset(store, f"pairs{i}-{size}", {
            "train": [(f"p{j}", x, 0.7 * x + 0.3 * stripes) for j, x in enumerate(photos[:3])],
            "holdout": [("h", photos[3], 0.7 * photos[3] + 0.3 * stripes)]}, size)
        ids.append(f"pairs{i}-{size}")
    return ids


def _train_d2d(client: GanClient, datasets: list[str], **fields) -> str:
    request = gan_pb2.StartTrainingRequest(model="dream2dream", datasets=datasets, batch=4, seed=7,
                                           **{"steps": 4, "checkpoint_every": 2,
                                              "eval_every": 4, **fields})
    request.width, request.crop, request.lr = 4, 16, 3e-3
    return client.start_training(request)


def test_a_dream2dream_job_trains_on_two_data_sets_and_is_evaluated(gan_factory):
    gan = gan_factory()
    datasets = _paired_datasets(gan.artifacts)
    with gan.client() as client:
        job = _train_d2d(client, datasets)
        seen = list(client.watch(job, timeout=300))
        (model,) = [m for m in client.models() if m.model == job]
        with pytest.raises(InvalidArgument, match="no latents"):
            client.sample(gan_pb2.SampleRequest(model=job, seeds=[1]))
        with pytest.raises(InvalidArgument, match="one size, not 16 px, 24 px"):
            _train_d2d(client, _paired_datasets(gan.artifacts, (24, 16)))
        with pytest.raises(InvalidArgument, match="datasets: a dcgan64 trains on one"):
            client.start_training(gan_pb2.StartTrainingRequest(model="dcgan64", datasets=datasets))
    final = seen[-1]
    assert _state(final) == "SUCCEEDED" and final.step == 4, final.message
    assert final.model == "dream2dream" and final.dataset == datasets[0]
    assert final.checkpoint.step == 4 and final.HasField("preview")
    metrics = final.evaluation.metrics
    assert {"l1_output_dream", "l1_photo_dream", "perceptual_output_dream",
            "perceptual_photo_dream", "perceptual_ratio"} <= set(metrics)
    assert metrics["pairs"] == 2 and metrics["holdout"] == 1
    assert all(p.d_loss == 0 for p in seen) and any(p.g_loss > 0 for p in seen)
    assert model.kind == "dream2dream" and model.finished and list(model.conditions) == datasets
    assert model.size == 24 and model.evaluation.metrics["perceptual_ratio"] > 0


def test_a_cancelled_dream2dream_job_checkpoints_where_it_stopped(gan_factory):
    gan = gan_factory()
    datasets = _paired_datasets(gan.artifacts)
    with gan.client() as client:
        job = _train_d2d(client, datasets, steps=100_000, checkpoint_every=1000, eval_every=-1)
        for progress in client.watch(job, timeout=300):
            if progress.step >= 2:
                break
        done = client.cancel(job)
    assert _state(done) == "CANCELLED" and done.checkpoint.step == done.step >= 2
    state = load_checkpoint(open_store(gan.artifacts), f"jobs/{job}/checkpoints/latest")
    assert state["kind"] == "dream2dream" and state["step"] == done.step
    assert [c["name"] for c in state["conditions"]] == datasets


def test_the_services_own_trainer_folder_is_removed_when_it_stops(tmp_path, monkeypatch):
    """Without a ``work_dir`` the local launcher's folder is a fresh temporary one, the
    service's own: it goes when the service stops (one leaked per start, before)."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    config = GanServiceConfig(
        server=ServerConfig(host="127.0.0.1", port=0, metrics_port=0, grace_seconds=0),
        artifacts=(tmp_path / "store").as_uri(), device="cpu", train_device="cpu")
    loop = LoopThread()
    try:
        server = loop.run(start_gan_server(config), timeout=120)
        assert isinstance(server.jobs.launcher, LocalLauncher)
        folder = server.jobs.launcher.work_dir
        assert folder.parent == tmp_path and folder.is_dir()
        (folder / "job" / "trainer.log").parent.mkdir()
        (folder / "job" / "trainer.log").write_text("a trainer's log")
        loop.run(server.stop(grace=0), timeout=120)
    finally:
        loop.close()
    assert not folder.exists()
