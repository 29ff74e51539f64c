"""Helpers of the tests that talk to the simulator: the one fast-retry setting, the one
connection-env builder, the one ``until``, the plugin's parameters for fast simulators, and
clocks that move with the requests served.

Simulators and connections come from the shipped pytest plugin (``prime_simulator_factory``,
``prime_connect``); a directory whose tests want pods 20 times faster than the wall clock and the
fast-retry connection re-exports :func:`prime_simulator_defaults` and
:func:`prime_connection_extra` from its ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_prime.testing import ManualClock, PrimeSimulator
from airflow_provider_prime.testing.connection import airflow_connection_env

#: The suite's one fast-retry connection extra: millisecond backoff and short timeouts, so retry
#: paths cost nothing. A test that needs one value otherwise writes ``{**FAST_RETRY, "x": ...}``.
FAST_RETRY: dict[str, float] = {
    "connect_timeout": 2,
    "read_timeout": 2,
    "max_retries": 2,
    "backoff_base": 0.001,
    "backoff_max": 0.002,
    "retry_after_max": 0.05,
}
#: Pod time runs this many times faster than the wall clock on a simulator without a ManualClock.
FAST_TIME_SCALE = 20.0


def connection_env(base_url: str, api_key: str, conn_id: str = "prime_default") -> dict[str, str]:
    """``AIRFLOW_CONN_<ID>`` for a Prime connection to ``base_url`` with :data:`FAST_RETRY`."""
    return airflow_connection_env(base_url, api_key, conn_id, extra=FAST_RETRY)


@pytest.fixture
def prime_simulator_defaults() -> dict[str, Any]:
    """The plugin's simulators run pod time :data:`FAST_TIME_SCALE` times faster (unless clocked)."""
    return {"time_scale": FAST_TIME_SCALE}


@pytest.fixture
def prime_connection_extra() -> dict[str, Any]:
    """The plugin's ``prime_connect`` gives connections :data:`FAST_RETRY`."""
    return dict(FAST_RETRY)


async def until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait, yielding to the loop, until ``condition()`` holds; fail the test if it never does.

    A wait for a condition, never for a time: the timeout only bounds a test that would hang.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        if loop.time() > end:
            raise AssertionError(f"condition not reached within {timeout} s")
        await asyncio.sleep(0.005)


async def advance_per_request(sim: PrimeSimulator, clock: ManualClock, step: float) -> None:
    """Move ``clock`` forward ``step`` seconds for every request ``sim`` serves, until cancelled.

    Pod lifecycles then advance with the polling itself, not with the wall clock, so a test can
    tell exactly how many polls a wait took however slow the machine is.
    """
    seen = 0
    while True:
        total = sim.stats.total
        if total > seen:
            clock.advance(step * (total - seen))
            seen = total
        await asyncio.sleep(0.005)


@contextlib.contextmanager
def advancing_per_request(sim: PrimeSimulator, clock: ManualClock, step: float) -> Iterator[None]:
    """:func:`advance_per_request` from a thread, for synchronous code (the sensor's poke loop)."""
    stop = threading.Event()

    def drive() -> None:
        seen = 0
        while not stop.wait(0.005):
            total = sim.stats.total
            if total > seen:
                clock.advance(step * (total - seen))
                seen = total

    driver = threading.Thread(target=drive, name="advance-per-request", daemon=True)
    driver.start()
    try:
        yield
    finally:
        stop.set()
        driver.join()
