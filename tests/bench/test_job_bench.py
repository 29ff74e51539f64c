"""The job benchmark's harness (bench/jobs.py) at N x M = 2 x 2, a few seconds: it measures what it claims.

Structure and sanity only: both sides run against their own simulator, every node's lines reach
the log exactly once, every figure is produced, and nothing is left running on the nodes. How fast
anything is stays in docs/benchmarks.md, never in an assertion here.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest

from airflow_provider_prime.triggers import polling
from bench.job_run import LineClock, Timing, asyncssh_logging, judge_lines, poll_periods
from bench.jobs import BEGIN, END, JobBenchRun, Options, parse_cases, render, run_benchmark
from bench.trigger_report import write_into

pytest.importorskip("asyncssh", reason="the simulator's SSH nodes need airflow-provider-prime[ssh]")
# The peer baseline is the SSH provider's remote-job trigger (SSH provider 4.3+, with SSHHookAsync):
# older installs (the lowest Airflow's, pinned by date) have no peer to measure against.
pytest.importorskip(
    "airflow.providers.ssh.triggers.ssh_remote_job", reason="the peer baseline needs the SSH provider >= 4.3"
)
try:
    from airflow.providers.ssh.hooks.ssh import SSHHookAsync  # noqa: F401
except ImportError:
    pytest.skip("the peer baseline needs the SSH provider's SSHHookAsync", allow_module_level=True)

SMOKE = Timing(interval=0.5, warmup=1.0, window=3.0, grace=2.0, line_every=0.2)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> JobBenchRun:
    options = Options(
        cases=((2, 2),),
        sides=("provider", "peer"),  # peer-quiet is the peer with a logger level changed
        timing=SMOKE,
        profile_case=None,
        output=None,
        log_file=tmp_path_factory.mktemp("bench-jobs") / "triggers.log",
    )
    console = io.StringIO()
    result = run_benchmark(options, "python -m bench.jobs (smoke test)", console=console)
    result.notes.append(console.getvalue())  # shown by pytest if an assertion below fails
    return result


def test_both_sides_tail_every_node_with_one_connection_each(run: JobBenchRun) -> None:
    assert [(r.side, r.jobs, r.nodes_per_job) for r in run.results] == [("provider", 2, 2), ("peer", 2, 2)]
    provider, peer = run.results
    assert provider.triggers == 2  # one per job
    assert peer.triggers == 4  # one per node
    for result in run.results:
        assert result.failures == []
        assert result.connections == (4, 4)  # each side holds one connection per node, reused
        assert result.all_tailing_after is not None
        assert result.processes_left == 0


def test_every_line_of_the_window_arrives_once_and_is_timed(run: JobBenchRun) -> None:
    for result in run.results:
        assert result.missing == 0
        assert result.repeated == 0
        # 4 nodes, one line every 0.2 s over a 1.5 s window: about 30 lines
        assert len(result.latencies) >= 4 * 5
        assert all(latency >= 0 for latency in result.latencies)
        assert result.periods
        assert all(period > 0 for period in result.periods)


def test_every_figure_is_measured(run: JobBenchRun) -> None:
    for result in run.results:
        assert result.window_seconds > 0
        assert result.cpu_per_interval > 0
        assert result.server_cpu_per_interval >= 0
        assert 0 <= result.machine_busy <= 1
        assert result.loop_lag_window >= 0
        assert result.gc_pause_max >= 0
        median, worst = result.latency(0.5), result.latency(1.0)
        assert median is not None
        assert worst is not None
        assert 0 <= median <= worst


def test_the_harness_leaves_nothing_behind(run: JobBenchRun) -> None:
    assert "AIRFLOW_CONN_PRIME_DEFAULT" not in os.environ
    assert "AIRFLOW_CONN_SSH_DEFAULT" not in os.environ
    assert not [name for name in os.environ if name.startswith("AIRFLOW_CONN_BENCH_NODE_")]
    assert polling.active_pollers() == []


def test_the_report_renders_and_replaces_only_its_own_section(run: JobBenchRun, tmp_path: Path) -> None:
    section = render(run)
    assert "| 2 x 2 (4) | provider | 2 | 4 |" in section
    assert "| 2 x 2 (4) | peer | 4 | 4 |" in section
    assert "Fewer SSH connections than the peer" in section
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nprose stays\n\n{BEGIN}\nold\n{END}\n", encoding="utf-8")
    write_into(doc, section, BEGIN, END)
    write_into(doc, section, BEGIN, END)
    text = doc.read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1
    assert text.count(END) == 1
    assert "prose stays" in text
    assert "\nold\n" not in text


def test_lines_are_judged_per_node_by_their_numbers() -> None:
    # node a: lines 1..5 printed at 10.0, 10.5, ...; line 3 never arrives, line 4 twice
    lines = [
        ("a", 1, 10.0, 10.2),
        ("a", 2, 10.5, 11.2),
        ("a", 4, 11.5, 12.2),
        ("a", 4, 11.5, 12.3),
        ("a", 5, 12.0, 12.2),
        ("b", 1, 11.9, 12.9),
    ]
    latencies, missing, repeated = judge_lines(lines, start=10.0, end=12.0, every=0.5)
    assert missing == 1
    assert repeated == 1
    assert sorted(round(x, 2) for x in latencies) == [0.2, 0.2, 0.7, 0.7, 1.0]
    # the tail: c printed lines 1..5 in the window but only its first arrived (one line of slack)
    assert judge_lines([("c", 1, 10.0, 11.0)], 10.0, 12.0, 0.5)[1] == 3


def test_poll_periods_group_one_polls_lines() -> None:
    lines = [("a", 1, 0.0, 1.0), ("a", 2, 0.1, 1.001), ("a", 3, 1.0, 3.0), ("a", 4, 2.0, 5.5)]
    assert [round(p, 3) for p in poll_periods(lines, 0.0, 10.0)] == [2.0, 2.5]


def test_the_line_clock_reads_both_sides_records() -> None:
    clock = LineClock()
    clock(None, "info", {"event": "%s", "positional_args": ("[node 1] 10.25 bench j0n1 7 end",)})
    clock(None, "info", {"event": "%s", "positional_args": ("10.5 bench j1n0 3 end\n11.0 bench j1n0 4 end",)})
    clock(None, "info", {"event": "10.5 bench j1n0 5 e"})  # a cut line is not a line
    assert [(t, s, p) for t, s, p, _ in clock.lines] == [
        ("j0n1", 7, 10.25),
        ("j1n0", 3, 10.5),
        ("j1n0", 4, 11.0),
    ]
    assert clock.tags() == {"j0n1", "j1n0"}


def test_each_side_gets_asyncssh_logging_as_in_its_own_triggerer() -> None:
    logger = logging.getLogger("asyncssh")
    saved = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with asyncssh_logging("peer"):
            assert logger.level == logging.NOTSET  # Airflow's default: the INFO lines pass
        with asyncssh_logging("peer-quiet"):
            assert logger.level == logging.WARNING
        with asyncssh_logging("provider"):
            assert logger.level == logging.NOTSET  # the provider's own code decides
        assert logger.level == logging.ERROR
    finally:
        logger.setLevel(saved)


def test_cases_parse_as_documented() -> None:
    assert parse_cases("5x2, 50x2,7") == ((5, 2), (50, 2), (7, 1))
    with pytest.raises(Exception, match="NxM"):
        parse_cases("5y2")
