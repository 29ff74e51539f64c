"""Write ``docs/reliability.md`` from what the reliability suite and the soak actually observed.

Runs ``pytest tests/reliability`` with ``PRIME_RELIABILITY_OBSERVATIONS`` set, so every fault case
records its outcome, requests and loop lag, then the soak (``bench/soak.py``), and renders the
tables. Nothing in the page is typed by hand except the prose around the figures::

    python -m bench.reliability_report                    # 60 s soak
    python -m bench.reliability_report --soak-seconds 600 --out docs/reliability.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.soak import SoakConfig, SoakResult, soak_against_simulator_process
from tests.reliability.cases import CASES, EXTRA, POLL_INTERVAL
from tests.reliability.conftest import LAG_BOUND, OBSERVATIONS_ENV

ROOT = Path(__file__).resolve().parent.parent
TEST_DIR = "tests/reliability"
EXCERPT = 240


def run_suite(observations: Path) -> tuple[int, float]:
    """The reliability suite in a child pytest; returns its exit status and wall seconds."""
    env = {**os.environ, OBSERVATIONS_ENV: str(observations)}
    started = time.monotonic()
    command = [sys.executable, "-m", "pytest", TEST_DIR, "-q", "-p", "no:cacheprovider"]
    status = subprocess.run(command, cwd=ROOT, env=env, check=False).returncode
    return status, time.monotonic() - started


def excerpt(text: str, limit: int = EXCERPT) -> str:
    flat = " ".join(str(text).split())
    flat = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", flat)
    flat = re.sub(r"deadline \S+;", "deadline …;", flat)
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return flat.replace("|", "\\|")


def sync_cell(record: dict[str, Any]) -> str:
    pokes = len(record["per_poke"])
    observed = record["observed"]
    if observed == "ready":
        return f"ready, poke {pokes}"
    if observed == "waiting":
        return f"waits on ({pokes} pokes); logs: {excerpt(record['message'])}"
    return f"{observed.removeprefix('raised ')}: {excerpt(record['message'])}"


def async_cell(record: dict[str, Any]) -> str:
    observed = record["observed"]
    if observed == "success":
        return f"`success` after {record['elapsed']:.2f} s"
    if observed == "timeout":
        return f"`timeout` at its deadline: {excerpt(record['message'])}"
    return f"`failed`: {excerpt(record['message'])}"


def requests_cell(sync: dict[str, Any], async_: dict[str, Any]) -> str:
    per_poke = "+".join(str(n) for n in sync["per_poke"])
    return f"{sync['requests']} ({per_poke}) / {async_['requests']} (≤ {async_['bound']})"


def fault_table(records: list[dict[str, Any]]) -> list[str]:
    by_key = {(r["case"], r["path"]): r for r in records if "case" in r}
    lines = [
        "| Fault | Expected | Sync path: `PodStatusSensor.poke` | Async path: `PodStatusTrigger.run` "
        "| Requests sync (per poke) / async (bound) | Worst loop lag | Tests |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in CASES:
        sync, async_ = by_key.get((case.id, "sync")), by_key.get((case.id, "async"))
        if sync is None or async_ is None:
            lines.append(f"| {case.fault} | {case.outcome.value} | not run | not run | | | |")
            continue
        tests = f"`{sync['test']}`<br>`{async_['test']}`"
        lines.append(
            f"| {case.fault} | {case.outcome.value} | {sync_cell(sync)} | {async_cell(async_)} "
            f"| {requests_cell(sync, async_)} | {async_['max_lag'] * 1000:.0f} ms | {tests} |"
        )
    return lines


def first(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("kind") == kind]


def machine(load_before: tuple[float, ...], load_after: tuple[float, ...]) -> str:
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("apache-airflow", "httpx", "requests", "pydantic")
    )
    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; {versions}. "
        f"Load average (1 min) {load_before[0]:.1f} before the run and {load_after[0]:.1f} after: "
        "the machine was shared with other work, so times and lags include waiting for a CPU."
    )


def render(
    data: dict[str, Any],
    suite_status: int,
    suite_seconds: float,
    soak: SoakResult,
    machine_line: str,
) -> str:
    records: list[dict[str, Any]] = data["records"]
    faults = [r for r in records if "case" in r]
    worst_lag = max((r["max_lag"] for r in faults if r["path"] == "async"), default=float("nan"))
    restart = first(records, "restart")
    cancels = first(records, "cancel")
    leak = first(records, "leak-scan")
    oversized = first(records, "oversized")
    short_soak = first(records, "soak")
    soak_summary = soak.summary()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Reliability and security",
        "",
        "What the provider does on the API's bad days, as observed by the fault-injection suite in",
        f"`{TEST_DIR}/` against the simulator over real HTTP on 127.0.0.1. Generated by",
        "`python -m bench.reliability_report` from the suite's own observations; do not edit by hand.",
        "",
        f"Run: {when}. Suite: {len(records)} observations, exit status {suite_status} "
        f"({'all passed' if suite_status == 0 else 'FAILURES'}), {suite_seconds:.0f} s wall.",
        f"Machine: {machine_line}",
        "",
        "## How the faults are run",
        "",
        "Each fault of `tests/reliability/cases.py` runs twice, against a fresh simulator with the fault",
        "armed before the wait starts:",
        "",
        "* **sync path**: `PodStatusSensor.poke()` → `PrimeHook.get_pods_status()` → requests, as a worker",
        "  in `poke` or `reschedule` mode does; up to 3 pokes (2 for faults expected to wait on);",
        "* **async path**: `PodStatusTrigger.run()` → the shared poller → the async client (httpx), as",
        f"  the triggerer does, polling every {POLL_INTERVAL} s, with a heartbeat coroutine measuring the",
        f"  worst event-loop stall (the suite fails above {LAG_BOUND * 1000:.0f} ms: a *not blocked* check,",
        "  not a speed target).",
        "",
        f"Connection extra used: `{json.dumps(EXTRA)}`, so one poll makes at most 3 requests (the first",
        "attempt and 2 retries). On the async path the suite also checks that no task, poller or",
        "client is left behind. **Requests** are counted by the simulator's stats (for the connect",
        'timeout, where nothing reaches a server, from the errors\' "after 3 attempts"); the async',
        "bound is 3 x (polls that fit before the deadline + 1).",
        "",
        "Outcomes: **recovers** = the wait ends in success once the fault passes; **waits** = the wait",
        "goes on, the cause logged, until the sensor's timeout (the trigger's `timeout` event names the",
        "cause); **fails** = a typed error at once, whose message names the cause and what to do.",
        "",
        "## Faults",
        "",
        *fault_table(records),
        "",
        f"Worst event-loop lag across all async cases: {worst_lag * 1000:.0f} ms. The first trigger of a",
        "process pays one-time costs (importing httpx's async backend and Airflow's async connection",
        "lookup, loading CA certificates); the suite runs one warm-up trigger before it measures "
        f"({_ms(data.get('warm_up_lag'))} here, most imports being done by then), and the soak below reports",
        "the lag of its warm-up phase, in a fresh process, apart from the steady state.",
        "",
        "## Resilience",
        "",
        "| Situation | Observed | Test |",
        "|---|---|---|",
    ]
    for r in restart:
        out.append(
            f"| Triggerer restart half-way through a {r['timeout']:.0f} s wait: task cancelled at "
            f"{r['restarted_after']:.2f} s, trigger rebuilt from its serialized kwargs (Airflow's "
            f"serializer, as in the database) | same absolute deadline; `timeout` fired "
            f"{r['fired_after_deadline'] * 1000:.0f} ms after the original deadline (a deadline "
            f"recomputed at the restart would have fired {r['timeout'] / 2:.0f} s later); "
            f"{r['requests']} requests in all "
            f"| `{r['test']}` |"
        )
    for r in cancels:
        out.append(
            f"| Trigger cancelled while its request is in flight (simulator: `{r['fault']}` answer) "
            f"| tasks besides the test's: {r['tasks_before']} before, {r['tasks_after']} after; "
            f"connections to the API: {r['connections_before']} before, {r['connections_after']} after; "
            f"clients closed {r['clients_closed']}; {r['requests']} request (no retry after the cancel) "
            f"| `{r['test']}` |"
        )
    resilience = f"{TEST_DIR}/test_resilience.py"
    out += [
        "| Triggerer back after the deadline passed | `timeout` at once, no request "
        f"| `{resilience}::test_triggerer_back_after_the_deadline_times_out_without_a_request` |",
        "| One of two waits sharing a request is cancelled mid-request | the request goes on; the "
        "other wait gets `success` from it (1 request) "
        f"| `{resilience}::test_cancelling_one_of_two_waits_keeps_the_shared_request_for_the_other` |",
    ]
    out += ["", "### Memory over a long wait (soak)", ""]
    for r in short_soak:
        out.append(
            f"In the suite (`{r['test']}`): {r['polls']} poll cycles, {r['waits_started']} waits started "
            f"(churn included) through the fault mix; Python heap growth over the steady part "
            f"{r['traced_growth_kib']} KiB (bound {r['bound_kib']} KiB), worst loop lag "
            f"{r['max_lag_ms']} ms, nothing left running ({r['leftover_tasks']} tasks, "
            f"{r['leftover_pollers']} pollers)."
        )
    out += [
        "",
        f"`python -m bench.soak --seconds {soak.config.seconds:.0f}` (simulator in its own process; "
        f"{soak.config.connections} connections with {soak.config.waits_per_connection} long waits each, "
        f"{soak.config.churners_per_connection} churning waits per connection and a churn-only "
        f"connection, poll interval {soak.config.interval} s, the fault mix of `bench/soak.py`):",
        "",
        "| Measure | Value |",
        "|---|---|",
        f"| Steady part measured | {soak_summary['seconds_measured']} s, {soak_summary['samples']} samples "
        "(after a full garbage collection each) |",
        f"| Status requests | {soak_summary['requests']} |",
        f"| Waits started / events | {soak_summary['waits_started']} / "
        f"{', '.join(f'{n} {kind}' for kind, n in soak_summary['events'].items())} |",
        f"| Python heap (tracemalloc) | {soak_summary['traced_start_kib']} KiB → "
        f"{soak_summary['traced_end_kib']} KiB; growth (median of the last third minus the first) "
        f"{soak_summary['traced_growth_kib']} KiB |",
        f"| Resident memory | {soak_summary['rss_start_mib']} MiB → {soak_summary['rss_end_mib']} MiB "
        f"(growth {soak_summary['rss_growth_mib']} MiB) |",
        f"| CPU seconds (this process) | {soak_summary['cpu_seconds']} |",
        f"| Worst loop lag: warm-up / steady | {soak_summary['max_lag_warm_up_ms']} ms / "
        f"{soak_summary['max_lag_ms']} ms |",
        f"| Left running after cancelling every wait | {soak_summary['leftover_tasks']} tasks, "
        f"{soak_summary['leftover_pollers']} pollers |",
        "",
        "## Security",
        "",
        "| Property | Observed | Test |",
        "|---|---|---|",
    ]
    for r in leak:
        out.append(
            "| The API key never appears in logs, output, exceptions, reprs, trigger kwargs and events, "
            "XCom, rendered template fields | a recognisable key, used on every path (success, each "
            f"failure kind, {r['echo_faults']} faults whose bodies echo the key back, 401, refused "
            f"connections): {r['texts']} captured texts ({r['characters']:,} characters, "
            f"{r['log_records']} log records at DEBUG, {r['structlog_events']} structlog events, stdout "
            "and stderr at the file-descriptor level, exception chains including `__context__`) hold no "
            f"trace of it; it travelled only in the `Authorization` header ({r['requests_with_key']} "
            f"requests) | `{r['test']}` |"
        )
    out += [
        "| Plain http refused unless loopback | `http://` to a public name, a private or unspecified "
        "address, `localhost.example.com`, `127.0.0.1.nip.io` or a public IPv6: `PrimeConfigError` "
        "naming https; on both paths before any request "
        f"| `{TEST_DIR}/test_security.py::test_plain_http_to_a_non_loopback_host_is_refused`, "
        "`::test_plain_http_refusal_holds_on_both_paths_before_any_traffic` |",
        "| TLS verification on by default | settings `verify=True` from a connection and from "
        "`PRIME_API_KEY`; the async client's SSL context `CERT_REQUIRED` with hostname checks; the sync "
        "client passes `verify` with every request. A self-signed server is refused, not retried "
        f"(`tests/hooks/test_http.py`) | `{TEST_DIR}/test_security.py::TestTlsVerification` |",
    ]
    for r in oversized:
        out.append(
            f"| Response size bounded (10 MiB) | a {r['body_mib']} MiB answer: "
            f"{excerpt(r['message'])}; traced peak {r['sync_peak_kib']} KiB (sync), "
            f"{r['async_peak_kib']} KiB (async): the body is refused, not held | `{r['test']}` |"
        )
    out += [
        "",
        "## Property-based tests",
        "",
        f"`{TEST_DIR}/test_properties.py` (hypothesis):",
        "",
        "* any status, any body (arbitrary JSON, valid envelopes with mutated pods, random bytes, JSON",
        "  cut off mid-document) and any `Retry-After` header through the hook's shared response path",
        "  give pod statuses, a bounded retry delay, or one of the provider's `PrimeError`s; never",
        "  another exception;",
        "* valid payloads always parse, whatever unknown enum values and extra fields they carry;",
        "* `readiness.assess` never raises and is never READY unless every requested pod (each id once)",
        "  was reported ACTIVE, with installation FINISHED and no failure text (when waited for), and a",
        "  non-blank SSH connection on every node (when required). The generator concentrates on",
        "  near-ready pods with one or two defects, plus fixed boundary examples (when written, it was",
        "  checked by hand to catch each of five deliberately injected decision bugs).",
        "",
        "## Findings and limits",
        "",
        "* `Retry-After` is honoured between the retries of one poll, not beyond it: when a poll's last",
        "  retry is answered 429 with `Retry-After`, the next poll still starts at its normal time (on the",
        "  async path at once if that poll overran the interval), and the next poke after",
        "  `poke_interval`. Requests stay bounded by 3 per poll; a hint longer than the interval is not",
        "  carried over to the next poll.",
        "* A 200 whose body is not the documented JSON fails the wait at once (with Airflow's task",
        "  retries still applying): such an answer means a wrong base URL or a broken proxy more often",
        "  than a passing glitch.",
        "* Reproduce: `python -m pytest tests/reliability` (about a minute), "
        "`python -m bench.soak --seconds 600`.",
        "",
    ]
    return "\n".join(out)


def _ms(value: Any) -> str:
    return "n/a" if value is None else f"{float(value) * 1000:.0f} ms"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--soak-seconds", type=float, default=60.0)
    parser.add_argument("--out", default=str(ROOT / "docs" / "reliability.md"))
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        observations = Path(scratch) / "observations.json"
        status, seconds = run_suite(observations)
        if not observations.exists():
            print("the suite wrote no observations", file=sys.stderr)
            return 1
        data = json.loads(observations.read_text())
    soak = soak_against_simulator_process(SoakConfig(seconds=args.soak_seconds))
    page = render(data, status, seconds, soak, machine(load_before, os.getloadavg()))
    Path(args.out).write_text(page, encoding="utf-8")
    print(f"wrote {args.out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
