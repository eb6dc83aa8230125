"""One side of the load tester's overhead benchmark: ``python -m dreamsuite.loadtest.probe
MODE TARGET REQUEST_FILE``.

Every side calls ``ComputeGuideWeights`` at TARGET with the serialised request in
REQUEST_FILE, warms up, prints ``ready``, then for each line ``N`` read on stdin makes N calls
and prints one JSON line ``{"reported_ms": [...], "wall_ms": [...]}``. MODE:

- ``plain``: a plain blocking client (:func:`dreamsuite.clients.open_channel` and the generated
  stub), each call timed around the stub call, back to back;
- ``pool``: the same plain client, each call made and timed in a worker thread
  (``concurrent.futures.ThreadPoolExecutor``, the standard way to make blocking calls
  concurrently): its calls are paced as the load tester's are, by a hand-over to a native
  thread and back between calls;
- ``locust``: the load tester: a Locust environment and runner, each call made by
  :func:`dreamsuite.loadtest.calls.unary` from a greenlet exactly as a Locust user makes it (a
  user's channel, a native thread of gevent's pool); ``reported_ms`` are the times it reported
  to Locust's request event (so to Locust's statistics), ``wall_ms`` the whole instrumented
  call as the greenlet sees it, hand-over and reporting included;
- ``gevent``: for reference, the textbook way: the process patched by gevent,
  ``grpc.experimental.gevent.init_gevent()``, the same call made from the greenlet itself.
"""

import os
import sys

_MODE = sys.argv[1] if __name__ == "__main__" and len(sys.argv) > 1 else ""
if _MODE == "gevent":
    from gevent import monkey

    monkey.patch_all()
    from grpc.experimental import gevent as grpc_gevent

    grpc_gevent.init_gevent()
else:  # as in the Locust process of a load test (dreamsuite.loadtest.users)
    os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"

import json  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

from dreamsuite.clients import open_channel  # noqa: E402
from dreamsuite.loadtest import calls  # noqa: E402
from dreamsuite.loadtest.connect import stub_method, user_channel  # noqa: E402
from dreamsuite.v1 import guide_pb2, guide_pb2_grpc  # noqa: E402

__all__ = ["main", "MODES"]

MODES = ("plain", "pool", "locust", "gevent")
_TIMEOUT = 30.0
_WARMUP = 20

Caller = Callable[[int], tuple[list[float], list[float]]]


def plain_caller(target: str, request: guide_pb2.GuideWeightsRequest) -> Caller:
    stub = guide_pb2_grpc.GuideServiceStub(open_channel(target))

    def run(count: int) -> tuple[list[float], list[float]]:
        times = []
        for _ in range(count):
            started = time.perf_counter()
            stub.ComputeGuideWeights(request, timeout=_TIMEOUT)
            times.append((time.perf_counter() - started) * 1000.0)
        return times, times

    return run


def pool_caller(target: str, request: guide_pb2.GuideWeightsRequest) -> Caller:
    from concurrent.futures import ThreadPoolExecutor

    one = plain_caller(target, request)
    pool = ThreadPoolExecutor(1, thread_name_prefix="probe")

    def run(count: int) -> tuple[list[float], list[float]]:
        times = []
        for _ in range(count):
            times += pool.submit(one, 1).result()[0]
        return times, times

    return run


def locust_caller(target: str, request: guide_pb2.GuideWeightsRequest, *,
                  in_threads: bool) -> Caller:
    # Locust and gevent only here: the plain side must not load them.
    import gevent
    from locust.env import Environment

    from dreamsuite.loadtest.users import in_thread

    environment = Environment(user_classes=[])
    environment.create_local_runner()  # its listener keeps Locust's statistics, as in a run
    reported: list[float] = []
    environment.events.request.add_listener(
        lambda response_time, **_: reported.append(response_time))
    method = stub_method("guide_weights", user_channel(target))
    sent = request.ByteSize()
    fire = environment.events.request.fire
    executor = {"run": in_thread} if in_threads else {}

    def calls_in_greenlet(count: int) -> list[float]:
        wall = []
        for _ in range(count):
            started = time.perf_counter()
            calls.unary(fire, "ComputeGuideWeights", method, request, sent=sent,
                        timeout=_TIMEOUT, **executor)
            wall.append((time.perf_counter() - started) * 1000.0)
        return wall

    def run(count: int) -> tuple[list[float], list[float]]:
        reported.clear()
        wall = gevent.spawn(calls_in_greenlet, count).get()
        return list(reported), wall

    return run


def main(argv: list[str] | None = None) -> int:
    mode, target, request_file = argv if argv is not None else sys.argv[1:]
    if mode not in MODES:
        print(f"probe: mode must be one of {', '.join(MODES)}", file=sys.stderr)
        return 2
    request = guide_pb2.GuideWeightsRequest.FromString(Path(request_file).read_bytes())
    if mode == "plain":
        run = plain_caller(target, request)
    elif mode == "pool":
        run = pool_caller(target, request)
    else:
        run = locust_caller(target, request, in_threads=mode == "locust")
    run(_WARMUP)
    print("ready", flush=True)
    for line in sys.stdin:
        reported, wall = run(int(line))
        print(json.dumps({"reported_ms": reported, "wall_ms": wall}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
