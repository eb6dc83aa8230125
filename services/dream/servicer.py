"""``DreamService``: converts requests to library calls and results to messages, nothing else.

Errors are raised as :mod:`dreamsuite.errors` and mapped to status codes by
:class:`services.common.errors.ErrorMapping`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator

import grpc

from dreamsuite.v1 import dream_pb2, dream_pb2_grpc
from services.dream.convert import backbones_response, spec_from_request, update_from_output
from services.dream.one_pass import OnePass
from services.dream.runner import DreamRunner

__all__ = ["DreamServicer", "SERVICE_NAME"]

SERVICE_NAME = dream_pb2.DESCRIPTOR.services_by_name["DreamService"].full_name


def caller_of(context: grpc.aio.ServicerContext) -> str:
    """Who is calling, for taking turns: the connection (the peer's address and port), and the
    bearer token it sends (hashed), if any.

    The token alone named callers before, but with the service's token on every client sends
    that same one: all of them were one caller, and turns became first come, first served. A
    client's connections are each a caller of their own (as every Locust user, or every
    channel of a pool, is); tokens tell apart callers that share one connection."""
    caller = "peer:" + context.peer()
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and value:
            return caller + " token:" + hashlib.sha256(value.encode()).hexdigest()[:16]
    return caller


class DreamServicer(dream_pb2_grpc.DreamServiceServicer):
    """Streams one ``DreamUpdate`` per octave from a :class:`DreamRunner`, or the single update
    of a one-pass dream (``request.model``) from :class:`OnePass`."""

    def __init__(self, runner: DreamRunner, one_pass: OnePass | None = None):
        self.runner = runner
        self.one_pass = one_pass or OnePass(None, runner.publisher, runner.metrics,
                                            max_pixels=runner.max_pixels)

    async def Dream(self, request: dream_pb2.DreamRequest,
                    context: grpc.aio.ServicerContext) -> AsyncIterator[dream_pb2.DreamUpdate]:
        spec = spec_from_request(request)
        if spec.model:
            yield update_from_output(await self.one_pass.dream(spec))
            return
        remaining = context.time_remaining()
        job = await self.runner.start(
            spec, caller=caller_of(context),
            deadline=None if remaining is None else time.monotonic() + remaining)
        # Cancellation or an expired deadline ends the call: stop the optimisation too.
        cancel = job.canceller
        context.add_done_callback(lambda _: cancel())
        async for output in job.outputs():
            yield update_from_output(output)

    async def ListBackbones(self, request: dream_pb2.ListBackbonesRequest,
                            context: grpc.aio.ServicerContext) -> dream_pb2.ListBackbonesResponse:
        return backbones_response(await asyncio.to_thread(self.runner.backbones))
