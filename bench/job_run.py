"""One side of one case of the job benchmark: N jobs x M nodes tailed from one event loop.

A side is ``provider`` (N :class:`~airflow_provider_prime.triggers.job.PrimeJobTrigger`, one per
job, each following that job's M nodes) or ``peer`` (N x M ``SSHRemoteJobTrigger`` of Airflow's SSH
provider, one per node, each with an Airflow SSH connection of its own). Each side gets a fresh
simulator in its own process (``PrimeSimulatorProcess(..., ssh_keys=...)``): N pods of M nodes, a
real SSH server per node on loopback, so the nodes' CPU is not this process's.

What happens, in this process's one event loop:

1. **launch**: every node starts the same detached job, :data:`JOB_TEXT` (a line with the node's
   clock every :attr:`Timing.line_every` seconds), the way each side launches it: ours with
   :meth:`.JobRemote.launch` (the operator's launch script, guarded and detached), the peer's with
   its own ``build_posix_wrapper_command`` run through its ``SSHHookAsync``;
2. **start**: all the triggers at once (a triggerer picking them up), each ``run()`` consumed by its
   own task as ``TriggerRunner`` does, then :attr:`Timing.warmup` intervals;
3. **window** (:attr:`Timing.window` intervals): CPU seconds of this process
   (``time.process_time``), the simulator process's CPU, SSH connections open on the nodes (the
   simulator's ``ssh_nodes.connections_open``, read at both ends), and the worst event-loop lag
   (:class:`bench.trigger_run.LoopMonitor`, a 10 ms heartbeat);
4. **drain**: until every node delivered a line printed after the window (at most
   :attr:`Timing.grace` intervals), so the window's last lines can arrive; then the triggers are
   cancelled (as when a triggerer stops) and the pods deleted, which kills the jobs.

**Line latency.** Every line the job prints carries the node's wall clock (``$EPOCHREALTIME``), its
node and its sequence number. A structlog processor (:class:`LineClock`), first in the chain, notes
when each line reaches a trigger's log: ours logs one record per line (``[node 1] ...``), the peer
one record per chunk (``self.log.info("%s", chunk)``), so a chunk's lines all arrive with it. The
latency of a line is that moment minus the node's clock (one machine, one clock). Lines printed in
the window count; a line of the window missing from the log, or logged twice, is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import io
import itertools
import json
import logging
import math
import os
import pstats
import re
import shutil
import statistics
import sys
import time
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from airflow_provider_prime.job_env import node_env
from airflow_provider_prime.job_ids import job_dir, job_id
from airflow_provider_prime.job_nodes import JobNode, handover_of, job_nodes
from airflow_provider_prime.job_remote import JobRemote
from airflow_provider_prime.job_script import Scripts
from airflow_provider_prime.testing import (
    PrimeSimulatorProcess,
    Scenario,
    SimulatorClient,
    airflow_connection_env,
    fixed_pod,
)
from airflow_provider_prime.testing.connection import ssh_connection_env
from airflow_provider_prime.triggers import polling
from bench import procstat
from bench.trigger_run import GcWatch, LoopMonitor

#: ``peer-quiet`` is the peer with asyncssh's own INFO lines off, as ours has them (see
#: :func:`asyncssh_logging`): the same protocol, without the logging's cost.
SIDES = ("provider", "peer", "peer-quiet")
#: The job every node runs: one line every LINE_EVERY seconds, with the node's clock, its tag and
#: a sequence number. ``read -t`` on a pipe nobody writes to is a sleep without a fork (hundreds of
#: ``sleep`` processes a second would load the machine more than the triggers do). One shell line,
#: so the peer's wrapper sends all of its output to the job's log.
JOB_TEXT = (
    'exec {t}<> <(:); i=0; while :; do i=$((i+1)); echo "$EPOCHREALTIME bench $BENCH_NODE $i end"; '
    "read -t {every} -u $t || :; done"
)
_LINE = re.compile(r"(\d+\.\d+) bench (\S+) (\d+) end$")
_MARK = " bench "
#: Launches (SSH sessions that start a job) in flight at once, per side.
LAUNCH_CONCURRENCY = 32
#: Half-seconds the harness waits for the cancelled triggers to end.
CANCEL_TRIES = 40
#: The connection ids each side reads.
SSH_CONN_ID = "ssh_default"
PRIME_CONN_ID = "prime_default"
PEER_CONN_PREFIX = "bench_node_"
#: The peer's default job root on a POSIX node (``RemoteJobPaths``); its job directories there
#: are removed after each side (the simulated nodes share this machine's /tmp).
PEER_BASE_DIR = "/tmp/airflow-ssh-jobs"


@dataclass(frozen=True)
class Timing:
    """How long each phase of a side lasts, in poll intervals (see the module docstring)."""

    interval: float = 2.0
    #: Intervals after every node's first line reached the log, before the window.
    warmup: float = 1.0
    #: Most intervals to wait for every node's first line.
    start_limit: float = 15.0
    window: float = 10.0
    #: Most intervals to wait after the window for the lines printed in it (it ends as soon as
    #: every node delivered a line printed after the window).
    grace: float = 6.0
    line_every: float = 0.5


@dataclass
class SideResult:
    """What one side of one case measured (times in seconds)."""

    side: str
    jobs: int
    nodes_per_job: int
    interval: float
    triggers: int
    window_seconds: float
    cpu_per_interval: float
    server_cpu_per_interval: float
    #: ``ssh_nodes.connections_open`` at the start and at the end of the window.
    connections: tuple[int, int]
    #: Seconds from the triggers' start until a line of every node reached the log (None: never).
    all_tailing_after: float | None
    loop_lag_start: float
    loop_lag_window: float
    loop_busy_window: float
    #: The longest pause of Python's garbage collector in the window.
    gc_pause_max: float
    #: Share of the machine's CPU (every core, every process) busy during the window.
    machine_busy: float
    latencies: list[float]
    #: Seconds between two polls of one node that delivered lines (see :func:`poll_periods`).
    periods: list[float] = field(default_factory=list)
    #: Lines printed in the window that never reached the log, and lines logged more than once.
    missing: int = 0
    repeated: int = 0
    launch_seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    #: Triggers that went on after their first cancellation and needed another (see :func:`_cancel_all`).
    recancelled: int = 0
    processes_left: int | None = None
    profile: str | None = None
    #: Jobs that run on the same pod (its nodes shared by that many jobs).
    jobs_per_pod: int = 1

    @property
    def nodes(self) -> int:
        return self.jobs * self.nodes_per_job

    @property
    def connections_open(self) -> int:
        return max(self.connections)

    def latency(self, quantile: float) -> float | None:
        """Line latency at ``quantile`` (0.5 median, 1 max), None with no line."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        if quantile >= 1:
            return ordered[-1]
        if quantile == 0.5:
            return statistics.median(ordered)
        return ordered[min(len(ordered) - 1, math.ceil(quantile * len(ordered)) - 1)]

    @property
    def late_lines(self) -> int:
        """Lines that reached the log more than one poll interval after they were printed (or never)."""
        return sum(1 for latency in self.latencies if latency > self.interval) + self.missing


# --- the lines' arrival -------------------------------------------------------------------------


class LineClock:
    """A structlog processor that notes when each benchmark line reaches a log (passes every event on).

    First in the chain, so it sees the call itself, before Airflow's processors render it.
    """

    def __init__(self) -> None:
        #: (node tag, sequence number, printed at, logged at), in arrival order.
        self.lines: list[tuple[str, int, float, float]] = []
        self.seen: set[str] = set()
        #: The node's clock of the latest line of each node that reached a log.
        self.latest: dict[str, float] = {}

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
        event = event_dict.get("event")
        if isinstance(event, str):
            args = event_dict.get("positional_args")
            if args:
                with contextlib.suppress(TypeError, ValueError):
                    event = event % tuple(args)
            if _MARK in event:
                self._take(event, time.time())
        return event_dict

    def _take(self, text: str, now: float) -> None:
        for line in text.splitlines():
            match = _LINE.search(line)
            if match:
                self.lines.append((match.group(2), int(match.group(3)), float(match.group(1)), now))
                printed = float(match.group(1))
                self.seen.add(match.group(2))
                if printed > self.latest.get(match.group(2), 0.0):
                    self.latest[match.group(2)] = printed

    def clear(self) -> None:
        self.lines = []
        self.seen = set()
        self.latest = {}

    def tags(self) -> set[str]:
        """The nodes some line of which reached a log."""
        return self.seen


@contextlib.contextmanager
def clocking_lines() -> Iterator[LineClock]:
    """Install a :class:`LineClock` first in structlog's chain for the duration."""
    import structlog

    clock = LineClock()
    processors = list(structlog.get_config()["processors"])
    structlog.configure(processors=[clock, *processors])
    try:
        yield clock
    finally:
        structlog.configure(processors=processors)


def judge_lines(
    lines: Sequence[tuple[str, int, float, float]], start: float, end: float, every: float
) -> tuple[list[float], int, int]:
    """Latencies of the lines printed in ``[start, end]``, and how many of those are missing or repeated.

    Lines are numbered per node, one every ``every`` seconds: a line is missing when it falls
    between the first line of the window and the last one the node printed by ``end`` (estimated
    from the first line's clock, give or take one) and never arrived; repeated when it arrived
    more than once.
    """
    by_node: dict[str, dict[int, list[tuple[float, float]]]] = {}
    for tag_, seq, printed, logged in lines:
        by_node.setdefault(tag_, {}).setdefault(seq, []).append((printed, logged))
    latencies: list[float] = []
    missing = repeated = 0
    for seqs in by_node.values():
        inside = sorted(seq for seq, seen in seqs.items() if start <= seen[0][0] <= end)
        if not inside:
            continue
        first = inside[0]
        last_printed = first + int((end - seqs[first][0][0]) / every) - 1  # one line of slack
        for seq in range(first, max(last_printed, inside[-1]) + 1):
            seen = seqs.get(seq)
            if seen is None:
                missing += 1
                continue
            printed, logged = seen[0]
            if start <= printed <= end:
                latencies.append(logged - printed)
                repeated += len(seen) - 1
    return latencies, missing, repeated


def poll_periods(lines: Sequence[tuple[str, int, float, float]], start: float, end: float) -> list[float]:
    """Seconds between two deliveries of lines of one node, for deliveries in ``[start, end]``.

    A poll delivers a node's new lines together (ours one record per line, within microseconds;
    the peer one record per chunk), so deliveries more than 50 ms apart are two polls.
    """
    arrivals: dict[str, list[float]] = {}
    for tag_, _seq, _printed, logged in lines:
        if start <= logged <= end:
            arrivals.setdefault(tag_, []).append(logged)
    periods: list[float] = []
    for times in arrivals.values():
        times.sort()
        polls = [times[0]]
        for moment in times[1:]:
            if moment - polls[-1] > 0.05:
                polls.append(moment)
        periods += [b - a for a, b in itertools.pairwise(polls)]
    return periods


# --- the simulator and the connections ----------------------------------------------------------


def pod_ids(side: str, jobs: int) -> list[str]:
    return [f"bench-{side}-{index:04d}" for index in range(jobs)]


def tag(job: int, rank: int) -> str:
    return f"j{job}n{rank}"


def peer_conn_id(job: int, rank: int) -> str:
    return f"{PEER_CONN_PREFIX}{job}_{rank}"


def peer_connection_env(nodes: Sequence[Sequence[JobNode]], key_file: Path) -> dict[str, str]:
    """One Airflow SSH connection per node for the peer (host, port, user, key), as env variables.

    ``no_host_key_check``: the simulated nodes listen on ports other than 22, and the peer's
    ``host_key`` extra writes a known-hosts line without the port, which asyncssh does not match;
    so the peer skips the host key check (its own warning says so). Ours pins the key it first sees.
    """
    env = {}
    for index, job_nodes_ in enumerate(nodes):
        for node in job_nodes_:
            extra = {"key_file": str(key_file), "no_host_key_check": "true"}
            conn = {
                "conn_type": "ssh",
                "host": node.host,
                "port": node.port,
                "login": node.user,
                "extra": extra,
            }
            env[f"AIRFLOW_CONN_{peer_conn_id(index, node.rank).upper()}"] = json.dumps(conn)
    return env


def read_nodes(ids: Sequence[str]) -> list[tuple[JobNode, ...]]:
    """Each pod's nodes, ranks 0..M-1, from the API (through ``prime_default``)."""
    from airflow_provider_prime.hooks.prime import PrimeHook

    statuses = {status.pod_id: status for status in PrimeHook(PRIME_CONN_ID).get_pods_status(list(ids))}
    return [job_nodes(handover_of([pod_id], statuses)) for pod_id in ids]


def _node_stats(sim: SimulatorClient) -> dict[str, Any]:
    return sim.node_stats() or {}


def _delete_pods(sim: PrimeSimulatorProcess, ids: Sequence[str], patience: float = 60.0) -> int:
    """Delete the pods (which kills every process started on their nodes); the processes still
    alive on the nodes once none is left or ``patience`` seconds passed."""
    client = SimulatorClient(sim.base_url, sim.api_key, timeout=patience)
    try:
        for pod_id in ids:
            client.remove_pod(pod_id)
        end = time.monotonic() + patience
        while True:
            alive = int(_node_stats(client).get("processes_alive", 0))
            if alive == 0 or time.monotonic() > end:
                return alive
            time.sleep(0.5)
    finally:
        client.close()


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far (``/proc/stat``; (0, 0) elsewhere)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is counted in user already
    return total - idle, total


@dataclass(frozen=True)
class _Reading:
    at: float
    cpu: float
    server_cpu: float
    connections: int
    machine: tuple[int, int]


def _read(sim: PrimeSimulatorProcess) -> _Reading:
    """Clocks and counters read together, in a worker thread (on time even when the loop is busy)."""
    connections = int(_node_stats(sim).get("connections_open", 0))
    server = procstat.process_cpu_seconds(sim.pid) if sim.pid else 0.0
    return _Reading(time.monotonic(), time.process_time(), server, connections, machine_ticks())


# --- the two sides ------------------------------------------------------------------------------


@dataclass
class _Job:
    index: int
    nodes: tuple[JobNode, ...]
    dir: str = ""
    pins: dict[str, str] = field(default_factory=dict)
    #: The peer's per-node job: (conn id, job id, job dir, log file, exit code file), by rank.
    peer: dict[int, tuple[str, str, str, str, str]] = field(default_factory=dict)


async def _bounded(calls: Sequence[Any], limit: int = LAUNCH_CONCURRENCY) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(call: Any) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(call) for call in calls))


async def launch_provider(jobs: Sequence[_Job], text: str) -> None:
    """Launch every job with the operator's own launch (one reused connection per node), as its
    worker would before deferring; keeps each job's host key pins for its trigger."""
    from airflow_provider_prime.job_ssh import HostKeyPins, NodeLinks, aget_login, host_port

    login = await aget_login(SSH_CONN_ID)
    async with NodeLinks(login, HostKeyPins()) as links:

        async def one(job: _Job) -> None:
            ident = job_id("bench", "run", f"job-{job.index}", deployment="bench-jobs")
            job.dir = job_dir(ident)
            envs = {
                node.rank: node_env(
                    job.nodes,
                    node.rank,
                    job_id=ident,
                    job_dir=job.dir,
                    env={"BENCH_NODE": tag(job.index, node.rank)},
                )
                for node in job.nodes
            }
            remote = JobRemote(job.nodes, links, Scripts(job.dir))
            launched = await remote.launch("command", text, envs, {node.rank: 0 for node in job.nodes})
            for rank, probe in launched.items():
                if "launched" not in probe.action:
                    raise RuntimeError(
                        f"job {job.index} node {rank}: not launched ({' '.join(probe.action)})"
                    )

        await _bounded([lambda job=job: one(job) for job in jobs])
        pins = links.pins.to_dict()
    for job in jobs:
        wanted = {host_port(node.host, node.port) for node in job.nodes}
        job.pins = {where: key for where, key in pins.items() if where in wanted}


async def launch_peer(jobs: Sequence[_Job], text: str) -> None:
    """Launch every node's job with the peer's own wrapper (detached, exit code file, log file),
    through its async hook, one connection per launch as its operator makes."""
    from airflow.providers.ssh.hooks.ssh import SSHHookAsync
    from airflow.providers.ssh.utils.remote_job import (
        RemoteJobPaths,
        build_posix_wrapper_command,
        generate_job_id,
    )

    async def one(job: _Job, node: JobNode) -> None:
        conn_id = peer_conn_id(job.index, node.rank)
        ident = generate_job_id("bench", f"job_{job.index}_{node.rank}", "run", 1)
        paths = RemoteJobPaths(job_id=ident, remote_os="posix")
        wrapper = build_posix_wrapper_command(text, paths, {"BENCH_NODE": tag(job.index, node.rank)})
        status, out, err = await SSHHookAsync(ssh_conn_id=conn_id).run_command(wrapper, timeout=30)
        if status != 0 or ident not in str(out):
            raise RuntimeError(f"job {job.index} node {node.rank}: not launched ({status}: {err!r})")
        job.peer[node.rank] = (conn_id, ident, paths.job_dir, paths.log_file, paths.exit_code_file)

    await _bounded([lambda job=job, node=node: one(job, node) for job in jobs for node in job.nodes])


def _tags_per_trigger(side: str, jobs: Sequence[_Job]) -> list[set[str]]:
    """The nodes each trigger follows, in the order of the triggers."""
    if side == "provider":
        return [{tag(job.index, node.rank) for node in job.nodes} for job in jobs]
    return [{tag(job.index, rank)} for job in jobs for rank in sorted(job.peer)]


def provider_triggers(jobs: Sequence[_Job], interval: float) -> list[Any]:
    from airflow_provider_prime.triggers.job import PrimeJobTrigger

    return [
        PrimeJobTrigger(
            nodes=[node.to_dict() for node in job.nodes],
            job_dir=job.dir,
            phase="command",
            pins=job.pins,
            ssh_conn_id=SSH_CONN_ID,
            prime_conn_id=PRIME_CONN_ID,
            poll_interval=interval,
        )
        for job in jobs
    ]


def peer_triggers(jobs: Sequence[_Job], interval: float) -> list[Any]:
    from airflow.providers.ssh.triggers.ssh_remote_job import SSHRemoteJobTrigger

    return [
        SSHRemoteJobTrigger(
            ssh_conn_id=conn_id,
            remote_host=None,
            job_id=ident,
            job_dir=directory,
            log_file=log_file,
            exit_code_file=exit_file,
            remote_os="posix",
            poll_interval=interval,  # type: ignore[arg-type]  # typed int; any number sleeps
        )
        for job in jobs
        for conn_id, ident, directory, log_file, exit_file in (job.peer[r] for r in sorted(job.peer))
    ]


async def _consume(trigger: Any, events: list[str]) -> None:
    """What the triggerer's ``run_trigger`` does with one trigger: iterate ``run()``."""
    async for event in trigger.run():
        events.append(f"{type(trigger).__name__} fired: {event.payload}")


@contextlib.contextmanager
def asyncssh_logging(side: str) -> Iterator[None]:
    """asyncssh's logger as each side has it in a triggerer of its own, restored afterwards.

    asyncssh logs several INFO lines per command (channel opened, command, exit status, closed).
    Airflow's logging passes them on; the provider's SSH links set that logger to WARNING when the
    deployment has not set it (:func:`.job_ssh.require_asyncssh`), the SSH provider leaves it. So the
    logger starts unset for ``provider`` (its own code decides) and ``peer``, and at WARNING for
    ``peer-quiet``.
    """
    logger = logging.getLogger("asyncssh")
    saved = logger.level
    logger.setLevel(logging.WARNING if side == "peer-quiet" else logging.NOTSET)
    try:
        yield
    finally:
        logger.setLevel(saved)


# --- one side -----------------------------------------------------------------------------------


@dataclass
class _Window:
    """What the window measured, before the lines are judged."""

    first: _Reading
    last: _Reading
    start: float
    end: float
    lag_start: float
    lag: float
    busy: float
    gc_pause: float
    all_tailing_after: float | None
    profile: str | None


async def _measure(
    jobs: list[_Job], sim: PrimeSimulatorProcess, timing: Timing, lines: LineClock, profile: bool
) -> _Window:
    """Wait until every node's lines reach the log, warm up, then measure the window."""
    loop = asyncio.get_running_loop()
    monitor = LoopMonitor(sample_every=1 << 62)  # lag only: no memory sampling in this benchmark
    heartbeat = asyncio.create_task(monitor.run(), name="bench-heartbeat")
    interval = timing.interval
    try:
        with GcWatch() as gc_watch:
            started = loop.time()
            tags = {tag(job.index, node.rank) for job in jobs for node in job.nodes}
            give_up = started + timing.start_limit * interval
            while not tags <= lines.tags() and loop.time() < give_up:  # noqa: ASYNC110 (a set)
                await asyncio.sleep(0.05)
            all_tailing_after = loop.time() - started if tags <= lines.tags() else None
            await asyncio.sleep(timing.warmup * interval)
            lag_start, _ = monitor.take()
            gc_watch.take()
            first = await asyncio.to_thread(_read, sim)
            start = time.time()
            profiler = cProfile.Profile() if profile else None
            if profiler is not None:
                profiler.enable()
            await asyncio.sleep(timing.window * interval)
            if profiler is not None:
                profiler.disable()
            end = time.time()
            last = await asyncio.to_thread(_read, sim)
            lag, busy = monitor.take()
            gc_pause = gc_watch.take()
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
    top = _top(profiler) if profiler is not None else None
    return _Window(first, last, start, end, lag_start, lag, busy, gc_pause, all_tailing_after, top)


async def _run_side(
    side: str,
    sim: PrimeSimulatorProcess,
    jobs: list[_Job],
    timing: Timing,
    lines: LineClock,
    profile: bool,
) -> SideResult:
    loop = asyncio.get_running_loop()
    interval = timing.interval
    text = JOB_TEXT.replace("{every}", f"{timing.line_every:g}")
    launched_at = loop.time()
    await (launch_provider(jobs, text) if side == "provider" else launch_peer(jobs, text))
    launch_seconds = loop.time() - launched_at
    triggers = provider_triggers(jobs, interval) if side == "provider" else peer_triggers(jobs, interval)
    events: list[str] = []
    lines.clear()
    tasks = [
        loop.create_task(_consume(trigger, events), name=f"bench-{side}-trigger-{i}")
        for i, trigger in enumerate(triggers)
    ]
    try:
        window = await _measure(jobs, sim, timing, lines, profile)
        await _drain(lines, window.end, timing.grace * interval)
    finally:
        stubborn = await _cancel_all(tasks, _tags_per_trigger(side, jobs), lines)
    failures = list(events)
    for i, task in enumerate(tasks):
        if not task.done():
            failures.append(f"trigger {i}: still running {CANCEL_TRIES / 2:g} s after its cancellation")
        elif not task.cancelled() and task.exception() is not None:
            error = task.exception()
            failures.append(f"trigger {i}: raised {type(error).__name__}: {error}")
    latencies, missing, repeated = judge_lines(lines.lines, window.start, window.end, timing.line_every)
    first, last = window.first, window.last
    intervals = (last.at - first.at) / interval
    busy_ticks, all_ticks = (b - a for a, b in zip(first.machine, last.machine, strict=True))
    return SideResult(
        side=side,
        jobs=len(jobs),
        nodes_per_job=len(jobs[0].nodes),
        interval=interval,
        triggers=len(triggers),
        window_seconds=last.at - first.at,
        cpu_per_interval=(last.cpu - first.cpu) / intervals,
        server_cpu_per_interval=(last.server_cpu - first.server_cpu) / intervals,
        connections=(first.connections, last.connections),
        all_tailing_after=window.all_tailing_after,
        loop_lag_start=window.lag_start,
        loop_lag_window=window.lag,
        loop_busy_window=window.busy,
        gc_pause_max=window.gc_pause,
        machine_busy=busy_ticks / max(1, all_ticks),
        latencies=latencies,
        periods=poll_periods(lines.lines, window.start, window.end),
        missing=missing,
        repeated=repeated,
        launch_seconds=launch_seconds,
        failures=failures,
        recancelled=stubborn,
        profile=window.profile,
    )


async def _drain(lines: LineClock, after: float, most: float) -> None:
    """Wait until every node delivered a line printed after ``after`` (at most ``most`` seconds)."""
    end = time.monotonic() + most
    while time.monotonic() < end and not all(printed > after for printed in lines.latest.values()):  # noqa: ASYNC110
        await asyncio.sleep(0.1)


async def _cancel_all(tasks: Sequence[asyncio.Task[None]], tags: Sequence[set[str]], lines: LineClock) -> int:
    """Cancel every task and wait until it ends, as a triggerer that stops does; cancel again a task
    that goes on polling (a line of one of its nodes, ``tags[i]``, reaches the log afterwards).
    How many went on polling.

    A trigger can go on after a cancellation: before Python 3.12, ``asyncio.wait_for`` (asyncssh's
    ``run(timeout=...)``) can swallow a cancellation that arrives as its command finishes, and a
    trigger loop that then carries on polls until it is cancelled again (seen with the peer's on
    3.11). A task that is merely slow to end (ours records the log offsets on the nodes, then
    closes its connections) is left alone.
    """
    for task in tasks:
        task.cancel()
    cancelled_at = time.time()
    seen = len(lines.lines)
    stubborn: set[int] = set()
    for _ in range(CANCEL_TRIES):
        _done, pending = await asyncio.wait(tasks, timeout=0.5)
        if not pending:
            break
        fresh = {line[0] for line in lines.lines[seen:] if line[3] > cancelled_at}
        seen = len(lines.lines)
        for index, task in enumerate(tasks):
            if not task.done() and tags[index] & fresh:
                stubborn.add(index)
                task.cancel()
    return len(stubborn)


def _top(profiler: cProfile.Profile, count: int = 15) -> str:
    """The ``count`` functions with the most own time, then the most cumulative time, paths shortened."""
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(count)
    stats.sort_stats("cumulative").print_stats(count)
    text = out.getvalue()
    for prefix in sorted({*sys.path, str(Path(__file__).resolve().parent.parent)}, key=len, reverse=True):
        if prefix and prefix.startswith("/"):
            text = text.replace(prefix.rstrip("/") + "/", "")
    return text


def run_side(
    side: str,
    jobs: int,
    nodes_per_job: int,
    timing: Timing,
    key_file: Path,
    public_key: str,
    lines: LineClock,
    *,
    profile: bool = False,
    jobs_per_pod: int = 1,
) -> SideResult:
    """Start a simulator with ``jobs`` jobs of ``nodes_per_job`` nodes, ``jobs_per_pod`` of them on
    each pod (a fan-out on one pod shares its nodes), run one side against it."""
    if side not in SIDES:
        raise ValueError(f"unknown side {side!r}; one of {', '.join(SIDES)}")
    ids = pod_ids(side, -(-jobs // jobs_per_pod))
    scenario = Scenario(pods=tuple(fixed_pod(pod_id, nodes=nodes_per_job) for pod_id in ids))
    with PrimeSimulatorProcess(scenario, ssh_keys=[public_key]) as sim:
        env = {
            **airflow_connection_env(sim.base_url, sim.api_key, PRIME_CONN_ID),
            **ssh_connection_env(key_file, SSH_CONN_ID),
        }
        with mock.patch.dict(os.environ, env):
            nodes = read_nodes(ids)
            jobs_ = [_Job(index, nodes[index // jobs_per_pod]) for index in range(jobs)]
            peer_env = (
                peer_connection_env([job.nodes for job in jobs_], key_file) if side != "provider" else {}
            )
            with mock.patch.dict(os.environ, peer_env), asyncssh_logging(side):
                result = asyncio.run(_run_side(side, sim, jobs_, timing, lines, profile))
                result.jobs_per_pod = jobs_per_pod
        if polling.active_pollers():
            result.failures.append(f"{len(polling.active_pollers())} shared poller(s) still running")
        result.processes_left = _delete_pods(sim, ids)
    for job in jobs_:
        for _conn, _ident, directory, _log, _exit in job.peer.values():
            if directory.startswith(PEER_BASE_DIR + "/"):
                shutil.rmtree(directory, ignore_errors=True)
    return result


__all__ = [
    "JOB_TEXT",
    "SIDES",
    "LineClock",
    "SideResult",
    "Timing",
    "clocking_lines",
    "judge_lines",
    "run_side",
]
