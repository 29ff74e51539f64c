"""``PrimeHook.delete_pod(..., deadline=)``: the one short, bounded delete ``on_kill`` can afford.

A killed task has about five seconds before SIGKILL. Without a deadline a delete uses the whole
retry and Retry-After budget (minutes); with one, no wait sleeps past it and each attempt's
timeouts are cut to the time left. Sleeps are recorded, never slept (``delays``); the only
wall-clock check is a generous bound on a request the deadline must cut short.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from airflow_provider_prime.exceptions import PrimeTransientError
from airflow_provider_prime.testing import PODS_PATH, Fault, ManualClock, PrimeSimulator, ready_pod
from tests.hooks.callers import Pauses, Twin

POD = "pod-a"
DELETE = f"DELETE {PODS_PATH}{POD}"
#: Settings whose full budget is long: 3 retries, Retry-After honoured up to 60 s, 30 s reads.
PATIENT = {"max_retries": 3, "backoff_base": 1, "backoff_max": 30, "retry_after_max": 60, "read_timeout": 30}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sim(
    prime_simulator_factory: Callable[..., PrimeSimulator],
    prime_connect: Callable[..., str],
    clock: ManualClock,
) -> PrimeSimulator:
    simulator = prime_simulator_factory([ready_pod(POD, ready_at=0)], clock=clock)
    prime_connect(simulator, extra=PATIENT)
    return simulator


@pytest.fixture
def hook(kind: str, sim: PrimeSimulator, delays: Pauses) -> Twin:
    return Twin.on(kind, delays)


def _gone(sim: PrimeSimulator, clock: ManualClock) -> None:
    clock.advance(60)  # past the simulated DELETING phase
    assert sim.billing()["billing"] == {}


def test_a_deadline_stops_before_a_retry_after_wait_that_would_pass_it(
    hook: Twin, sim: PrimeSimulator, clock: ManualClock, delays: list[float]
) -> None:
    sim.inject(Fault.rate_limited(retry_after=30, method="DELETE", times=None))
    with pytest.raises(PrimeTransientError, match="Stopped before the wait's deadline after 1 attempts"):
        hook("delete_pod", POD, deadline=time.time() + 3)
    assert delays == []  # the 30 s Retry-After would end past the deadline: not slept
    assert sim.stats.by_method_path[DELETE] == 1
    sim.clear_faults()
    hook("delete_pod", POD)
    _gone(sim, clock)


def test_without_a_deadline_the_same_delete_waits_and_retries(
    hook: Twin, sim: PrimeSimulator, clock: ManualClock, delays: list[float]
) -> None:
    sim.inject(Fault.rate_limited(retry_after=30, method="DELETE", times=1))
    hook("delete_pod", POD)
    assert delays == [30.0]
    assert sim.stats.by_method_path[DELETE] == 2
    _gone(sim, clock)


def test_a_deadline_cuts_a_slow_answer_short(
    hook: Twin, sim: PrimeSimulator, clock: ManualClock, delays: list[float]
) -> None:
    sim.inject(Fault.slow(20.0, method="DELETE", times=None))  # the read timeout alone is 30 s
    started = time.monotonic()
    with pytest.raises(PrimeTransientError):
        hook("delete_pod", POD, deadline=time.time() + 0.5)
    assert time.monotonic() - started < 10  # generous: the point is "not 20 s, not 4 x 30 s"
    assert delays == []
    sim.clear_faults()
    hook("delete_pod", POD)
    _gone(sim, clock)


def test_a_deadline_already_passed_sends_nothing(hook: Twin, sim: PrimeSimulator, clock: ManualClock) -> None:
    with pytest.raises(PrimeTransientError, match="deadline passed before deleting pod pod-a"):
        hook("delete_pod", POD, deadline=time.time() - 1)
    assert sim.stats.by_method_path[DELETE] == 0
    hook("delete_pod", POD)
    _gone(sim, clock)


def test_a_refused_delete_reads_the_pod_within_the_same_deadline(
    hook: Twin, sim: PrimeSimulator, clock: ManualClock, delays: list[float]
) -> None:
    sim.inject(
        Fault.http_error(409, body_shape="detail", message="busy", method="DELETE"),
        Fault.rate_limited(retry_after=30, method="GET", path=f"{PODS_PATH}{POD}", times=None),
    )
    with pytest.raises(PrimeTransientError, match="Stopped before the wait's deadline"):
        hook("delete_pod", POD, deadline=time.time() + 3)
    assert delays == []
    sim.clear_faults()
    hook("delete_pod", POD)
    _gone(sim, clock)
