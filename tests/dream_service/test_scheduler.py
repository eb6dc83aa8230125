"""The dream queue's rules on their own: turns over callers, capacity, deadlines, batches."""

from __future__ import annotations

import threading
import time

import pytest

from dreamsuite.errors import Cancelled, DeadlineExceeded, ResourceExhausted
from services.dream.scheduler import DEADLINE_SLACK_S, Scheduler, Ticket


def names(batch):
    return [t.payload for t in batch]


def finish(scheduler, batch):
    scheduler.finished(batch, 0.5)


def test_a_newcomer_goes_before_a_caller_with_many_queued():
    scheduler = Scheduler(queue_size=30)
    for i in range(20):
        scheduler.submit(Ticket(f"a{i}", caller="a"))
    first = scheduler.take()
    scheduler.submit(Ticket("b0", caller="b"))
    scheduler.submit(Ticket("c0", caller="c"))
    finish(scheduler, first)
    order = []
    for _ in range(5):
        batch = scheduler.take()
        order += names(batch)
        finish(scheduler, batch)
    assert names(first) == ["a0"]
    assert order == ["b0", "c0", "a1", "a2", "a3"]


def test_callers_alternate_while_both_have_work():
    scheduler = Scheduler(queue_size=30)
    for i in range(3):
        scheduler.submit(Ticket(f"a{i}", caller="a"))
        scheduler.submit(Ticket(f"b{i}", caller="b"))
    order = []
    for _ in range(6):
        batch = scheduler.take()
        order += names(batch)
        finish(scheduler, batch)
    assert order == ["a0", "b0", "a1", "b1", "a2", "b2"]


def test_a_closed_loop_caller_does_not_starve_a_caller_with_a_backlog():
    """``a`` keeps one dream queued behind its running one (it submits the next as soon as one
    starts), so its queue is empty each time it is served: it keeps its turn all the same and
    ``b``'s backlog goes one for one with it (it went a0, a1, a2, ... before: each empty queue
    made ``a`` a newcomer again)."""
    scheduler = Scheduler(queue_size=30)
    for i in range(5):
        scheduler.submit(Ticket(f"b{i}", caller="b"))
    scheduler.submit(Ticket("a0", caller="a"))
    order, sent = [], 1
    for _ in range(8):
        batch = scheduler.take()
        order += names(batch)
        if names(batch)[0].startswith("a"):
            scheduler.submit(Ticket(f"a{sent}", caller="a"))
            sent += 1
        finish(scheduler, batch)
    assert order == ["b0", "a0", "b1", "a1", "b2", "a2", "b3", "a3"]


def test_callers_without_queued_dreams_are_remembered_up_to_a_bound(monkeypatch):
    monkeypatch.setattr("services.dream.scheduler.MAX_REMEMBERED_CALLERS", 8)
    scheduler = Scheduler(queue_size=30)
    scheduler.submit(Ticket("keep", caller="queued"))
    scheduler.submit(Ticket("keep2", caller="queued"))
    finish(scheduler, scheduler.take())  # "queued" is served, still has a dream queued
    for i in range(20):
        scheduler.submit(Ticket(i, caller=f"c{i}"))
        finish(scheduler, scheduler.take())
    assert len(scheduler._served) <= 9
    assert "queued" in scheduler._served, "a caller with queued dreams keeps its turn"
    assert "c19" in scheduler._served and "c0" not in scheduler._served


def test_capacity_counts_idle_workers_and_the_queue():
    scheduler = Scheduler(queue_size=1, workers=2)
    for i in range(3):  # two for the idle workers, one queued
        scheduler.submit(Ticket(i))
    with pytest.raises(ResourceExhausted) as refused:
        scheduler.submit(Ticket(3))
    assert 0.1 <= refused.value.retry_after <= 60
    batch = scheduler.take()
    scheduler.take()
    with pytest.raises(ResourceExhausted):  # both workers busy, one queued: full
        scheduler.submit(Ticket(4))
    finish(scheduler, batch)
    scheduler.submit(Ticket(5))


def test_retry_hint_grows_with_the_queue_and_the_dream_duration():
    scheduler = Scheduler(queue_size=10)
    scheduler.finished([], 4.0)  # as if a batch took 4 s
    scheduler._busy_workers += 1  # (finished() released a worker that was never taken)
    short = scheduler.retry_after()
    for i in range(5):
        scheduler.submit(Ticket(i))
    assert scheduler.retry_after() > short > 0.1


def test_a_ticket_whose_deadline_passed_is_dropped_unstarted():
    dropped, reasons = [], []
    scheduler = Scheduler(queue_size=5, on_drop=reasons.append)
    scheduler.submit(Ticket("late", deadline=time.monotonic() - 1, on_drop=dropped.append))
    scheduler.submit(Ticket("fine", deadline=time.monotonic() + 60))
    assert names(scheduler.take()) == ["fine"]
    assert reasons == ["deadline"]
    assert len(dropped) == 1 and isinstance(dropped[0], DeadlineExceeded)


def test_a_caller_leaving_at_its_deadline_counts_as_a_deadline_drop():
    # The client cancels when its deadline passes; that reaches the server a hair early.
    reasons = []
    scheduler = Scheduler(queue_size=5, on_drop=reasons.append)
    at_deadline = Ticket("at", deadline=time.monotonic() + DEADLINE_SLACK_S / 5)
    early = Ticket("early", deadline=time.monotonic() + 60)
    scheduler.submit(at_deadline)
    scheduler.submit(early)
    assert scheduler.drop(at_deadline) and scheduler.drop(early)
    assert reasons == ["deadline", "cancelled"]


def test_dropping_a_queued_ticket_frees_its_place():
    reasons = []
    scheduler = Scheduler(queue_size=0, on_drop=reasons.append)
    running = Ticket("running")
    scheduler.submit(running)
    scheduler.take()
    queued = Ticket("queued")
    with pytest.raises(ResourceExhausted):
        scheduler.submit(queued)
    scheduler2 = Scheduler(queue_size=1, on_drop=reasons.append)
    scheduler2.submit(Ticket("x"))
    scheduler2.take()
    scheduler2.submit(queued)
    assert scheduler2.drop(queued) and not scheduler2.drop(queued)
    assert queued.payload is None  # whoever keeps the ticket does not keep the dream
    scheduler2.submit(Ticket("again"))
    assert reasons == ["cancelled"]


def test_a_dropped_ticket_tells_whoever_follows_it_why():
    heard = []
    scheduler = Scheduler(queue_size=4)
    scheduler.submit(Ticket("running"))
    scheduler.take()
    cancelled = Ticket("c", on_drop=heard.append)
    late = Ticket("l", deadline=time.monotonic() + 0.1, on_drop=heard.append)
    scheduler.submit(cancelled)
    scheduler.submit(late)
    assert scheduler.drop(cancelled) and scheduler.drop(late)
    assert [type(e) for e in heard] == [Cancelled, DeadlineExceeded]
    assert "not started" in str(heard[0]) and "dropped unstarted" in str(heard[1])


def test_each_worker_sizes_its_batch_for_its_own_device():
    """The batch size is measured on the device of the worker that takes the batch: with
    one worker per GPU, calibrating on another worker's (busy) device would measure noise."""
    sizes = {"cuda:0": 1, "cuda:1": 3}
    asked = []

    def batch_size(ticket, worker):
        asked.append(worker)
        return sizes[worker]

    scheduler = Scheduler(queue_size=20, workers=2, batch_size=batch_size)
    for i in range(5):
        scheduler.submit(Ticket(i, key=64))
    assert names(scheduler.take("cuda:0")) == [0]
    assert names(scheduler.take("cuda:1")) == [1, 2, 3]
    assert asked == ["cuda:0", "cuda:1"]


def test_a_batch_takes_compatible_tickets_over_callers_in_turn():
    scheduler = Scheduler(queue_size=20, batch_size=lambda ticket, worker: 3)
    scheduler.submit(Ticket("a-64", caller="a", key=64))
    scheduler.submit(Ticket("a-64b", caller="a", key=64))
    scheduler.submit(Ticket("a-128", caller="a", key=128))
    scheduler.submit(Ticket("b-128", caller="b", key=128))
    scheduler.submit(Ticket("c-64", caller="c", key=64))
    first = scheduler.take()
    assert names(first) == ["a-64", "c-64", "a-64b"]  # c's turn comes before a's second
    finish(scheduler, first)
    assert names(scheduler.take()) == ["b-128", "a-128"]


def test_the_window_waits_for_compatible_dreams_and_no_longer():
    scheduler = Scheduler(queue_size=20, batch_size=lambda ticket, worker: 2, window=2.0)
    scheduler.submit(Ticket("first", key=1))
    later = threading.Timer(0.2, lambda: scheduler.submit(Ticket("second", key=1)))
    later.start()
    started = time.monotonic()
    assert names(scheduler.take()) == ["first", "second"]
    assert time.monotonic() - started < 1.5  # joined as soon as it arrived
    alone = Scheduler(queue_size=20, batch_size=lambda ticket, worker: 2, window=0.2)
    alone.submit(Ticket("only", key=1))
    started = time.monotonic()
    assert names(alone.take()) == ["only"]
    assert 0.15 <= time.monotonic() - started < 1.5
    alone.submit(Ticket("lone again", key=1))  # its last batch was alone: no waiting now
    started = time.monotonic()
    assert names(alone.take()) == ["lone again"]
    assert time.monotonic() - started < 0.1


def test_each_latecomer_keeps_the_window_open_one_window_more_up_to_four():
    """Callers whose dreams the last batch finished come back one after another: a window
    that closed between two of them would split the batch in two."""
    scheduler = Scheduler(queue_size=20, batch_size=lambda ticket, worker: 8, window=0.4)
    scheduler.submit(Ticket("first", key=1))
    # each 0.3 s after the one before: all but the first arrive after the first window
    timers = [threading.Timer(0.3 * (i + 1), lambda i=i: scheduler.submit(Ticket(i, key=1)))
              for i in range(7)]
    for timer in timers:
        timer.start()
    started = time.monotonic()
    batch = scheduler.take()
    took = time.monotonic() - started
    for timer in timers:
        timer.cancel()
    # each joins within a window of the one before, until 4 windows (1.6 s): 5 (1.8 s) is late
    assert names(batch) == ["first", 0, 1, 2, 3, 4]
    assert 1.5 <= took < 1.8


def test_a_failing_batch_size_means_alone_and_close_returns_the_queue():
    def broken(ticket, worker):
        raise RuntimeError("cannot plan")

    scheduler = Scheduler(queue_size=5, batch_size=broken)
    scheduler.submit(Ticket(1, key=1))
    scheduler.submit(Ticket(2, key=1))
    assert names(scheduler.take()) == [1]
    assert names(scheduler.close()) == [2]
    assert scheduler.take() is None
    with pytest.raises(ResourceExhausted):
        scheduler.submit(Ticket(3))


class _Call:
    """What :func:`caller_of` reads of a call: its peer and its metadata."""

    def __init__(self, peer, token=None):
        self._peer, self._token = peer, token

    def peer(self):
        return self._peer

    def invocation_metadata(self):
        return () if self._token is None else (("authorization", f"Bearer {self._token}"),)


def test_a_caller_is_a_connection_and_the_token_it_sends():
    """With the service's token on every client sends the same token: it must not make them one
    caller (turns would be first come, first served)."""
    from services.dream.servicer import caller_of

    one, other = "ipv4:10.0.0.5:53122", "ipv4:10.0.0.6:40000"
    assert caller_of(_Call(one, "shared")) != caller_of(_Call(other, "shared"))
    assert caller_of(_Call(one, "shared")) == caller_of(_Call(one, "shared"))
    assert caller_of(_Call(one, "a")) != caller_of(_Call(one, "b"))
    assert caller_of(_Call(one)) != caller_of(_Call(other))
    assert "shared" not in caller_of(_Call(one, "shared")), "the token is not kept as such"


def test_a_batch_that_fails_unexpectedly_fails_each_of_its_dreams_and_the_worker_goes_on():
    import torch

    from services.dream.worker import DeviceWorkers

    heard, ran = [], []

    def run_batch(batch, device):
        ran.append(names(batch))
        if names(batch)[0] == "bad":
            raise RuntimeError("a bug (injected)")

    scheduler = Scheduler(queue_size=4)
    workers = DeviceWorkers(scheduler, [torch.device("cpu")], run_batch)
    try:
        scheduler.submit(Ticket("bad", on_drop=heard.append))
        scheduler.submit(Ticket("good", on_drop=heard.append))
        deadline = time.monotonic() + 10
        while len(ran) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        workers.shutdown()
    assert ran == [["bad"], ["good"]]
    assert len(heard) == 1 and "a bug" in str(heard[0])
