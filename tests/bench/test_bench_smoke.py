"""The trigger benchmark's harness (bench/), run for a few seconds: it measures what it claims to.

Structure and sanity only: every figure is produced, every trigger fires exactly its success
event, nothing is left running, and the shared poller asks no more than the per-trigger pattern.
How fast anything is stays in docs/benchmarks.md, never in an assertion here.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import pytest

from airflow_provider_prime.triggers import polling
from bench.trigger_report import BEGIN, END, net_cpu, ratio_table, render, write_into
from bench.trigger_run import KINDS, CaseResult, Timing
from bench.triggers import CONN_ID, Options, parse_cases, run_benchmark

QUICK = Timing(interval=0.3, ramp=1.0, settle=0.5, steady=2.0, flip_groups=2, detect_grace=1.0)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    options = Options(
        cases=((1, 1), (10, 10)),
        kinds=tuple(KINDS),
        timing=QUICK,
        baseline_max_triggers=1,  # the TLS-context-per-poll baseline is slow on purpose: N = 1 only
        output=None,
        log_file=tmp_path_factory.mktemp("bench") / "triggers.log",
    )
    console = io.StringIO()
    result = run_benchmark(options, "python -m bench.triggers (smoke test)", console=console)
    result.notes.append(console.getvalue())  # shown by pytest if an assertion below fails
    return result


def by(results: list[CaseResult], kind: str, triggers: int) -> CaseResult:
    (found,) = [r for r in results if r.kind == kind and r.triggers == triggers]
    return found


def test_every_planned_case_ran_and_every_trigger_fired_once(run):
    planned = {
        ("provider", 1),
        ("baseline", 1),
        ("baseline-shared-tls", 1),
        ("provider", 10),
        ("baseline-shared-tls", 10),
    }
    assert {(r.kind, r.triggers) for r in run.results} == planned
    for result in run.results:
        assert result.failures == []
        assert result.leaks == []
        assert result.detected == result.triggers
        assert len(result.latencies) == result.triggers
        assert all(latency >= 0 for latency in result.latencies)


def test_every_metric_is_measured(run):
    for result in run.results:
        assert result.requests_per_interval > 0
        assert result.cpu_per_interval > 0
        assert result.memory_per_trigger is not None
        assert result.memory_per_trigger >= 0
        assert result.loop_lag_max >= result.loop_lag_steady >= 0
        assert result.loop_busy_max >= 0
        assert math.isfinite(result.steady_seconds)
        assert result.steady_seconds > 0
        median, worst = result.latency(0.5), result.latency(1.0)
        assert median is not None
        assert worst is not None
        assert 0 <= median <= worst


def test_the_provider_asks_no_more_than_the_per_trigger_pattern(run):
    provider, baseline = by(run.results, "provider", 10), by(run.results, "baseline-shared-tls", 10)
    assert provider.requests_per_interval <= baseline.requests_per_interval
    assert provider.target_requests == 1


def test_the_harness_leaves_nothing_behind(run):
    assert f"AIRFLOW_CONN_{CONN_ID.upper()}" not in os.environ
    assert polling.active_pollers() == []


def test_the_report_renders_and_replaces_only_its_own_section(run, tmp_path: Path):
    section = render(run)
    assert "| 10 (10) | provider |" in section
    assert "| 10 (10) | baseline-shared-tls |" in section
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nprose stays\n\n{BEGIN}\nold\n{END}\n\nafter stays\n", encoding="utf-8")
    write_into(doc, section)
    write_into(doc, section)
    text = doc.read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1
    assert text.count(END) == 1
    assert "prose stays" in text
    assert "after stays" in text
    assert "\nold\n" not in text


def test_the_cpu_ratio_net_of_the_harness_takes_the_idle_cost_off_both_sides(run):
    assert run.idle_cpu is not None
    assert run.idle_cpu > 0
    assert net_cpu(0.168, 0.131) == pytest.approx(0.037)
    assert net_cpu(0.1, 0.131) == 0.0  # noise below the idle cost is none, never negative
    assert net_cpu(None, 0.131) is None
    provider, baseline = by(run.results, "provider", 10), by(run.results, "baseline-shared-tls", 10)
    row = next(
        line for line in ratio_table(run.results, run.idle_cpu) if line.startswith("| 10 (10) | baseline-")
    )
    net = net_cpu(baseline.cpu_per_interval, run.idle_cpu)
    mine = net_cpu(provider.cpu_per_interval, run.idle_cpu)
    assert net is not None
    assert mine is not None
    expected = f"{net / mine:,.1f}x" if mine > 0 else "provider within the idle cost"
    assert row.split("|")[5].strip() == expected
    assert "net of the harness" in render(run)


def test_cases_parse_as_documented():
    assert parse_cases("1:1, 5000:500,100") == ((1, 1), (5000, 500), (100, 100))
    with pytest.raises(Exception, match="PODS <= N"):
        parse_cases("10:20")
