"""Benchmark: pod waits on one real triggerer with Postgres, started in the triggerer or from a worker.

    python -m bench.production          # N = 100, 1000 started in the triggerer, 100 the classic way
    python -m bench.production --cases 100 --classic 100 --interval 2 --no-write   # a quick look

Real processes, as in production: a throw-away PostgreSQL (:mod:`scripts.postgres`), Airflow's
api-server, dag-processor, scheduler (LocalExecutor) and one triggerer (:mod:`scripts.airflow_stack`),
and the Prime API simulator in its own process. Each case triggers N / 50 runs of a DAG of 50 pod
waits (``bench/production_dags``) over N distinct booting pods and measures:

* **start**: seconds from the first run triggered until all N waits are deferred on the triggerer,
  and the worker processes that took (each classic wait runs a first poke in one, then defers);
  CPU seconds of the scheduler's process group (the LocalExecutor's worker processes included) and
  of the triggerer's over that phase;
* **steady state** over ``--steady`` poll intervals once every wait is polling: status requests
  per interval (the simulator counts them), triggerer CPU seconds per interval, and the
  triggerer's resident memory per wait (its process group's RSS less the RSS before the case);
* **detection**: every pod is then made ready; latency is the time from a pod turning ready to the
  first API answer that reported it so (the simulator's log), and "all fired" the time until no
  wait is deferred any more (every trigger has fired its event);
* **end**: from the last pod made ready until every wait's task instance is ``success``: the
  seconds, the worker processes started to end them (none when the trigger ends the task), and the
  CPU seconds of the scheduler's group (worker processes included) and of the triggerer's.

Three ways a wait can run (``--cases``, ``--resume``, ``--classic``): started and ended in the
triggerer; started in the triggerer and ended on a worker (``bench_waits_resume``: a no-op success
callback keeps the ending on a worker, as it was before waits could end in the triggerer); and
deferred from a worker, the classic way.

CPU and RSS sum every process of the component's group (``/proc``): the triggerer's trigger runner
is a child process, the worker processes are children of the scheduler. The results table goes to
stdout and, unless ``--no-write``, into ``docs/benchmarks.md`` between the
``production-bench`` markers.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider_prime.testing import PrimeSimulatorProcess, airflow_connection_env, ready_pod
from bench import procstat
from bench.production_dags.bench_waits import HAS_START_FROM_TRIGGER, WIDTH, pod_id
from bench.trigger_report import write_into
from scripts.airflow_api import FINISHED_RUN_STATES
from scripts.airflow_stack import AirflowStack, wait_until
from scripts.postgres import PostgresServer

DAGS = Path(__file__).resolve().parent / "production_dags"
DEFAULT_DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
BEGIN = "<!-- production-bench:start -->"
END = "<!-- production-bench:end -->"
#: A pod that boots for ten hours: ready only when the benchmark says so.
BOOTING_FOR = 36_000.0
#: What makes a pod ready (one node): ACTIVE, installed, reachable over SSH.
READY = {"installation_status": "FINISHED", "installation_progress": 100, "ssh_nodes": 1, "ip_nodes": 1}
PAGE = 1000
STARTS = {
    True: "Waits started in the triggerer with `start_from_trigger=True`.",
    False: "This sensor has no `start_from_trigger`: both kinds of rows deferred from a worker.",
}
PHASE_TIMEOUT = 1800.0


@dataclass(frozen=True)
class Usage:
    """CPU seconds (reaped children included) and resident bytes of one process group."""

    cpu: float
    rss: int


def group_usage(pgid: int) -> Usage:
    """Sum over the live processes of group ``pgid``: each one's CPU plus its reaped children's."""
    ticks, rss, page = 0, 0, os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            ticks += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
            rss += int(fields[21]) * page
    return Usage(ticks / os.sysconf("SC_CLK_TCK"), rss)


@dataclass(frozen=True)
class CaseResult:
    start: str  # "triggerer" or "worker"
    waits: int
    start_seconds: float
    worker_starts: int
    scheduler_cpu: float  # scheduler + worker processes, over the start phase
    triggerer_start_cpu: float
    requests_per_interval: float
    triggerer_cpu_per_interval: float
    rss_per_wait: float
    latency_p50: float
    latency_p95: float
    latency_max: float
    all_fired: float
    to_all_succeeded: float  # from the last pod made ready until every task instance is success
    end_worker_starts: int
    end_scheduler_cpu: float  # scheduler + worker processes, over the end phase
    end_triggerer_cpu: float


class Bench:
    """One stack (Postgres, one triggerer) and one simulator for every case of a run."""

    def __init__(self, stack: AirflowStack, simulator: PrimeSimulatorProcess, interval: float) -> None:
        self.stack, self.simulator, self.interval = stack, simulator, interval

    # -- reading the stack ---------------------------------------------------------------------

    def _states(self, dag_id: str, run_ids: Sequence[str]) -> list[str]:
        states = []
        for run_id in run_ids:
            path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
            body = self.stack.api.request("GET", path, params={"limit": PAGE})
            states += [
                "deferred-on-triggerer"
                if ti["state"] == "deferred" and (ti.get("trigger") or {}).get("triggerer_id") is not None
                else str(ti["state"])
                for ti in body["task_instances"]
            ]
        return states

    def _finished(self, dag_id: str, run_id: str) -> bool:
        return self.stack.api.dag_run(dag_id, run_id)["state"] in FINISHED_RUN_STATES

    def _requested_pods(self) -> set[str]:
        log = self.simulator.stats_snapshot(log=None)["log"]
        return {pid for record in log if record["status"] == 200 for pid in record["pod_ids"]}

    def _scheduler_log_size(self) -> int:
        return (self.stack.log_dir / "scheduler.log").stat().st_size

    def _worker_ends(self, since: int, dag_id: str) -> int:
        """Worker processes of ``dag_id`` that ended since log offset ``since``: the scheduler logs
        receiving each one's event (it logs "TaskInstance Finished" too, except on Postgres for a
        row another process held locked at that moment)."""
        with (self.stack.log_dir / "scheduler.log").open("rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
        return text.count(f"for task instance TaskInstanceKey(dag_id='{dag_id}',")

    # -- one case ------------------------------------------------------------------------------

    def run_case(self, start: str, waits: int, steady: int, *, finish: bool) -> CaseResult:
        dag_id = f"bench_waits_{start}"
        prefixes = [f"{start}-{waits}-{r}" for r in range(math.ceil(waits / WIDTH))]
        pods = [pod_id(prefix, i) for prefix in prefixes for i in range(WIDTH)]
        self.simulator.add_pod(*(ready_pod(pid, ready_at=BOOTING_FOR) for pid in pods))
        triggerer = self.stack.components["triggerer"]
        scheduler = self.stack.components["scheduler"]
        self.simulator.reset()
        before, scheduler_before = group_usage(triggerer.pid), group_usage(scheduler.pid)
        log_offset = self._scheduler_log_size()
        print(f"[{start} N={len(pods)}] triggering {len(prefixes)} runs", file=sys.stderr)
        started_at = time.monotonic()
        self.stack.api.unpause(dag_id)
        run_ids = [self.stack.api.trigger(dag_id, {"prefix": prefix}) for prefix in prefixes]
        wait_until(
            lambda: self._states(dag_id, run_ids).count("deferred-on-triggerer") == len(pods),
            PHASE_TIMEOUT,
            f"{len(pods)} waits deferred on the triggerer",
            2.0,
        )
        start_seconds = time.monotonic() - started_at
        deferred, scheduler_deferred = group_usage(triggerer.pid), group_usage(scheduler.pid)
        worker_starts = self._worker_ends(log_offset, dag_id)
        print(f"[{start} N={len(pods)}] deferred in {start_seconds:.0f} s", file=sys.stderr)

        # Deferred is not yet running: the triggerer may still be starting triggers (each joins the
        # poller with a request of its own). Steady once every pod was asked for, and an interval on.
        wait_until(
            lambda: set(pods) <= self._requested_pods(),
            PHASE_TIMEOUT,
            "every pod polled once",
            1.0,
        )
        time.sleep(self.interval + 1)
        window_start, first = time.time(), group_usage(triggerer.pid)
        time.sleep(steady * self.interval)
        window_end, last = time.time(), group_usage(triggerer.pid)
        log = self.simulator.stats_snapshot(log=None)["log"]
        requests = [r for r in log if window_start <= r["time"] < window_end]

        ready_at: dict[str, float] = {}
        for pid in pods:
            self.simulator.set_pod_state(pid, "ACTIVE", **READY)
            ready_at[pid] = time.time()
        made_ready = time.monotonic()
        end_offset, end_before = self._scheduler_log_size(), group_usage(scheduler.pid)
        end_triggerer_before = group_usage(triggerer.pid)
        fired_at: float | None = None
        while True:  # "all fired" (no wait deferred) first, then every task instance successful
            states = self._states(dag_id, run_ids)
            now = time.monotonic()
            if fired_at is None and not {"deferred-on-triggerer", "deferred"} & set(states):
                fired_at = now
            if states.count("success") == len(pods):
                break
            if now - made_ready > PHASE_TIMEOUT:
                raise TimeoutError(f"{len(pods) - states.count('success')} waits not successful")
            time.sleep(0.5)
        succeeded_at = time.monotonic()
        all_fired = (fired_at or succeeded_at) - made_ready
        end_usage, end_triggerer = group_usage(scheduler.pid), group_usage(triggerer.pid)
        time.sleep(3.0)  # the scheduler logs a worker's end moments after its task's success
        end_worker_starts = self._worker_ends(end_offset, dag_id)
        latencies = detection_latencies(self.simulator.stats_snapshot(log=None)["log"], ready_at)
        print(f"[{start} N={len(pods)}] all fired {all_fired:.1f} s after the last ready", file=sys.stderr)
        if finish:
            wait_until(
                lambda: all(self._finished(dag_id, run_id) for run_id in run_ids),
                PHASE_TIMEOUT,
                "the runs to finish",
                3.0,
            )
        return CaseResult(
            start=start,
            waits=len(pods),
            start_seconds=start_seconds,
            worker_starts=worker_starts,
            scheduler_cpu=scheduler_deferred.cpu - scheduler_before.cpu,
            triggerer_start_cpu=deferred.cpu - before.cpu,
            requests_per_interval=len(requests) / steady,
            triggerer_cpu_per_interval=(last.cpu - first.cpu) / steady,
            rss_per_wait=(last.rss - before.rss) / len(pods),
            latency_p50=statistics.median(latencies),
            latency_p95=percentile(latencies, 0.95),
            latency_max=max(latencies),
            all_fired=all_fired,
            to_all_succeeded=succeeded_at - made_ready,
            end_worker_starts=end_worker_starts,
            end_scheduler_cpu=end_usage.cpu - end_before.cpu,
            end_triggerer_cpu=end_triggerer.cpu - end_triggerer_before.cpu,
        )


def detection_latencies(log: Sequence[dict[str, Any]], ready_at: dict[str, float]) -> list[float]:
    """Per pod: from turning ready to the first successful status request for it that came after."""
    detected: dict[str, float] = {}
    for record in log:
        if record["status"] != 200:
            continue
        for pid in record["pod_ids"]:
            if pid in ready_at and pid not in detected and record["time"] >= ready_at[pid]:
                detected[pid] = record["time"] - ready_at[pid]
    missing = set(ready_at) - set(detected)
    if missing:
        raise RuntimeError(f"{len(missing)} pods were never seen ready (the request log overflowed?)")
    return list(detected.values())


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


@contextlib.contextmanager
def production_stack(interval: float, capacity: int) -> Iterator[Bench]:
    """Postgres, the simulator and Airflow with one triggerer; everything stopped on exit."""
    with (
        PostgresServer() as postgres,
        PrimeSimulatorProcess(scenario="empty") as simulator,
        tempfile.TemporaryDirectory(prefix="bench-production-") as home,
    ):
        # The simulator keeps a log of the last 10,000 requests by default; a case needs its window
        # and the detection round only, well within that for the classic way's first pokes too.
        stack = AirflowStack(
            home=Path(home),
            dags_folder=DAGS,
            env={
                **airflow_connection_env(simulator.base_url, simulator.api_key),
                "BENCH_POKE_INTERVAL": str(interval),
            },
            database_url=postgres.url,
            database_async_url=postgres.url,
            parallelism=8,
            triggerer_capacity=capacity,
            api_timeout=120.0,  # one slow answer of a loaded api-server must not end the run
            config={"api": {"maximum_page_limit": str(PAGE)}},
        )
        with stack:
            stack.init()
            stack.start(timeout=600)
            dag_ids = ("bench_waits_triggerer", "bench_waits_worker", "bench_waits_resume")
            stack.wait_for_dags(*dag_ids, timeout=600)
            yield Bench(stack, simulator, interval)


#: Where each kind of case starts and ends its waits (see the DAGs in ``bench/production_dags``).
STARTED = {"triggerer": "in the triggerer", "resume": "in the triggerer", "worker": "on a worker"}
ENDED = {"triggerer": "in the triggerer", "resume": "on a worker", "worker": "on a worker"}


def _s(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 1 else f"{seconds * 1000:.0f} ms"


def render(results: Sequence[CaseResult], options: argparse.Namespace, machine: dict[str, str]) -> str:
    """The generated section of docs/benchmarks.md."""
    out = [
        BEGIN,
        "## Production shape: one real triggerer on Postgres",
        "",
        f"Generated by `{options.command}` ({machine['date']}; {machine['cpu']}; Airflow "
        f"{machine['airflow']}; poll interval {options.interval:g} s; steady state over "
        f"{options.steady} intervals). {STARTS[HAS_START_FROM_TRIGGER]}",
        "",
        "| started | waits | to all deferred | worker processes started | scheduler+workers CPU | "
        "triggerer CPU to start | requests / interval | triggerer CPU / interval | triggerer RSS / wait "
        "| detection p50 / p95 / max | all fired after |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in results:
        out.append(
            f"| {STARTED[r.start]} | {r.waits:,} "
            f"| {_s(r.start_seconds)} | {r.worker_starts:,} | {r.scheduler_cpu:.1f} s "
            f"| {r.triggerer_start_cpu:.1f} s | {r.requests_per_interval:.1f} "
            f"| {r.triggerer_cpu_per_interval * 1000:.0f} ms | {r.rss_per_wait / 1024:.1f} KiB "
            f"| {_s(r.latency_p50)} / {_s(r.latency_p95)} / {_s(r.latency_max)} | {_s(r.all_fired)} |"
        )
    out += [
        "",
        "Ending the waits, from the last pod made ready (every wait's pods are ready by then):",
        "",
        "| started | ended | waits | worker processes started to end | per wait | ready → all succeeded "
        "| scheduler+workers CPU to end | triggerer CPU to end |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        out.append(
            f"| {STARTED[r.start]} | {ENDED[r.start]} | {r.waits:,} | {r.end_worker_starts:,} "
            f"| {r.end_worker_starts / r.waits:.2f} | {_s(r.to_all_succeeded)} | {r.end_scheduler_cpu:.1f} s "
            f"| {r.end_triggerer_cpu:.1f} s |"
        )
    out += ["", *notes(results), END]
    return "\n".join(out) + "\n"


def notes(results: Sequence[CaseResult]) -> list[str]:
    """What the table says: worker starts avoided, and the measured cost of one."""
    lines = []
    by = {(r.start, r.waits): r for r in results}
    for (start, waits), classic in sorted(by.items()):
        ours = by.get(("triggerer", waits))
        if start != "worker" or ours is None:
            continue
        avoided = classic.worker_starts - ours.worker_starts
        per_start = (classic.scheduler_cpu - ours.scheduler_cpu) / max(classic.worker_starts, 1)
        lines.append(
            f"- N = {waits:,}: starting in the triggerer avoided {avoided:,} worker processes; each "
            f"cost {per_start:.2f} CPU s (scheduler group, classic less triggerer-started) and the "
            f"classic way took {classic.start_seconds / max(ours.start_seconds, 1e-9):.1f}x as long "
            "to have every wait deferred."
        )
    classic_sizes = {r.waits for r in results if r.start == "worker"}
    for r in results:
        if r.start == "triggerer" and r.waits not in classic_sizes:
            lines.append(
                f"- N = {r.waits:,} the classic way was not run: it starts {r.waits:,} worker processes "
                "just to defer (plus as many to resume); at the per-start cost above that is "
                "minutes of CPU on this machine."
            )
    for (start, waits), resumed in sorted(by.items()):
        ours = by.get(("triggerer", waits))
        if start != "resume" or ours is None:
            continue
        avoided = resumed.end_worker_starts - ours.end_worker_starts
        lines.append(
            f"- N = {waits:,}: ending in the triggerer avoided {avoided:,} "
            f"worker processes; every task succeeded {_s(ours.to_all_succeeded)} after the last pod was "
            f"ready instead of {_s(resumed.to_all_succeeded)}, for {ours.end_scheduler_cpu:.1f} instead of "
            f"{resumed.end_scheduler_cpu:.1f} CPU s of scheduler and workers."
        )
    return lines


def parse_sizes(text: str) -> list[int]:
    sizes = [int(item) for item in text.split(",") if item.strip()]
    if any(size < WIDTH or size % WIDTH for size in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be multiples of {WIDTH}: {text!r}")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=parse_sizes, default=parse_sizes("100,1000"))
    parser.add_argument(
        "--classic", type=parse_sizes, default=parse_sizes("100"), help="sizes run the classic way"
    )
    parser.add_argument(
        "--resume",
        type=parse_sizes,
        default=parse_sizes(""),
        help="sizes started in the triggerer but ended on a worker (as before waits ended there)",
    )
    parser.add_argument("--interval", type=float, default=5.0, help="poke / poll interval, seconds")
    parser.add_argument("--steady", type=int, default=6, help="poll intervals in the steady-state window")
    parser.add_argument("--output", type=Path, default=DEFAULT_DOC)
    parser.add_argument("--no-write", action="store_true")
    options = parser.parse_args(argv)
    options.command = "python -m bench.production" + (" " + " ".join(argv or sys.argv[1:])).rstrip()
    plan = [("worker", n) for n in options.classic] + [("resume", n) for n in options.resume]
    plan += [("triggerer", n) for n in options.cases]
    machine = procstat.machine_info()
    results = []
    capacity = 2 * max(options.cases + options.classic + options.resume)
    with production_stack(options.interval, capacity=capacity) as bench:
        for index, (start, waits) in enumerate(plan):
            results.append(bench.run_case(start, waits, options.steady, finish=index < len(plan) - 1))
    section = render(results, options, machine)
    print(section)
    if not options.no_write:
        write_into(options.output, section, BEGIN, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
