"""The device worker: one thread that owns the device, fed by a bounded queue.

Dreams run one at a time (they would only fight over the device's memory and cores otherwise);
up to ``queue_size`` more wait their turn, and anything beyond is refused at once with
:class:`ResourceExhausted` instead of queueing without bound.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import TypeVar

from dreamsuite.errors import ResourceExhausted
from services.dream.metrics import DreamMetrics

__all__ = ["DeviceWorker"]

T = TypeVar("T")


class DeviceWorker:
    """Runs submitted functions one at a time on a single thread, ``queue_size`` waiting."""

    def __init__(self, queue_size: int, metrics: DreamMetrics):
        if queue_size < 0:
            raise ValueError("queue_size must be >= 0")
        self.queue_size = queue_size
        self.metrics = metrics
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "dream-device")
        self._lock = threading.Lock()
        self._waiting = 0
        self._running = 0

    def check_capacity(self) -> None:
        """:class:`ResourceExhausted` if a dream submitted now would be refused."""
        with self._lock:
            self._check_capacity()

    def _check_capacity(self) -> None:
        if self._waiting + self._running >= 1 + self.queue_size:
            self.metrics.rejected.inc()
            raise ResourceExhausted(
                f"the dream service is at capacity: {self._running} dream running and "
                f"{self._waiting} queued (queue size {self.queue_size}); retry later")

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Queue ``fn``; :class:`ResourceExhausted` when the worker and its queue are full.

        Cancelling the returned future while ``fn`` waits gives its place in the queue back at
        once and drops ``fn`` (and what it holds); ``fn`` then never runs."""
        with self._lock:
            self._check_capacity()
            self._waiting += 1
            self._publish()
        slot = [fn]  # emptied when fn starts or is dropped: nothing keeps what it holds alive
        future = self._executor.submit(self._run, slot)
        future.add_done_callback(lambda f: self._dropped(f, slot))
        return future

    def _dropped(self, future: concurrent.futures.Future, slot: list) -> None:
        if not future.cancelled():
            return
        slot.clear()
        with self._lock:
            self._waiting -= 1
            self._publish()

    def _run(self, slot: list[Callable[[], T]]) -> T:
        fn = slot.pop()
        with self._lock:
            self._waiting -= 1
            self._running += 1
            self._publish()
        try:
            return fn()
        finally:
            del fn
            with self._lock:
                self._running -= 1
                self._publish()

    def _publish(self) -> None:
        self.metrics.queue_depth.set(self._waiting)
        self.metrics.in_flight.set(self._running)

    def shutdown(self) -> None:
        """Wait for the running function; drop the queued ones."""
        self._executor.shutdown(wait=True, cancel_futures=True)
