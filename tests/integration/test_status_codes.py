"""Status codes and exit codes the README promises, over real gRPC: missing pretrained weights
(FAILED_PRECONDITION), a guided dream while the guide service is down (UNAVAILABLE, the dream
service stays SERVING), a queued dream cancelled before it runs, ``dreamsuite health`` against
a server that is down, exit code 2 for bad input through ``--remote``."""

from __future__ import annotations

import gc
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2

from dreamsuite.cli import main
from dreamsuite.errors import WeightsMissing
from dreamsuite.images import encode_png, sample_image
from dreamsuite.torchserve import free_port
from services.dream.jobs import PreparedJob

pytestmark = pytest.mark.slow

SERVING = health_pb2.HealthCheckResponse.SERVING
ENDLESS = 5000  # steps: minutes of work, so a dream holds the worker until cancelled
LITE0 = "efficientnet_lite0"


def wait_until(predicate, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(0.02)


def prepared_jobs() -> int:
    """Decoded dream jobs alive in this process (the in-thread server's)."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is PreparedJob)


def test_missing_pretrained_weights_is_failed_precondition(dream_server, isolated_weights,
                                                          cat_png, svc, tmp_path, capsys):
    server = dream_server()
    request = svc.small_request(cat_png)
    request.backbone = "vgg16"
    request.maplist.layers[0].layer = "relu3_3"
    with server.client() as client:
        error = svc.expect_code(lambda: list(client.dream(request, timeout=60)),
                                grpc.StatusCode.FAILED_PRECONDITION)
        assert "vgg16-397923af.pth" in error.details() and "DREAMSUITE_WEIGHTS_DIR" in error.details()
        with pytest.raises(WeightsMissing, match="FAILED_PRECONDITION"):  # the table, backwards
            client.run(request, timeout=60)
        status = {b.name: b.weights_status for b in client.list_backbones().backbones}
    assert status["vgg16"] == "missing" and status[LITE0] == "embedded"
    assert server.health() == SERVING
    source = tmp_path / "cat.png"
    source.write_bytes(cat_png)
    code = main(["dream", str(source), "-o", str(tmp_path / "out.png"), "--remote",
                 server.address, "--backbone", "vgg16", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "FAILED_PRECONDITION" in err and "vgg16-397923af.pth" in err
    assert not (tmp_path / "out.png").exists()


def test_guided_dream_while_the_guide_service_is_down(dream_server, cat_png, svc):
    nobody = f"127.0.0.1:{free_port()}"
    server = dream_server(guide=nobody)
    guided = svc.small_request(cat_png)
    guided.guidance.guides.add(data=encode_png(sample_image("coffee", size=48)))
    with server.client() as client:
        error = svc.expect_code(lambda: list(client.dream(guided, timeout=60)),
                                grpc.StatusCode.UNAVAILABLE)
        assert f"guide service at {nobody}" in error.details()
        assert server.health() == SERVING
        updates = list(client.dream(svc.small_request(cat_png), timeout=120))  # unguided: fine
    assert updates[-1].HasField("result")
    assert server.sample("dream_job_seconds_count",
                         {"backbone": LITE0, "kind": "dream", "outcome": "error"}) == 1


def test_a_cancelled_queued_dream_never_runs_and_frees_its_place(dream_server, follow, cat_png,
                                                                svc):
    server = dream_server(queue_size=1)
    with server.client() as client:
        running = follow.stream(client.stub.Dream(
            svc.small_request(cat_png, octaves=1, steps=ENDLESS), timeout=300))
        wait_until(lambda: server.sample("dream_in_flight") == 1, what="the first dream")
        jobs = prepared_jobs()
        queued = follow.stream(client.stub.Dream(svc.small_request(cat_png), timeout=300))
        wait_until(lambda: server.sample("dream_queue_depth") == 1, what="the queued dream")
        assert prepared_jobs() == jobs + 1
        queued.call.cancel()
        queued.join(30)
        assert queued.error.code() == grpc.StatusCode.CANCELLED
        # Its place in the queue is free at once, not when the worker gets to it, and so is
        # its memory (the decoded images).
        wait_until(lambda: server.sample("dream_queue_depth") == 0, timeout=10,
                   what="the cancelled dream to leave the queue")
        wait_until(lambda: prepared_jobs() == jobs, timeout=10, what="the queued job's memory")
        later = follow.stream(client.stub.Dream(svc.small_request(cat_png), timeout=300))
        wait_until(lambda: server.sample("dream_queue_depth") == 1 or later.error,
                   what="the next dream to be queued")
        assert later.error is None, later.error  # not RESOURCE_EXHAUSTED
        running.call.cancel()
        later.join(120)
        running.join(30)
    assert later.error is None and later.messages[-1].HasField("result")
    assert server.sample("dream_rejected_total") == 0
    # Three dreams accepted; the cancelled queued one never ran: one ok, one cancelled.
    assert server.sample("dream_job_seconds_count",
                         {"backbone": LITE0, "kind": "dream", "outcome": "ok"}) == 1
    assert server.sample("dream_job_seconds_count",
                         {"backbone": LITE0, "kind": "dream", "outcome": "cancelled"}) == 1
    assert server.sample("dream_octave_seconds_count", {"backbone": LITE0}) == 2


def test_health_command_exits_non_zero_unless_serving(dream_server, follow):
    server = dream_server()
    up = follow.cli("health", server.address, timeout=60)
    assert up.returncode == 0 and "SERVING" in up.stdout, up.stdout + up.stderr
    unknown = follow.cli("health", server.address, "--service", "nope.v1.Nothing", timeout=60)
    assert unknown.returncode == 1 and "UNKNOWN_SERVICE" in unknown.stdout
    server.stop()
    down = follow.cli("health", server.address, "--timeout", "1", timeout=60)
    assert down.returncode == 1 and "UNREACHABLE" in down.stdout, down.stdout + down.stderr


@pytest.mark.parametrize(("flags", "says"), [
    (["--backbone", "resnet9000"], "resnet9000"),
    (["--layer", "block_6:999"], "999"),
    (["--octaves", "0"], "octaves"),
])
def test_remote_dream_bad_input_exits_2(dream_server, cat_png, tmp_path, capsys, flags, says):
    server = dream_server()
    source = tmp_path / "cat.png"
    source.write_bytes(cat_png)
    code = main(["dream", str(source), "-o", str(tmp_path / "out.png"), "--remote",
                 server.address, "--quiet", *flags])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("dreamsuite dream: error:") and says in err
    assert not (tmp_path / "out.png").exists()
