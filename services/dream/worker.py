"""Device workers: one thread per device (one per visible GPU; one on the CPU), each taking its
next batch of dreams from the shared :class:`~services.dream.scheduler.Scheduler`.

One batch runs at a time per device: dreams would only fight over its memory and cores
otherwise. Dreams that can share passes run as one batch (see :mod:`dreamsuite.engine.batch`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import torch

from dreamsuite.device import select_device
from dreamsuite.errors import Unavailable
from services.dream.scheduler import Scheduler, Ticket

__all__ = ["DeviceWorkers", "worker_devices"]

log = logging.getLogger(__name__)


def worker_devices(device: str | torch.device | None) -> list[torch.device]:
    """The devices to run workers on: the one named, else every visible GPU, else the CPU."""
    if device is not None and str(device) not in ("", "auto"):
        return [select_device(device)]
    if torch.cuda.is_available():
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return [torch.device("cpu")]


class DeviceWorkers:
    """Threads that run ``run_batch(tickets, device)`` for the batches the scheduler hands out."""

    def __init__(self, scheduler: Scheduler, devices: Sequence[torch.device],
                 run_batch: Callable[[list[Ticket], torch.device], None]):
        self.scheduler = scheduler
        self.devices = list(devices)
        self._run_batch = run_batch
        self._threads = [
            threading.Thread(target=self._loop, args=(device,), daemon=True,
                             name=f"dream-device-{device}")
            for device in self.devices
        ]
        for thread in self._threads:
            thread.start()

    def _loop(self, device: torch.device) -> None:
        while True:
            batch = self.scheduler.take(device)
            if batch is None:
                return
            started = time.perf_counter()
            try:
                self._run_batch(batch, device)
            except Exception as exc:  # run_batch reports per dream; this is a bug, keep serving
                log.exception("a batch of %d dreams failed on %s", len(batch), device)
                # Nobody may wait forever: each dream hears of it (one that already has its
                # result has stopped listening).
                for ticket in batch:
                    ticket.on_drop(exc)
            finally:
                self.scheduler.finished(batch, time.perf_counter() - started)
                del batch

    def shutdown(self) -> None:
        """Drop the queued dreams, then wait for the running batches (cancelled ones stop
        within a step)."""
        for ticket in self.scheduler.close():
            ticket.on_drop(Unavailable(
                "the dream service is stopping; the queued dream was not started"))
        for thread in self._threads:
            thread.join()
