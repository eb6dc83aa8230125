"""The dream queue's rules on their own: turns over callers, capacity, deadlines, batches."""

from __future__ import annotations

import threading
import time

import pytest

from dreamsuite.errors import DeadlineExceeded, ResourceExhausted
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
