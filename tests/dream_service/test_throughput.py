"""Throughput rules with a real server on loopback: batches across requests, turns over
callers, deadlines of queued dreams."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest

from dreamsuite.images import encode_png, load_image, sample_image
from dreamsuite.v1 import dream_pb2_grpc

pytestmark = pytest.mark.slow

def request(svc, png: bytes, seed: int, layer: str, **schedule):
    req = svc.small_request(png, **({"octaves": 2, "steps": 3} | schedule), inline_images=True)
    req.maplist.layers[0].layer = layer
    req.seed = seed
    return req


def final_image(updates) -> np.ndarray:
    result = updates[-1].result
    return load_image(result.image).numpy()


def run_calls(client, requests, **kw):
    out: list = [None] * len(requests)

    def one(i):
        try:
            out[i] = list(client.dream(requests[i], timeout=300, **kw))
        except grpc.RpcError as exc:
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return out


def test_concurrent_dreams_batch_and_match_the_same_dreams_alone(dream_server, svc):
    png = encode_png(sample_image("coffee", size=64))
    # The default schedule (4 octaves x 10 steps), which magnifies any rounding difference.
    requests = [request(svc, png, seed, layer, octaves=4, steps=10)
                for seed, layer in ((0, "block_10"), (1, "block_6"), (2, "block_4"))]
    batched = dream_server(batching="always", max_batch=4, batch_window_ms=3000, queue_size=4)
    with batched.client() as client:
        together = run_calls(client, requests)
    assert batched.sample("dream_batch_size_count") == 1  # one batch ...
    assert batched.sample("dream_batch_size_sum") == 3  # ... of all three
    alone = dream_server(batching="off")
    with alone.client() as client:
        single = [list(client.dream(r, timeout=300)) for r in requests]
    assert alone.sample("dream_batch_size_sum") == 3 == alone.sample("dream_batch_size_count")
    for a, b in zip(single, together, strict=True):
        assert [u.octave for u in b] == [u.octave for u in a]  # octaves stream as before
        assert np.array_equal(final_image(a), final_image(b))  # bit for bit
        assert [u.loss for u in b] == [u.loss for u in a]


def test_a_cancelled_dream_leaves_its_batch_and_the_others_finish(dream_server, svc):
    png = encode_png(sample_image("coffee", size=64))
    requests = [request(svc, png, 0, "block_10", octaves=3, steps=4),
                request(svc, png, 1, "block_6", octaves=3, steps=4)]
    server = dream_server(batching="always", max_batch=2, batch_window_ms=3000)
    with server.client() as client:
        doomed = client.stub.Dream(requests[1], timeout=300)
        kept: list = []
        keeper = threading.Thread(
            target=lambda: kept.extend(client.dream(requests[0], timeout=300)))
        keeper.start()
        next(doomed)  # the first octave of the batch is done
        doomed.cancel()
        keeper.join(timeout=300)
    assert kept[-1].HasField("result")
    assert server.sample("dream_job_seconds_count",
                         {"backbone": "efficientnet_lite0", "kind": "dream", "outcome": "cancelled"}) == 1
    alone = dream_server(batching="off")
    with alone.client() as client:
        expected = list(client.dream(requests[0], timeout=300))
    # Its first octave was stepped in the batch, the later ones alone: the same dream exactly.
    assert [u.octave for u in kept] == [u.octave for u in expected] == [0, 1, 2]
    assert [u.loss for u in kept] == [u.loss for u in expected]
    assert np.array_equal(final_image(kept), final_image(expected))


def test_a_single_dream_starts_before_another_callers_queue_of_twenty(dream_server, svc):
    png = encode_png(sample_image("coffee", size=64))
    server = dream_server(batching="off", queue_size=25)
    hog_request = request(svc, png, 0, "block_4", octaves=1, steps=15)
    finished: list[tuple[str, float]] = []
    lock = threading.Lock()

    def hog_call(client):
        list(client.dream(hog_request, timeout=300))
        with lock:
            finished.append(("hog", time.monotonic()))

    # Two callers: two connections (channels with equal arguments would share one).
    own = grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)])
    with server.client() as hog, own:
        other = dream_pb2_grpc.DreamServiceStub(own)
        hogs = [threading.Thread(target=hog_call, args=(hog,)) for _ in range(20)]
        for thread in hogs:
            thread.start()
        deadline = time.monotonic() + 60
        while server.sample("dream_queue_depth") < 15 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.sample("dream_queue_depth") >= 15  # the hog's queue is long
        with lock:
            already = len(finished)
        list(other.Dream(request(svc, png, 1, "block_4", octaves=1, steps=15), timeout=300))
        done_at = time.monotonic()
        hogs_before = sum(1 for who, at in finished if at < done_at) - already
        for thread in hogs:
            thread.join(timeout=300)
    # The hog's running dream and at most one more finished first: not nineteen.
    assert hogs_before <= 2
    assert len(finished) == 20


def test_a_queued_dream_past_its_deadline_is_dropped_unstarted(dream_server, svc):
    png = encode_png(sample_image("coffee", size=64))
    server = dream_server(batching="off", queue_size=2)
    with server.client() as client:
        long_call = client.stub.Dream(request(svc, png, 0, "block_10", octaves=1, steps=10_000))
        deadline = time.monotonic() + 60
        while server.sample("dream_in_flight") < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(grpc.RpcError) as late:
            list(client.dream(request(svc, png, 1, "block_4", octaves=1, steps=1), timeout=1.0))
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        deadline = time.monotonic() + 10
        while server.sample("dream_queue_depth") > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.sample("dream_queue_depth") == 0  # gone from the queue, never started
        long_call.cancel()
        assert list(client.dream(request(svc, png, 2, "block_4", octaves=1, steps=1),
                                 timeout=120))[-1].HasField("result")
    assert server.sample("dream_dropped_total", {"reason": "deadline"}) == 1
    # Only the long dream (cancelled) and the last one ever reached a device.
    assert server.sample("dream_job_seconds_count",
                         {"backbone": "efficientnet_lite0", "kind": "dream", "outcome": "ok"}) == 1
    assert server.sample("dream_job_seconds_count",
                         {"backbone": "efficientnet_lite0", "kind": "dream", "outcome": "cancelled"}) == 1


def test_a_bad_request_is_invalid_even_when_the_queue_is_full(dream_server, svc):
    # Clients retry RESOURCE_EXHAUSTED: a request that can never run must not get it.
    png = encode_png(sample_image("coffee", size=64))
    server = dream_server(batching="off", queue_size=0)
    with server.client() as client:
        long_call = client.stub.Dream(request(svc, png, 0, "block_10", octaves=1, steps=10_000))
        deadline = time.monotonic() + 60
        while server.sample("dream_in_flight") < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        error = svc.expect_code(
            lambda: list(client.dream(request(svc, png, 1, "no_such_layer"), timeout=30)),
            grpc.StatusCode.INVALID_ARGUMENT)
        assert "no_such_layer" in error.details()
        broken = request(svc, b"not an image at all", 3, "block_4")
        error = svc.expect_code(lambda: list(client.dream(broken, timeout=30)),
                                grpc.StatusCode.INVALID_ARGUMENT)
        assert error.details().startswith("image")
        svc.expect_code(lambda: list(client.dream(request(svc, png, 2, "block_4"), timeout=30)),
                        grpc.StatusCode.RESOURCE_EXHAUSTED)  # a good one is refused: full
        long_call.cancel()
