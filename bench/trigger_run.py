"""One benchmark case: N deferred triggers of one kind waiting on D simulated pods, in this event loop.

The triggers run the way Airflow's triggerer runs them: each one is built from its kwargs and its
``run()`` async generator is consumed by its own task in one event loop, until the first event. The
simulator runs in another process, steered through its ``/_sim/`` control API from a worker thread,
so that every reading (request counts, CPU, clocks) is taken at the right moment even when the
loop under test is saturated.

A case goes through four phases, all in units of the poll interval ``I``:

1. **ramp** — trigger starts spread evenly over ``ramp * I`` (triggers arrive over time in a real
   triggerer; the peer-style baseline then polls at evenly spread phases, its best case);
2. **settle** — until every trigger has judged its first answer (at most ``start_limit * I``), then
   ``settle * I`` more;
3. **steady** — ``steady * I`` with every pod not ready (ACTIVE, installing): requests, CPU of this
   process and of the simulator, and event-loop lag are read over exactly this window; peak memory
   in use is read at its end (it covers ramp, settle and steady; see :class:`MemoryProbe`);
4. **detection** — the pods are made ready through the control API in ``flip_groups`` groups spread
   over one interval (so the flips sample every phase of the poll cycle), and each trigger's event
   is timed against the moment its pod's flip request was sent.
"""

from __future__ import annotations

import asyncio
import gc
import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from airflow.triggers.base import TriggerEvent

from airflow_provider_prime.hooks._endpoints import CHUNK_SIZE
from airflow_provider_prime.models import InstallationState, PodState, PodStatus
from airflow_provider_prime.readiness import PodWait, Step
from airflow_provider_prime.testing import Phase, Scenario, SimulatorClient, fixed_pod
from airflow_provider_prime.triggers import polling
from airflow_provider_prime.triggers.pod_status import PodStatusTrigger
from bench import procstat
from bench.baseline_trigger import PeerStylePodStatusTrigger, SharedTlsPeerStyleTrigger

#: The trigger classes a case can run, by the name the report uses.
KINDS: dict[str, type[PodStatusTrigger]] = {
    "provider": PodStatusTrigger,
    "baseline": PeerStylePodStatusTrigger,
    "baseline-shared-tls": SharedTlsPeerStyleTrigger,
}


if TYPE_CHECKING:
    _Mixin = PodStatusTrigger  # what the mixin's super() resolves to in every class it is mixed into
else:
    _Mixin = object


class _CountsWaiting(_Mixin):
    """Mixed into a case's trigger class: counts the triggers that have judged a first answer.

    The steady window must not begin while triggers are still starting (their connection lookups
    and first answers are start-up costs, not steady polling); this tells the harness when all of
    them are waiting. One attribute check per answer, the same for every kind.
    """

    waiting = 0  # per case: each case makes its own subclass

    def _pod_wait(self, api: str) -> PodWait:
        wait = super()._pod_wait(api)
        answer = wait.answer
        counted = type(self)

        def first_counted(statuses: Mapping[str, PodStatus], now: float, *, news: bool = True) -> Step:
            if wait.verdict is None:  # its first answer
                counted.waiting += 1
            return answer(statuses, now, news=news)

        wait.answer = first_counted  # type: ignore[method-assign]
        return wait


def _counting(trigger_class: type[PodStatusTrigger]) -> type[_CountsWaiting]:
    name = f"{trigger_class.__name__}ForBench"
    return cast("type[_CountsWaiting]", type(name, (_CountsWaiting, trigger_class), {"waiting": 0}))


#: What every pod reports during the steady window: up, SSH there, installation half done.
WAITING = Phase(
    status=PodState.ACTIVE.value,
    installation_status=InstallationState.ACTIVE.value,
    installation_progress=50,
    ip_nodes=1,
    ssh_nodes=1,
)


@dataclass(frozen=True)
class Timing:
    """How long each phase of a case lasts (see the module docstring)."""

    interval: float = 5.0
    ramp: float = 1.0
    settle: float = 0.5
    steady: float = 3.0
    flip_groups: int = 5
    #: Seconds to wait for the last events beyond one interval after the last flip.
    detect_grace: float = 5.0
    #: Most intervals to wait, after the ramp, for every trigger to be waiting.
    start_limit: float = 10.0


@dataclass
class CaseResult:
    """What one case measured. Times in seconds, memory in bytes."""

    kind: str
    triggers: int
    pods: int
    interval: float
    steady_seconds: float
    requests_per_interval: float
    cpu_per_interval: float
    server_cpu_per_interval: float
    memory_per_trigger: float | None
    #: Worst event-loop lag while the triggers start, in the steady window, and around detection.
    loop_lag_ramp: float
    loop_lag_steady: float
    loop_lag_detection: float
    #: The same, CPU-bound part only (see :class:`LoopMonitor`).
    loop_busy_ramp: float
    loop_busy_steady: float
    loop_busy_detection: float
    latencies: list[float]
    detected: int
    failures: list[str] = field(default_factory=list)
    flip_call_max: float = 0.0
    leaks: list[str] = field(default_factory=list)
    #: Seconds from the first start until every trigger had judged a first answer (None: never).
    all_waiting_after: float | None = None
    #: Longest garbage-collector pause during the case.
    gc_pause_max: float = 0.0
    #: Resident set size when the case began (after collecting and trimming what earlier cases left).
    rss_at_start: int | None = None

    @property
    def loop_lag_max(self) -> float:
        """Worst event-loop lag over the whole case."""
        return max(self.loop_lag_ramp, self.loop_lag_steady, self.loop_lag_detection)

    @property
    def loop_busy_max(self) -> float:
        """Worst CPU-bound event-loop lag over the whole case."""
        return max(self.loop_busy_ramp, self.loop_busy_steady, self.loop_busy_detection)

    @property
    def loop_lag_polling(self) -> float:
        """Worst event-loop lag once every trigger was waiting (steady window and detection)."""
        return max(self.loop_lag_steady, self.loop_lag_detection)

    @property
    def target_requests(self) -> int:
        """Requests per interval the provider should make: one per chunk of distinct pods."""
        return math.ceil(self.pods / CHUNK_SIZE)

    @property
    def missed(self) -> int:
        """Triggers that fired no success event in time."""
        return self.triggers - self.detected

    def latency(self, quantile: float) -> float | None:
        """Detection latency at ``quantile`` (0.5 = median, 1 = max) over the detected triggers."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        if quantile >= 1:
            return ordered[-1]
        if quantile == 0.5:
            return statistics.median(ordered)
        return ordered[min(len(ordered) - 1, math.ceil(quantile * len(ordered)) - 1)]


class MemoryProbe:
    """Peak memory in use during a case, above what was in use when it began (see :mod:`bench.procstat`).

    ``heap``: the live bytes of the heap, sampled by the heartbeat five times a second; exact, and
    blind to what earlier cases freed. ``rss``: peak resident-set growth, the fallback.
    """

    def __init__(self) -> None:
        self.method = "heap" if procstat.heap_in_use() is not None else "rss"
        self.cost = 0.0  # CPU seconds the loop's thread spent sampling, kept out of the CPU figures
        self._base: int | None = None
        self._peak = 0

    def start(self) -> None:
        if self.method == "rss":
            procstat.reset_peak_rss()
            self._base = procstat.rss_bytes()
        else:
            self._base = procstat.heap_in_use()
        self._peak = self._base or 0

    def sample(self) -> None:
        if self.method != "heap":
            return
        started = time.thread_time()
        value = procstat.heap_in_use()
        if value is not None and value > self._peak:
            self._peak = value
        self.cost += time.thread_time() - started

    def growth(self) -> int | None:
        """Peak bytes in use above the start, so far."""
        if self._base is None:
            return None
        self.sample()
        peak = procstat.peak_rss_bytes() if self.method == "rss" else self._peak
        return None if peak is None else max(0, peak - self._base)


class LoopMonitor:
    """A heartbeat that sleeps ``period`` seconds over and over and keeps the worst overshoot.

    The overshoot of a short sleep is how long the loop was busy elsewhere: the delay every other
    coroutine (another trigger's event, the triggerer's own bookkeeping) suffered at that moment.
    Airflow's triggerer does the same with 0.1 s sleeps and warns above 0.2 s.

    On a shared machine part of that wall-clock overshoot is the OS running other processes, so
    the monitor also keeps the worst *CPU-bound* overshoot: the CPU time this thread spent during
    one sleep, beyond the sleep's length, i.e. the lag the same work would cause on an idle core.
    """

    def __init__(
        self, period: float = 0.01, probe: MemoryProbe | None = None, sample_every: int = 20
    ) -> None:
        self.period = period
        self.probe = probe or MemoryProbe()
        self._sample_every = sample_every
        self._worst = 0.0
        self._worst_busy = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        beats = 0
        while True:
            started, cpu = loop.time(), time.thread_time()
            await asyncio.sleep(self.period)
            lag = loop.time() - started - self.period
            busy = time.thread_time() - cpu - self.period
            if lag > self._worst:
                self._worst = lag
            if busy > self._worst_busy:
                self._worst_busy = busy
            beats += 1
            if beats % self._sample_every == 0:
                self.probe.sample()

    def take(self) -> tuple[float, float]:
        """The worst (wall-clock, CPU-bound) lag since the last call, and start afresh."""
        worst = (self._worst, self._worst_busy)
        self._worst = self._worst_busy = 0.0
        return worst


class GcWatch:
    """The longest pause of Python's cyclic garbage collector, one of the things that lag the loop.

    A triggerer's heap holds all of Airflow; a full (generation 2) collection of it stops the
    event loop for tens of milliseconds whatever the triggers do, so the lag figures are easier
    to read next to it.
    """

    def __init__(self) -> None:
        self._started = 0.0
        self._worst = 0.0

    def __enter__(self) -> GcWatch:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, _info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._started = now
        elif now - self._started > self._worst:
            self._worst = now - self._started

    def take(self) -> float:
        """The longest pause since the last call, and start afresh."""
        worst, self._worst = self._worst, 0.0
        return worst


@dataclass(frozen=True)
class _Reading:
    requests: int
    at: float
    cpu: float
    server_cpu: float


def _read(sim: SimulatorClient, server_pid: int | None) -> _Reading:
    """Counters and clocks read together, in a worker thread (independent of the loop's backlog)."""
    total = int(sim.stats_snapshot()["total"])
    server_cpu = procstat.process_cpu_seconds(server_pid) if server_pid else 0.0
    return _Reading(total, time.monotonic(), time.process_time(), server_cpu)


def _flip(sim: SimulatorClient, pod_ids: list[str]) -> tuple[float, float]:
    """Make ``pod_ids`` ready with one control request; returns (sent, answered) monotonic times."""
    scripts = [fixed_pod(pod_id) for pod_id in pod_ids]
    sent = time.monotonic()
    sim.add_pod(*scripts)
    return sent, time.monotonic()


async def _sleep_until(when: float) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, when - loop.time()))


async def _consume(
    trigger_class: type[PodStatusTrigger],
    kwargs: dict[str, Any],
    start_at: float,
    record: Callable[[TriggerEvent], None],
) -> None:
    """What the triggerer's ``run_trigger`` does with one trigger: build it, iterate ``run()``."""
    await _sleep_until(start_at)
    trigger = trigger_class(**kwargs)
    async for event in trigger.run():
        record(event)


async def run_case(
    kind: str,
    triggers: int,
    pods: int,
    timing: Timing,
    sim: SimulatorClient,
    server_pid: int | None,
    monitor: LoopMonitor,
    conn_id: str,
    gc_watch: GcWatch | None = None,
) -> CaseResult:
    """Run one case (see the module docstring) and return its measurements."""
    loop = asyncio.get_running_loop()
    interval = timing.interval
    ids = [f"bench-{kind}-{triggers}-{j:05d}" for j in range(pods)]
    waiting = Scenario.of(
        [fixed_pod(pod_id, phase=WAITING) for pod_id in ids], name=f"bench {kind} {triggers}"
    )
    await asyncio.to_thread(sim.set_scenario, waiting)
    await asyncio.to_thread(sim.reset)

    procstat.release_free_memory()  # blocks the loop; the heartbeat reports that lag next, so:
    await asyncio.sleep(3 * monitor.period)  # let it, before the case's own figures start
    probe = monitor.probe
    probe.start()
    rss_before = procstat.rss_bytes()
    monitor.take()
    if gc_watch is not None:
        gc_watch.take()

    detected_at: dict[int, float] = {}
    failures: list[str] = []

    def recorder(index: int) -> Callable[[TriggerEvent], None]:
        def record(event: TriggerEvent) -> None:
            payload = event.payload
            if payload.get("status") == "success":
                detected_at[index] = time.monotonic()
            else:
                failures.append(f"trigger {index}: {payload.get('status')}: {payload.get('message')}")

        return record

    total_seconds = interval * (timing.ramp + timing.settle + timing.steady + 2) + timing.detect_grace
    deadline = time.time() + total_seconds + 120
    trigger_class = _counting(KINDS[kind])
    started = loop.time() + 0.05
    tasks = [
        loop.create_task(
            _consume(
                trigger_class,
                {
                    "pod_ids": [ids[i % pods]],
                    "deadline": deadline,
                    "prime_conn_id": conn_id,
                    "poll_interval": interval,
                },
                started + timing.ramp * interval * i / triggers,
                recorder(i),
            ),
            name=f"bench-trigger-{i}",
        )
        for i in range(triggers)
    ]

    # Steady window, once every trigger is waiting.
    await _sleep_until(started + timing.ramp * interval)
    give_up = loop.time() + timing.start_limit * interval
    while trigger_class.waiting < triggers and loop.time() < give_up:  # noqa: ASYNC110 (a counter)
        await asyncio.sleep(0.05)
    all_waiting_after = loop.time() - started if trigger_class.waiting >= triggers else None
    await asyncio.sleep(timing.settle * interval)
    lag_before, busy_before = monitor.take()
    first = await asyncio.to_thread(_read, sim, server_pid)
    sampling_before = probe.cost
    await asyncio.sleep(timing.steady * interval)
    last = await asyncio.to_thread(_read, sim, server_pid)
    sampling = probe.cost - sampling_before
    lag_steady, busy_steady = monitor.take()
    growth = probe.growth()
    intervals = (last.at - first.at) / interval

    # Detection: pods made ready group by group over one interval.
    groups = min(timing.flip_groups, pods)
    flipped_at: dict[str, float] = {}
    flip_call_max = 0.0
    flips_start = loop.time()
    for g in range(groups):
        await _sleep_until(flips_start + g * interval / groups)
        group = ids[g::groups]
        sent, answered = await asyncio.to_thread(_flip, sim, group)
        flip_call_max = max(flip_call_max, answered - sent)
        flipped_at.update(dict.fromkeys(group, sent))
    _, pending = await asyncio.wait(tasks, timeout=interval + timing.detect_grace)
    for task in pending:
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    lag_after, busy_after = monitor.take()

    failures += [
        f"trigger {i}: raised {type(outcome).__name__}: {outcome}"
        for i, outcome in enumerate(outcomes)
        if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError)
    ]
    latencies = []
    for index, at in detected_at.items():
        flip = flipped_at.get(ids[index % pods])
        if flip is None or at < flip:
            failures.append(f"trigger {index}: reported ready before its pod was made ready")
        else:
            latencies.append(at - flip)
    leaks = [f"poller still running for {len(p.pod_ids)} pods" for p in polling.active_pollers()]

    memory = None if growth is None else growth / triggers
    return CaseResult(
        kind=kind,
        triggers=triggers,
        pods=pods,
        interval=interval,
        steady_seconds=last.at - first.at,
        requests_per_interval=(last.requests - first.requests) / intervals,
        cpu_per_interval=(last.cpu - first.cpu - sampling) / intervals,
        server_cpu_per_interval=(last.server_cpu - first.server_cpu) / intervals,
        memory_per_trigger=memory,
        loop_lag_ramp=lag_before,
        loop_lag_steady=lag_steady,
        loop_lag_detection=lag_after,
        loop_busy_ramp=busy_before,
        loop_busy_steady=busy_steady,
        loop_busy_detection=busy_after,
        latencies=latencies,
        detected=len(latencies),
        failures=failures,
        flip_call_max=flip_call_max,
        leaks=leaks,
        all_waiting_after=all_waiting_after,
        gc_pause_max=gc_watch.take() if gc_watch is not None else 0.0,
        rss_at_start=rss_before,
    )
