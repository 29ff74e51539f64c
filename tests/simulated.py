"""Fixtures shared by the sensor and trigger tests: simulators, connections to them, captured logs.

Imported by ``tests/sensors/conftest.py`` and ``tests/triggers/conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from airflow_provider_prime.testing import ManualClock, PrimeSimulator, Scenario

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


def connection_env(base_url: str, api_key: str, conn_id: str = "prime_default") -> dict[str, str]:
    """``AIRFLOW_CONN_<ID>`` for a Prime connection to ``base_url`` with :data:`FAST_RETRY`."""
    connection = {"conn_type": "prime", "host": base_url, "password": api_key, "extra": FAST_RETRY}
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(connection)}


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """Everything logged through structlog (Airflow's trigger and task loggers) during the test."""
    with structlog.testing.capture_logs() as captured:
        yield captured


@pytest.fixture
def simulator() -> Iterator[Callable[..., PrimeSimulator]]:
    """``start(*pod_scripts, **options)``: a running simulator, stopped after the test.

    Pod time runs 20 times faster than the wall clock, unless a ``clock`` (a ManualClock the test
    drives) or a ``time_scale`` is given.
    """
    started: list[PrimeSimulator] = []

    def start(*pods: Any, time_scale: float | None = None, **options: Any) -> PrimeSimulator:
        if time_scale is None:
            time_scale = 1.0 if "clock" in options else 20.0
        sim = PrimeSimulator(Scenario.of(pods), time_scale=time_scale, **options).start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def connect(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """``define(sim, conn_id="prime_default", api_key=None)``: a connection to ``sim`` for this test."""

    def define(sim: PrimeSimulator, conn_id: str = "prime_default", api_key: str | None = None) -> str:
        for name, value in connection_env(sim.base_url, api_key or sim.api_key, conn_id).items():
            monkeypatch.setenv(name, value)
        return conn_id

    return define


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
