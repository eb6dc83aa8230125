"""Which queued dreams run next, on which worker, and together with which others.

- **Fair**: callers (see :func:`services.dream.servicer.caller_of`) take turns: the next dream
  is the oldest of the caller with queued dreams that was served least recently (a newcomer
  first), so a caller with 20 queued dreams does not make another caller's single dream wait
  for all 20: it starts as soon as a worker is free. A caller keeps its turn while its queue is
  empty (a closed-loop client has none queued each time its dream starts: were it forgotten,
  it would come back as a newcomer and go first every time).
- **Bounded**: at most ``queue_size`` dreams wait beyond what idle workers can take at once; more
  are refused with :class:`ResourceExhausted`, whose ``retry_after`` estimates when a place frees.
- **Deadlines**: a queued dream whose call deadline has passed is dropped before it starts.
- **Batches**: with the next dream (the leader), a worker takes up to ``batch_size(leader, device) - 1``
  queued dreams with the same batch key (same backbone, sizes and steps: they can share every
  pass), taking turns over callers again, waiting at most ``window`` seconds for more to arrive
  (for a key seen first, a burst's first batch, and keys whose last batch had company: a lone
  caller waits once, then never).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from dreamsuite.errors import Cancelled, DeadlineExceeded, ResourceExhausted

__all__ = ["Ticket", "Scheduler"]


#: How close to its deadline a caller that goes away counts as having left because of it.
DEADLINE_SLACK_S = 0.25

#: A batch gathers for at most this many windows: each latecomer that joins extends the wait
#: by one window, up to this.
MAX_WINDOWS = 4

#: Callers whose last turn is remembered while they have nothing queued; beyond it the longest
#: unserved are forgotten (they come back as newcomers, which they nearly are).
MAX_REMEMBERED_CALLERS = 4096


@dataclass(eq=False)
class Ticket:
    """One queued dream: who asked, until when, what it can be batched with, and what to call
    if it is dropped before it starts (deadline passed, service stopping)."""

    payload: Any
    caller: str = ""
    deadline: float | None = None  # time.monotonic() after which nobody waits for it
    key: Hashable = None  # dreams with equal keys can share batches
    on_drop: Callable[[Exception], None] = lambda exc: None
    queued_at: float = field(default_factory=time.monotonic)

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline


class Scheduler:
    """Thread-safe queue of :class:`Ticket` shared by ``workers`` device workers."""

    def __init__(self, queue_size: int, workers: int = 1, *,
                 batch_size: Callable[[Ticket, Any], int] = lambda ticket, worker: 1,
                 window: float = 0.0, on_drop: Callable[[str], None] = lambda reason: None,
                 on_depth: Callable[[int, int], None] = lambda waiting, running: None):
        if queue_size < 0:
            raise ValueError("queue_size must be >= 0")
        self.queue_size = queue_size
        self.workers = workers
        self.batch_size = batch_size
        self.window = window
        self._count_drop = on_drop
        self._publish = on_depth
        self._cond = threading.Condition()
        self._queues: dict[str, deque[Ticket]] = {}
        self._served: dict[str, int] = {}  # caller -> turn it was last served
        self._turn = 0
        self._last_batch: dict[Hashable, int] = {}  # batch key -> size of its last batch
        self._waiting = 0
        self._running = 0
        self._busy_workers = 0
        self._closed = False
        self._job_seconds = 1.0  # moving average of a batch's duration, for retry hints

    # -- clients --------------------------------------------------------------------------------

    def check_capacity(self) -> None:
        """:class:`ResourceExhausted` if a dream submitted now would be refused."""
        with self._cond:
            self._check_capacity()

    def _check_capacity(self) -> None:
        if self._closed:
            raise ResourceExhausted("the dream service is stopping; retry on another replica",
                                    retry_after=1.0)
        idle = self.workers - self._busy_workers
        if self._waiting >= self.queue_size + idle:
            raise ResourceExhausted(
                f"the dream service is at capacity: {self._running} dreams running and "
                f"{self._waiting} queued (queue size {self.queue_size}); retry later",
                retry_after=self.retry_after())

    def retry_after(self) -> float:
        """Seconds until a queue place is likely free: the queue ahead, in batch durations
        spread over the workers (between 0.1 s and 60 s)."""
        rounds = (self._waiting + self.workers) / self.workers
        return min(60.0, max(0.1, rounds * self._job_seconds))

    def submit(self, ticket: Ticket) -> None:
        """Queue ``ticket``; :class:`ResourceExhausted` when full."""
        with self._cond:
            self._check_capacity()
            self._queues.setdefault(ticket.caller, deque()).append(ticket)
            self._waiting += 1
            self._publish(self._waiting, self._running)
            self._cond.notify_all()

    def drop(self, ticket: Ticket, reason: str = "cancelled") -> bool:
        """Take a queued ``ticket`` out (its caller went away); False if it already started."""
        with self._cond:
            queue = self._queues.get(ticket.caller)
            if queue is None or ticket not in queue:
                return False
            queue.remove(ticket)
            if not queue:
                self._forget(ticket.caller)
            self._waiting -= 1
            self._publish(self._waiting, self._running)
        ticket.payload = None  # whoever still holds the ticket does not hold the dream
        # A client cancels when its own deadline passes, which reaches us a hair before ours
        # (the server's clock starts when the call arrives): count that as the deadline too.
        if ticket.expired(time.monotonic() + DEADLINE_SLACK_S):
            reason = "deadline"
        self._count_drop(reason)
        # Whoever still follows the job (an in-process caller) hears why it ends.
        ticket.on_drop(DeadlineExceeded("the call's deadline passed while the dream waited in "
                                        "the queue; it was dropped unstarted")
                       if reason == "deadline" else
                       Cancelled(f"{reason} while queued; the dream was not started"))
        return True

    # -- workers --------------------------------------------------------------------------------

    def take(self, worker: Any = None) -> list[Ticket] | None:
        """Block until there is work: the next caller's oldest dream and the compatible dreams
        that can join it, as many as ``batch_size(leader, worker)`` says for the ``worker``
        asking (its device). ``None`` once the scheduler is closed."""
        expired: list[Ticket] = []
        try:
            with self._cond:
                while True:
                    expired += self._prune(time.monotonic())
                    if self._closed:
                        return None
                    leader = self._next(lambda ticket: True)
                    if leader is not None:
                        break
                    self._cond.wait()
                self._busy_workers += 1
                self._start([leader])
        finally:
            self._expire(expired)
        batch = [leader]
        wanted = self._wanted(leader, worker)
        if wanted > 1:
            batch += self._gather(leader, wanted - 1)
        return batch

    def _wanted(self, leader: Ticket, worker: Any) -> int:
        try:
            return max(1, int(self.batch_size(leader, worker)))
        except Exception:  # a dream that cannot be planned fails on its own, unbatched
            return 1

    def _gather(self, leader: Ticket, more: int) -> list[Ticket]:
        joined: list[Ticket] = []
        # Wait for latecomers only where batches formed lately: a lone caller's dreams would
        # pay the window each and gain nothing. Each latecomer that joins keeps the window open
        # one window more (up to MAX_WINDOWS in all): callers whose dreams the last batch just
        # finished come back one after another, and a fixed window that closes between two of
        # them splits the batch in two for good (8 closed-loop callers settled into batches of
        # 4: 1.4x the dreams/min of no batching at 64 px, against 2.6-2.9x in batches of 8).
        window = self.window if self._last_batch.get(leader.key, 2) > 1 else 0.0
        started = time.monotonic()
        until = started + window
        expired: list[Ticket] = []
        try:
            with self._cond:
                while True:
                    now = time.monotonic()
                    expired += self._prune(now)
                    arrived = False
                    while len(joined) < more and not self._closed:
                        ticket = self._next(lambda t: t.key == leader.key)
                        if ticket is None:
                            break
                        joined.append(ticket)
                        self._start([ticket])
                        arrived = True
                    if arrived and window:
                        until = min(max(until, now + window), started + MAX_WINDOWS * window)
                    left = until - time.monotonic()
                    if len(joined) >= more or left <= 0 or self._closed:
                        if len(self._last_batch) > 1000:
                            self._last_batch.clear()
                        self._last_batch[leader.key] = 1 + len(joined)
                        return joined
                    self._cond.wait(left)
        finally:
            self._expire(expired)

    def finished(self, batch: list[Ticket], seconds: float) -> None:
        """A worker is done with ``batch`` after ``seconds``."""
        with self._cond:
            self._running -= len(batch)
            self._busy_workers -= 1
            self._job_seconds = 0.7 * self._job_seconds + 0.3 * seconds
            self._publish(self._waiting, self._running)
            self._cond.notify_all()

    def close(self) -> list[Ticket]:
        """Stop handing out work; returns the tickets that were still queued (dropped)."""
        with self._cond:
            self._closed = True
            left = [ticket for queue in self._queues.values() for ticket in queue]
            self._queues.clear()
            self._waiting = 0
            self._publish(self._waiting, self._running)
            self._cond.notify_all()
        return left

    # -- under the lock -------------------------------------------------------------------------

    def _next(self, fits: Callable[[Ticket], bool]) -> Ticket | None:
        """The oldest fitting ticket of the least recently served caller that has one."""
        for caller in sorted(self._queues, key=lambda c: self._served.get(c, -1)):
            queue = self._queues[caller]
            ticket = next((t for t in queue if fits(t)), None)
            if ticket is None:
                continue
            queue.remove(ticket)
            self._turn += 1
            self._served[caller] = self._turn
            if not queue:
                self._forget(caller)
            return ticket
        return None

    def _forget(self, caller: str) -> None:
        """``caller`` has nothing queued: it keeps its turn, but only so many idle callers are
        remembered (the longest unserved go first)."""
        del self._queues[caller]
        if len(self._served) > MAX_REMEMBERED_CALLERS:
            idle = sorted((turn, c) for c, turn in self._served.items() if c not in self._queues)
            for _, c in idle[: len(self._served) - MAX_REMEMBERED_CALLERS // 2]:
                del self._served[c]

    def _start(self, tickets: list[Ticket]) -> None:
        self._waiting -= len(tickets)
        self._running += len(tickets)
        self._publish(self._waiting, self._running)

    def _prune(self, now: float) -> list[Ticket]:
        expired = []
        for caller in list(self._queues):
            queue = self._queues[caller]
            for ticket in [t for t in queue if t.expired(now)]:
                queue.remove(ticket)
                expired.append(ticket)
            if not queue:
                self._forget(caller)
        if expired:
            self._waiting -= len(expired)
            self._publish(self._waiting, self._running)
        return expired

    def _expire(self, tickets: list[Ticket]) -> None:
        for ticket in tickets:
            self._count_drop("deadline")
            ticket.on_drop(DeadlineExceeded(
                "the call's deadline passed while the dream waited in the queue "
                f"({time.monotonic() - ticket.queued_at:.1f} s); it was dropped unstarted"))
