"""Fixtures of the reliability suite: the fast connection extra for the plugin's ``prime_connect``
(simulators come from its ``prime_simulator_factory``), a port that never accepts, and the record
of what was observed. Requests are counted by the
simulator's stats, never by wrapping the clients.

Set ``PRIME_RELIABILITY_OBSERVATIONS=<file>`` to have the observations written as JSON at the end of
the session; ``bench/reliability_report.py`` does that and renders ``docs/reliability.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from airflow_provider_prime.testing import PrimeSimulator, Scenario, fixed_pod
from bench.soak import Heartbeat
from tests.reliability.cases import EXTRA

OBSERVATIONS_ENV = "PRIME_RELIABILITY_OBSERVATIONS"
#: Worst event-loop lag tolerated during a trigger run. Generous on purpose: this proves the loop is
#: never *blocked* (a synchronous call would stall it for a whole timeout), it is not a speed target.
LAG_BOUND = 0.5


@pytest.fixture
def prime_connection_extra() -> dict[str, Any]:
    """What the plugin's ``prime_connect`` puts in the connection extra here: the fast settings."""
    return dict(EXTRA)


@pytest.fixture
def blackhole() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a socket that listens but never accepts, its backlog full.

    The kernel drops further SYNs once the accept queue is full, so a client's connect attempt
    times out: a connect timeout staged on loopback alone.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):  # more than the queue holds, whatever the kernel rounds backlog 0 to
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def leftover_tasks() -> list[asyncio.Task[Any]]:
    """Tasks still running on this loop besides the caller."""
    current = asyncio.current_task()
    return [task for task in asyncio.all_tasks() if task is not current and not task.done()]


@pytest.fixture(scope="session")
def warmed_up(observations: Observations) -> None:
    """Pay this process's one-time costs before any lag is measured, and record what they were.

    The first trigger run of a process imports httpx's async backend (anyio) and Airflow's async
    connection lookup, and builds the TLS context: a triggerer pays that once, at its first
    trigger. The per-test heartbeat measures the steady state that every later trigger sees.
    """
    name = "AIRFLOW_CONN_PRIME_WARM_UP"
    with PrimeSimulator(Scenario.of([fixed_pod("warm-up")])) as sim:
        connection = {"conn_type": "prime", "host": sim.base_url, "password": sim.api_key, "extra": EXTRA}
        os.environ[name] = json.dumps(connection)
        try:
            lag = asyncio.run(_one_trigger_run())
        finally:
            del os.environ[name]
    observations.warm_up_lag = lag


async def _one_trigger_run() -> float:
    from airflow_provider_prime.triggers.pod_status import PodStatusTrigger

    trigger = PodStatusTrigger(
        pod_ids=["warm-up"], deadline=time.time() + 30, prime_conn_id="prime_warm_up", poll_interval=0.1
    )
    async with Heartbeat() as heartbeat:
        events = [event.payload async for event in trigger.run()]
    assert [event["status"] for event in events] == ["success"]
    return heartbeat.max_lag


@dataclass
class Observations:
    """What the suite saw, one record per (case, path); written out for the docs table."""

    records: list[dict[str, Any]] = field(default_factory=list)
    warm_up_lag: float | None = None

    def add(self, request: pytest.FixtureRequest, **record: Any) -> None:
        self.records.append({"test": request.node.nodeid, "at": time.time(), **record})


@pytest.fixture(scope="session")
def observations() -> Iterator[Observations]:
    seen = Observations()
    yield seen
    target = os.environ.get(OBSERVATIONS_ENV)
    if target:
        data = {"warm_up_lag": seen.warm_up_lag, "records": seen.records}
        Path(target).write_text(json.dumps(data, indent=1, default=str))


def client_connections(port: int) -> list[Any]:
    """This process's established TCP connections to ``127.0.0.1:port`` (the client side)."""
    process = psutil.Process()
    listing = getattr(process, "net_connections", None) or process.connections  # psutil < 6
    return [
        conn
        for conn in listing(kind="tcp")
        if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED
    ]
