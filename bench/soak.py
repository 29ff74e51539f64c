"""Soak: many deferred waits polling for a long time through a mix of API faults; memory must stay flat.

A triggerer runs for weeks. Anything a poll cycle leaves behind (a snapshot, a task, a connection,
a subscriber in an index, a log record) is a leak that only a long run shows. This runs, in one
event loop, what a busy triggerer holds:

* per connection (distinct API keys, so distinct shared pollers), long waits on pods that never
  become ready, each on a few of the connection's pods;
* churn: on each connection, waits that time out after a fraction of a second and are replaced
  at once (subscribe/unsubscribe), and one connection used only by churn, so its poller is
  created and torn down again and again;
* a fault mix on every request (503, HTML 502, 429, dropped connections, late answers, ``data:
  null``, extra fields), each with a small probability.

It samples Python heap in use (tracemalloc) and resident memory over time, and reports growth
after a warm-up, the worst event-loop lag, requests and events. Bounded in time::

    python -m bench.soak                   # 60 s, simulator in its own process
    python -m bench.soak --seconds 600 --json soak.json

``tests/reliability/test_soak.py`` runs a few seconds of it in the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any
from unittest import mock

import psutil

from airflow_provider_prime.testing import Fault, PrimeSimulatorProcess, Scenario, fixed_pod
from airflow_provider_prime.triggers.pod_status import PodStatusTrigger
from airflow_provider_prime.triggers.polling import active_pollers

#: Connection extra of the soak: short timeouts and backoffs, so faults cost little time.
SOAK_EXTRA = {
    "connect_timeout": 1.0,
    "read_timeout": 0.5,
    "max_retries": 2,
    "backoff_base": 0.01,
    "backoff_max": 0.05,
    "retry_after_max": 0.1,
}


#: Seconds a task still running after every wait was cancelled gets to finish before it counts
#: as left behind (the read timeout above bounds anything the provider has in flight).
LEFTOVER_GRACE = 2.0

#: Distinct never-seen pod ids each churn connection cycles through (reused, so nothing piles up).
GHOST_IDS = 20


def fault_mix(scale: float = 1.0) -> list[Fault]:
    """Transient faults only (none ends a wait), each striking a request with a small probability."""

    def every(probability: float) -> dict[str, Any]:
        return {"times": None, "probability": min(1.0, probability * scale)}

    return [
        Fault.server_error(503, **every(0.04)),
        Fault.server_error(502, html=True, **every(0.02)),
        Fault.rate_limited(retry_after=0, **every(0.03)),
        Fault.drop(**every(0.02)),
        Fault.slow(1.0, **every(0.005)),  # beyond the read timeout: a timeout and a retry
        Fault.null_data(**every(0.02)),
        Fault.extra_fields(**every(0.05)),
    ]


@dataclass(frozen=True)
class SoakConfig:
    seconds: float = 60.0
    connections: int = 4
    waits_per_connection: int = 25
    pods_per_connection: int = 40
    churners_per_connection: int = 2
    interval: float = 0.1
    warm_up: float = 0.25  # share of the run before the baseline sample
    sample_every: float = 1.0
    faults: bool = True
    seed: int = 7


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the start
    traced_bytes: int  # Python heap in use (tracemalloc); 0 when tracing is off
    rss_bytes: int
    tasks: int
    waits_started: int
    events: int


@dataclass
class SoakResult:
    config: SoakConfig
    samples: list[Sample] = field(default_factory=list)
    waits_started: int = 0
    events: dict[str, int] = field(default_factory=dict)
    max_lag_warm_up: float = 0.0  # includes the process's one-time imports and TLS setup
    max_lag: float = 0.0  # after the warm-up
    cpu_seconds: float = 0.0
    requests: int | None = None
    leftover_tasks: int = 0
    leftover_names: list[str] = field(default_factory=list)
    leftover_pollers: int = 0

    @property
    def steady(self) -> list[Sample]:
        """Samples after the warm-up."""
        start = self.config.seconds * self.config.warm_up
        return [s for s in self.samples if s.at >= start] or self.samples[-1:]

    @property
    def traced_growth(self) -> int:
        """Heap growth over the steady part, bytes: median of its last third minus its first third.

        Medians, because a single sample also holds whatever was in flight at that instant.
        """
        return _growth([s.traced_bytes for s in self.steady])

    @property
    def rss_growth(self) -> int:
        return _growth([s.rss_bytes for s in self.steady])

    def summary(self) -> dict[str, Any]:
        steady = self.steady
        return {
            "config": asdict(self.config),
            "seconds_measured": round(steady[-1].at - steady[0].at, 1),
            "requests": self.requests,
            "waits_started": self.waits_started,
            "events": self.events,
            "samples": len(steady),
            "traced_start_kib": round(steady[0].traced_bytes / 1024, 1),
            "traced_end_kib": round(steady[-1].traced_bytes / 1024, 1),
            "traced_growth_kib": round(self.traced_growth / 1024, 1),
            "rss_start_mib": round(steady[0].rss_bytes / 2**20, 1),
            "rss_end_mib": round(steady[-1].rss_bytes / 2**20, 1),
            "rss_growth_mib": round(self.rss_growth / 2**20, 2),
            "cpu_seconds": round(self.cpu_seconds, 1),
            "max_lag_warm_up_ms": round(self.max_lag_warm_up * 1000, 1),
            "max_lag_ms": round(self.max_lag * 1000, 1),
            "leftover_tasks": self.leftover_tasks,
            "leftover_names": self.leftover_names,
            "leftover_pollers": self.leftover_pollers,
        }


def _growth(values: list[int]) -> int:
    third = max(1, len(values) // 3)
    return int(statistics.median(values[-third:]) - statistics.median(values[:third]))


class Heartbeat:
    """Measures how late a tiny periodic sleep wakes up: the worst stall of the event loop.

    A coroutine that blocks the loop (a synchronous HTTP call, a CPU-heavy parse) shows up as a
    lag as long as the block.
    """

    def __init__(self, period: float = 0.005) -> None:
        self.period = period
        self.max_lag = 0.0
        self.beats = 0
        self._paused = 0
        self._task: asyncio.Task[None] | None = None

    def reset(self) -> float:
        """Start measuring afresh; returns the worst lag so far."""
        worst, self.max_lag = self.max_lag, 0.0
        return worst

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.period)
            if not self._paused:
                self.max_lag = max(self.max_lag, loop.time() - start - self.period)
            self.beats += 1

    @contextlib.asynccontextmanager
    async def excluded(self) -> AsyncIterator[None]:
        """A stall the measurement itself causes (a forced garbage collection) is not counted."""
        self._paused += 1
        try:
            yield
        finally:
            await asyncio.sleep(self.period * 2)  # the heartbeat wakes, late, while still paused
            self._paused -= 1

    async def __aenter__(self) -> Heartbeat:
        self._task = asyncio.create_task(self._beat(), name="heartbeat")
        await asyncio.sleep(0)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def conn_id(index: int) -> str:
    return f"prime_soak_{index}"


def connection_env(base_url: str, api_keys: Sequence[str]) -> dict[str, str]:
    """``AIRFLOW_CONN_PRIME_SOAK_<i>`` for each key: one connection, one shared poller each."""
    env = {}
    for index, key in enumerate(api_keys):
        connection = {"conn_type": "prime", "host": base_url, "password": key, "extra": SOAK_EXTRA}
        env[f"AIRFLOW_CONN_{conn_id(index).upper()}"] = json.dumps(connection)
    return env


def pod_ids(connection: int, count: int) -> list[str]:
    return [f"soak-{connection}-{n}" for n in range(count)]


def scenario(config: SoakConfig) -> Scenario:
    """Pods that never become ready, for every connection's waits (the churn connection has none)."""
    pods = [
        fixed_pod(pod_id, "PROVISIONING")
        for index in range(config.connections)
        for pod_id in pod_ids(index, config.pods_per_connection)
    ]
    return Scenario.of(pods)


class Soak:
    """Runs the waits of a :class:`SoakConfig` until told to stop, counting what they do."""

    def __init__(self, config: SoakConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.waits_started = 0
        self.events: dict[str, int] = {}
        self.stopping = asyncio.Event()

    async def wait(self, connection: int, ids: list[str], seconds: float) -> None:
        trigger = PodStatusTrigger(
            pod_ids=ids,
            deadline=time.time() + seconds,
            prime_conn_id=conn_id(connection),
            poll_interval=self.config.interval,
            missing_grace=3600,  # churn waits ask for pods nobody has: they must time out, not fail
        )
        self.waits_started += 1
        async for event in trigger.run():
            status = str(event.payload["status"])
            self.events[status] = self.events.get(status, 0) + 1

    async def churn(self, connection: int, known: list[str]) -> None:
        """Short waits, one after the other, on a mix of known and never-seen pod ids."""
        while not self.stopping.is_set():
            ids = self.rng.sample(known, k=min(2, len(known))) if known else []
            ids.append(f"ghost-{connection}-{self.waits_started % GHOST_IDS}")
            await self.wait(connection, ids, seconds=self.rng.uniform(0.1, 0.4))

    async def run(self) -> list[asyncio.Task[None]]:
        config = self.config
        tasks = []
        for index in range(config.connections + 1):  # the last connection: churn only
            known = pod_ids(index, config.pods_per_connection) if index < config.connections else []
            if known:
                for _ in range(config.waits_per_connection):
                    ids = self.rng.sample(known, k=self.rng.randint(1, 3))
                    tasks.append(asyncio.create_task(self.wait(index, ids, config.seconds + 3600)))
            # one churner alone on the last connection: its poller is made and torn down each wait
            for _ in range(config.churners_per_connection if known else 1):
                tasks.append(asyncio.create_task(self.churn(index, known)))
        return tasks


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


async def run_soak(
    config: SoakConfig,
    *,
    trace: bool = True,
    until: Callable[[], bool] | None = None,
    time_cap: float | None = None,
) -> SoakResult:
    """Run the soak on the current event loop; the connections must be defined already.

    It runs ``config.seconds``, then, if ``until`` is given, on until ``until()`` holds or
    ``time_cap`` seconds have passed (a test asks for a number of poll cycles, whatever the
    machine's load). The triggers are cancelled at the end, as a triggerer stopping would; what
    is left running afterwards is reported too.
    """
    result = SoakResult(config)
    soak = Soak(config)
    tracing = trace and not tracemalloc.is_tracing()
    if tracing:
        tracemalloc.start()
    # Everything alive now (modules, Airflow's configuration...) is set aside, so the full
    # collection before each sample scans only what the waits create: milliseconds, not 0.2 s.
    gc.freeze()
    process = psutil.Process()
    cpu_start = sum(process.cpu_times()[:2])
    started = time.monotonic()
    warming_up = True
    try:
        async with Heartbeat() as heartbeat:
            tasks = await soak.run()
            cap = max(config.seconds, time_cap or 0.0)
            while (elapsed := time.monotonic() - started) < config.seconds or (
                until is not None and not until() and elapsed < cap
            ):
                await asyncio.sleep(config.sample_every)
                async with heartbeat.excluded():
                    result.samples.append(_sample(time.monotonic() - started, soak))
                if warming_up and result.samples[-1].at >= config.seconds * config.warm_up:
                    result.max_lag_warm_up, warming_up = heartbeat.reset(), False
            soak.stopping.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        result.max_lag = heartbeat.max_lag
        result.cpu_seconds = sum(process.cpu_times()[:2]) - cpu_start
    finally:
        gc.unfreeze()
        if tracing:
            tracemalloc.stop()
    # A task that finishes on its own moments after the cancel (a shared connection lookup still
    # in flight, a client closing its sockets) is not left behind; one still running after
    # LEFTOVER_GRACE is, and its name is kept for the report.
    current = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    if others:
        await asyncio.wait(others, timeout=LEFTOVER_GRACE)
    leftovers = [t.get_name() for t in others if not t.done()]
    result.leftover_tasks = len(leftovers)
    result.leftover_names = leftovers
    result.leftover_pollers = len(active_pollers())
    result.waits_started = soak.waits_started
    result.events = dict(soak.events)
    return result


def _sample(at: float, soak: Soak) -> Sample:
    # Unreachable cycles (an exception and its traceback frames, say) wait for the collector's
    # rare full passes; collected first, what remains is what the waits really hold.
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
    return Sample(
        at=round(at, 2),
        traced_bytes=traced,
        rss_bytes=_rss(),
        tasks=len(asyncio.all_tasks()),
        waits_started=soak.waits_started,
        events=sum(soak.events.values()),
    )


def soak_against_simulator_process(config: SoakConfig, *, trace: bool = True) -> SoakResult:
    """The whole soak: a simulator in its own process (its memory apart), connections, the run."""
    keys = [f"soak-key-{index}" for index in range(config.connections + 1)]
    with PrimeSimulatorProcess(scenario(config), api_keys=keys, max_pod_ids=None) as sim:
        if config.faults:
            sim.inject(*fault_mix())
        with mock.patch.dict(os.environ, connection_env(sim.base_url, keys)):
            result = asyncio.run(run_soak(config, trace=trace))
        result.requests = int(sim.stats_snapshot()["by_path"].get("/api/v1/pods/status", 0))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = SoakConfig()
    parser.add_argument("--seconds", type=float, default=defaults.seconds)
    parser.add_argument("--connections", type=int, default=defaults.connections)
    parser.add_argument("--waits", type=int, default=defaults.waits_per_connection, help="per connection")
    parser.add_argument("--pods", type=int, default=defaults.pods_per_connection, help="per connection")
    parser.add_argument("--interval", type=float, default=defaults.interval)
    parser.add_argument("--no-faults", action="store_true")
    parser.add_argument("--no-tracemalloc", action="store_true", help="resident memory only (faster)")
    parser.add_argument("--json", help="also write the summary and samples to this file")
    args = parser.parse_args(argv)
    config = SoakConfig(
        seconds=args.seconds,
        connections=args.connections,
        waits_per_connection=args.waits,
        pods_per_connection=args.pods,
        interval=args.interval,
        faults=not args.no_faults,
    )
    result = soak_against_simulator_process(config, trace=not args.no_tracemalloc)
    summary = result.summary()
    print(json.dumps(summary, indent=1))
    if args.json:
        data = {"summary": summary, "samples": [asdict(s) for s in result.samples]}
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=1)
    return 0 if result.leftover_tasks == 0 and result.leftover_pollers == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
