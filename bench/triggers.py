"""Benchmark: N deferred pod-status triggers in one event loop, the provider's against the peers' pattern.

    python -m bench.triggers                  # N = 1, 100, 1000, 5000; ~6 min; writes docs/benchmarks.md
    python -m bench.triggers --quick          # smoke run: N = 1 and 10, 0.5 s interval; writes nothing
    python -m bench.triggers --cases 1000:250 --kinds provider,baseline-shared-tls --interval 2

In one process and one run, for every case ``N:PODS`` (N triggers over PODS distinct pods, trigger
``i`` waiting for pod ``i mod PODS``) and every trigger kind, it runs N triggers the way Airflow's
triggerer does (one task per trigger consuming ``run()`` in one asyncio loop) against the Prime
API simulator started as a separate process (``python -m airflow_provider_prime.testing``), and
measures requests per interval, CPU seconds per interval, peak memory per trigger, worst event-loop
lag and detection latency (see :mod:`bench.trigger_run` for how). Kinds:

* ``provider`` — :class:`~airflow_provider_prime.triggers.pod_status.PodStatusTrigger` (shared poller);
* ``baseline`` — the peer providers' pattern, a new ``httpx.AsyncClient`` per trigger per poll
  (:mod:`bench.baseline_trigger`); capped by ``--baseline-max-triggers`` (100) because building a
  TLS context per poll saturates a core near N = 100 already;
* ``baseline-shared-tls`` — the same with one process-wide TLS context, i.e. the cost of one
  request per trigger per interval without the cost of building a TLS context for each.

The results table goes to stdout and, unless ``--no-write`` (or ``--quick``), into
``docs/benchmarks.md`` between its generated-section markers. The triggers' own log lines go to a
file (``--log-file``; a temporary one by default), so they cost what they cost without flooding
the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO
from unittest import mock

from airflow_provider_prime.testing import PrimeSimulatorProcess, airflow_connection_env, fixed_pod
from bench import procstat
from bench.trigger_report import BenchmarkRun, render, write_into
from bench.trigger_run import KINDS, CaseResult, GcWatch, LoopMonitor, Timing, run_case

DEFAULT_CASES = "1:1,100:100,1000:250,5000:500"
QUICK_CASES = "1:1,10:10"
DEFAULT_DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
#: The connection the benchmark defines (in the environment, for its own process only).
CONN_ID = "prime_bench"


@dataclass(frozen=True)
class Options:
    cases: tuple[tuple[int, int], ...]
    kinds: tuple[str, ...]
    timing: Timing
    baseline_max_triggers: int
    output: Path | None
    log_file: Path | None


def parse_cases(text: str) -> tuple[tuple[int, int], ...]:
    """``"1:1,5000:500"`` → ``((1, 1), (5000, 500))``; ``"100"`` means 100 triggers over 100 pods."""
    cases = []
    for item in text.replace(" ", "").split(","):
        if not item:
            continue
        triggers_text, _, pods_text = item.partition(":")
        triggers = int(triggers_text)
        pods = int(pods_text) if pods_text else triggers
        if triggers < 1 or not 1 <= pods <= triggers:
            raise argparse.ArgumentTypeError(f"{item!r}: need 1 <= PODS <= N")
        cases.append((triggers, pods))
    if not cases:
        raise argparse.ArgumentTypeError("no cases given")
    return tuple(cases)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.triggers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cases", type=parse_cases, help=f"N:PODS,... (default {DEFAULT_CASES})")
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help="trigger kinds to run (default: %(default)s)"
    )
    parser.add_argument("--interval", type=float, help="poll interval, seconds (default 5)")
    parser.add_argument(
        "--ramp", type=float, help="intervals over which trigger starts are spread (default 1)"
    )
    parser.add_argument(
        "--settle", type=float, help="intervals between the ramp and the window (default 0.5)"
    )
    parser.add_argument("--steady", type=float, help="intervals in the steady window (default 3)")
    parser.add_argument("--flip-groups", type=int, help="groups the pods are made ready in (default 5)")
    parser.add_argument(
        "--detect-grace", type=float, help="seconds beyond one interval to wait for events (default 5)"
    )
    parser.add_argument(
        "--baseline-max-triggers",
        type=int,
        default=100,
        help="largest N the 'baseline' kind runs at; 0: no limit (default: %(default)s)",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"smoke run: cases {QUICK_CASES}, 0.5 s interval"
    )
    parser.add_argument("--output", type=Path, help=f"Markdown file to update (default {DEFAULT_DOC})")
    parser.add_argument("--no-write", action="store_true", help="print the results only")
    parser.add_argument(
        "--log-file", type=Path, help="where the triggers' log lines go (default: a temp file)"
    )
    return parser


def options_from(args: argparse.Namespace) -> Options:
    quick = bool(args.quick)
    base = Timing(interval=0.5, ramp=1.0, settle=0.5, steady=2.0, detect_grace=1.0) if quick else Timing()
    changes = {
        name: value
        for name, value in (
            ("interval", args.interval),
            ("ramp", args.ramp),
            ("settle", args.settle),
            ("steady", args.steady),
            ("flip_groups", args.flip_groups),
            ("detect_grace", args.detect_grace),
        )
        if value is not None
    }
    timing = replace(base, **changes)
    if timing.interval <= 0 or timing.steady <= 0 or timing.flip_groups < 1:
        raise SystemExit("--interval and --steady must be positive, --flip-groups at least 1")
    kinds = tuple(k for k in args.kinds.replace(" ", "").split(",") if k)
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise SystemExit(f"unknown kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    output = None if args.no_write or (quick and args.output is None) else (args.output or DEFAULT_DOC)
    return Options(
        cases=args.cases or parse_cases(QUICK_CASES if quick else DEFAULT_CASES),
        kinds=kinds,
        timing=timing,
        baseline_max_triggers=args.baseline_max_triggers,
        output=output,
        log_file=args.log_file,
    )


@contextlib.contextmanager
def _logs_to(path: Path) -> Iterator[None]:
    """Send what would be logged to the terminal (structlog prints to stdout) to ``path`` meanwhile."""
    consoles = {id(stream) for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)}
    with open(path, "a", encoding="utf-8") as log:
        handlers = [
            (handler, handler.stream)
            for handler in logging.getLogger().handlers
            if isinstance(handler, logging.StreamHandler) and id(handler.stream) in consoles
        ]
        for handler, _ in handlers:
            handler.setStream(log)
        try:
            with contextlib.redirect_stdout(log):
                yield
        finally:
            for handler, stream in handlers:
                handler.setStream(stream)


def _planned(options: Options) -> list[tuple[str, int, int]]:
    plan = []
    for triggers, pods in options.cases:
        for kind in options.kinds:
            if kind == "baseline" and 0 < options.baseline_max_triggers < triggers:
                continue
            plan.append((kind, triggers, pods))
    return plan


async def _run_all(
    options: Options, sim: PrimeSimulatorProcess, console: TextIO
) -> tuple[list[CaseResult], float]:
    monitor = LoopMonitor()
    heartbeat = asyncio.create_task(monitor.run(), name="bench-heartbeat")
    try:
        with GcWatch() as gc_watch:
            await _warm_up(options, sim)
            idle = await _idle_cpu(options.timing.interval, monitor)
            results = []
            for kind, triggers, pods in _planned(options):
                print(f"  {kind:<20} N = {triggers:>5} over {pods:>4} pods ...", end="", file=console)
                console.flush()
                result = await run_case(
                    kind, triggers, pods, options.timing, sim, sim.pid, monitor, CONN_ID, gc_watch
                )
                print(_progress(result), file=console, flush=True)
                results.append(result)
            return results, idle
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat


async def _idle_cpu(interval: float, monitor: LoopMonitor) -> float:
    """CPU seconds per interval of this process with no trigger at all: the heartbeat and harness."""
    started, sampling = time.process_time(), monitor.probe.cost
    await asyncio.sleep(interval)
    return time.process_time() - started - (monitor.probe.cost - sampling)


def _progress(result: CaseResult) -> str:
    return (
        f" {result.requests_per_interval:8.1f} req/interval, CPU {result.cpu_per_interval:.3f} s, "
        f"lag {result.loop_lag_max * 1000:.0f} ms, {result.detected}/{result.triggers} detected"
    )


async def _warm_up(options: Options, sim: PrimeSimulatorProcess) -> None:
    """One trigger of each kind to completion first: imports and first-use costs stay out of the figures."""
    await asyncio.to_thread(sim.add_pod, fixed_pod("bench-warm-up"))
    for kind in options.kinds:
        trigger = KINDS[kind](
            pod_ids=["bench-warm-up"], deadline=time.time() + 60, prime_conn_id=CONN_ID, poll_interval=0.2
        )
        async for _event in trigger.run():
            pass


def run_benchmark(options: Options, command: str, console: TextIO | None = None) -> BenchmarkRun:
    """Start the simulator, run every planned case, and return the results (writes nothing)."""
    console = console or sys.stdout
    notes = []
    skipped = sorted(
        {n for n, _ in options.cases if "baseline" in options.kinds and 0 < options.baseline_max_triggers < n}
    )
    if skipped:
        notes.append(
            f"The `baseline` kind was not run at N = {', '.join(f'{n:,}' for n in skipped)} "
            f"(`--baseline-max-triggers {options.baseline_max_triggers}`): a TLS context per poll makes "
            "it CPU-bound near N = 100 already; the targets table projects it from its largest N."
        )
    memory_method = LoopMonitor().probe.method
    if memory_method == "rss":
        notes.append(
            "Memory is resident-set growth here (the heap's live bytes could not be read): exact "
            "for the first case only, understated for later ones, which reuse memory freed before them."
        )
    load_before = procstat.load_average()
    started = time.monotonic()
    log_dir = None if options.log_file else tempfile.TemporaryDirectory(prefix="bench-triggers-")
    log_path = options.log_file or Path(log_dir.name if log_dir else ".") / "triggers.log"
    try:
        print(f"simulator: starting; trigger logs: {log_path}", file=console, flush=True)
        with PrimeSimulatorProcess() as sim:
            env = airflow_connection_env(sim.base_url, sim.api_key, CONN_ID)
            with mock.patch.dict(os.environ, env), _logs_to(log_path):
                results, idle_cpu = asyncio.run(_run_all(options, sim, console))
    finally:
        if log_dir is not None:
            log_dir.cleanup()
    return BenchmarkRun(
        command=command,
        machine=procstat.machine_info(),
        load_before=load_before,
        load_after=procstat.load_average(),
        interval=options.timing.interval,
        steady_intervals=options.timing.steady,
        duration=time.monotonic() - started,
        results=results,
        notes=notes,
        memory_method=memory_method,
        idle_cpu=idle_cpu,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options = options_from(args)
    given = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["python", "-m", "bench.triggers", *given])
    print(f"{command}: load average {procstat.load_average()}", flush=True)
    run = run_benchmark(options, command)
    section = render(run)
    print(section)
    if options.output is not None:
        write_into(options.output, section)
        print(f"written to {options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
