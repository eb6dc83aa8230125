"""The stock ``grpc.health.v1`` servicer, with ``Watch`` streams that end at shutdown.

The stock aio servicer keeps every ``Watch`` stream open for ever; on shutdown it sends
``NOT_SERVING`` and keeps waiting. ``server.stop(grace)`` counts such a stream as a call in
flight, so one health watcher (a load balancer, a client-side health check) would hold every
shutdown for the whole grace period after the last dream finished. Here a watch sends
``NOT_SERVING`` and then ends (status OK): the watcher learns the news, and the drain waits
only for real work.
"""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health, health_pb2

__all__ = ["HealthServicer"]

_Status = health_pb2.HealthCheckResponse.ServingStatus


class HealthServicer(health.aio.HealthServicer):
    """``Check``, ``set`` and ``enter_graceful_shutdown`` are the stock servicer's; ``Watch``
    follows a copy of the statuses and ends once :meth:`enter_graceful_shutdown` has run."""

    def __init__(self) -> None:
        super().__init__()
        self._statuses: dict[str, _Status] = {"": health_pb2.HealthCheckResponse.SERVING}
        self._closing = False
        self._changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:  # made on first use: it belongs to the server's event loop
            self._changed = asyncio.Condition()
        return self._changed

    async def _notify(self) -> None:
        async with self._condition():
            self._condition().notify_all()

    async def set(self, service: str, status: _Status) -> None:
        await super().set(service, status)
        if not self._closing:
            self._statuses[service] = status
            await self._notify()

    async def enter_graceful_shutdown(self) -> None:
        await super().enter_graceful_shutdown()
        self._closing = True
        self._statuses = dict.fromkeys(self._statuses, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._notify()

    async def Watch(self, request: health_pb2.HealthCheckRequest, context) -> None:
        unknown = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        last = None
        while True:
            status = self._statuses.get(request.service, unknown)
            if status != last:  # written outside the lock: a slow watcher blocks nobody
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
                continue  # it may have changed during the write: look again before ending
            if self._closing:
                return  # the last status sent is the final one, NOT_SERVING
            async with self._condition():
                if self._statuses.get(request.service, unknown) == last and not self._closing:
                    await self._condition().wait()
