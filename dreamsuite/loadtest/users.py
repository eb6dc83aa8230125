"""Locust users of the suite: one class per kind of call (``DreamUser``,
``ComputeGuideWeightsUser``, ``SelectNeuronsUser``, ``SampleUser``).

Import this only in the Locust process (``python -m dreamsuite.loadtest.run``). Locust runs its
users as greenlets; their gRPC calls run in native threads of gevent's thread pool, with gRPC
neither patched nor told about gevent, so each call is a plain blocking client's call, timed
where it runs (what the load tester reports is what a plain client measures, see
``dreamsuite bench loadtest``), while the users wait cooperatively. Nothing needs gevent's
monkey-patching then, so Locust's is switched off before it is imported (:data:`NO_PATCH`).

The classes carry only their kind and weight; what a user sends
comes from the run plan in ``environment.parsed_options`` (:data:`PLAN_OPTION`), which Locust's
master hands its workers with every spawn, so workers need no scenario of their own. Each user
holds its own channel, sends its kind's requests in turn (a malformed one with the scenario's
``invalid`` probability) and reports every call through :mod:`dreamsuite.loadtest.calls`.
"""

from __future__ import annotations

import os

#: Locust patches the whole process with gevent on import unless this is set; the users below
#: need no patching (and gRPC must stay unpatched in its threads).
NO_PATCH = "LOCUST_SKIP_MONKEY_PATCH"
os.environ[NO_PATCH] = "1"

import argparse  # noqa: E402
import random  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from dataclasses import replace  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
from locust import User, task  # noqa: E402
from locust.argument_parser import default_args_dict  # noqa: E402

from dreamsuite.loadtest import calls as timed  # noqa: E402
from dreamsuite.loadtest.connect import auth_metadata, stub_method, user_channel  # noqa: E402
from dreamsuite.loadtest.payloads import Payloads, build_payloads  # noqa: E402
from dreamsuite.loadtest.plan import RunPlan  # noqa: E402
from dreamsuite.loadtest.scenario import KINDS, METHODS, Scenario  # noqa: E402

__all__ = ["NO_PATCH", "PLAN_OPTION", "TOKEN_OPTION", "GrpcUser", "Workload", "in_thread",
           "user_classes", "plan_weights", "options"]

#: The option (in Locust's parsed options) that carries the run plan, as JSON.
PLAN_OPTION = "dreamsuite_plan"
#: A worker's own bearer token: the master never ships its token to the workers.
TOKEN_OPTION = "dreamsuite_worker_token"


def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a native thread of gevent's pool; the calling greenlet waits
    cooperatively. The pool grows with the users: every user may have a call in flight."""
    pool = gevent.get_hub().threadpool
    if pool.maxsize <= pool.size:
        pool.maxsize = pool.size + 8
    return pool.spawn(fn, *args).get()


class Workload:
    """The plan of a run and its requests, built once per process and plan."""

    _cache: dict[str, Workload] = {}

    def __init__(self, plan: RunPlan):
        self.plan = plan
        self._payloads: dict[str, Payloads] = {}

    def payloads(self, kind: str) -> Payloads:
        if kind not in self._payloads:
            self._payloads[kind] = build_payloads(self.plan.scenario.calls[kind])
        return self._payloads[kind]

    @classmethod
    def of(cls, options: argparse.Namespace) -> Workload:
        text = getattr(options, PLAN_OPTION)
        token = getattr(options, TOKEN_OPTION, None)
        key = f"{text}\n{token}"
        if key not in cls._cache:
            plan = RunPlan.from_json(text)
            if token is not None:
                plan = replace(plan, scenario=replace(plan.scenario, token=token))
            cls._cache[key] = cls(plan)
        return cls._cache[key]


def options(plan: RunPlan | None, *, token: str | None = None) -> argparse.Namespace:
    """Locust's default options plus the plan (a master ships them to its workers: give it a
    plan without the token) and a worker's own ``token``."""
    values = {**default_args_dict(), "headless": True}
    if plan is not None:
        values[PLAN_OPTION] = plan.to_json()
    if token is not None:
        values[TOKEN_OPTION] = token
    return argparse.Namespace(**values)


class GrpcUser(User):
    """A simulated client that calls one method of one service, over and over."""

    abstract = True
    kind: str

    def on_start(self) -> None:
        workload = Workload.of(self.environment.parsed_options)
        self.calls = workload.plan.scenario.calls[self.kind]
        self.payloads = workload.payloads(self.kind)
        self.channel = user_channel(getattr(workload.plan.targets, self.calls.service))
        self.method = stub_method(self.kind, self.channel)
        self.metadata = tuple(auth_metadata(workload.plan.scenario.token))
        self.pause = workload.plan.scenario.wait
        self.random = random.Random()
        self.index = self.random.randrange(len(self.payloads.valid))
        self.perform = timed.dream if self.kind == "dream" else timed.unary

    def on_stop(self) -> None:
        self.channel.close()

    def wait_time(self) -> float:
        return self.random.uniform(*self.pause)

    @task
    def call(self) -> None:
        self.index += 1
        invalid = self.random.random() < self.calls.invalid
        request, sent = self.payloads.pick(self.index, invalid)
        self.perform(self.environment.events.request.fire, self.calls.method, self.method,
                     request, sent=sent, timeout=self.calls.deadline, metadata=self.metadata,
                     run=in_thread)


def user_classes(weights: Mapping[str, int] | None = None) -> list[type[GrpcUser]]:
    """One :class:`GrpcUser` subclass per kind in ``weights`` (``{kind: weight}``), named after
    its method; every kind (weight 1) when None, as a worker needs."""
    weights = weights if weights is not None else {kind: 1 for kind in KINDS}
    return [type(f"{METHODS[kind]}User", (GrpcUser,),
                 {"__module__": __name__, "kind": kind, "weight": weight})
            for kind, weight in weights.items() if weight > 0]


def plan_weights(scenario: Scenario) -> dict[str, int]:
    """The users' weights of a scenario (kinds with users only)."""
    return {c.kind: c.weight for c in scenario.active()}
