"""The names calls are reported under: a failed call's time is kept apart from the latencies."""

from __future__ import annotations

import socket

import grpc

from dreamsuite.loadtest import calls
from dreamsuite.loadtest.connect import stub_method, user_channel
from dreamsuite.v1 import common_pb2, dream_pb2, guide_pb2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_failed_calls_are_reported_apart_from_successful_ones():
    reports = []
    with user_channel(f"127.0.0.1:{_closed_port()}") as channel:  # nothing listens there
        request = guide_pb2.GuideWeightsRequest()
        assert calls.unary(lambda **kw: reports.append(kw), "ComputeGuideWeights",
                           stub_method("guide_weights", channel), request, sent=7,
                           timeout=10) is None
        dream = dream_pb2.DreamRequest(image=common_pb2.ImageRef(data=b"x"))
        assert calls.dream(lambda **kw: reports.append(kw), "Dream",
                           stub_method("dream", channel), dream, sent=3, timeout=10) is None
    assert [(r["name"], r["exception"].code, r["context"]) for r in reports] == [
        ("ComputeGuideWeights:failed", "UNAVAILABLE", {"bytes_sent": 7}),
        ("Dream:failed", "UNAVAILABLE", {"bytes_sent": 3})]
    assert calls.code_of(str(reports[0]["exception"])) == grpc.StatusCode.UNAVAILABLE.name
