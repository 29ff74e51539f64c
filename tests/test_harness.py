"""The pieces of the Airflow harness (scripts/) that need no Airflow processes.

The end-to-end tests and `make demo` trust these to stop every process, to read a run's states
right and to pick the API they talk to; a mistake here would show up as leaked processes or
flaky end-to-end runs, far from its cause.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from scripts.airflow_api import AirflowApiError, RunWatcher, log_line
from scripts.airflow_stack import SENSOR_POLICY, AirflowStack, Component, wait_until
from scripts.demo import real_api_settings


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stopping_a_component_ends_its_whole_process_group(tmp_path: Path) -> None:
    # A leader that ignores SIGTERM, with a child that does too: only SIGKILL to the group ends both.
    script = textwrap.dedent(
        """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        print(child.pid, flush=True)
        time.sleep(60)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert process.stdout is not None
    child_pid = int(process.stdout.readline())
    component = Component("stubborn", process, tmp_path / "stubborn.log")

    component.stop(grace=0.5)

    assert process.returncode == -signal.SIGKILL
    assert not group_alive(process.pid)
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)


class FakeApi:
    """Replays a run: one (run state, {task id: state}) pair per poll."""

    def __init__(self, polls: list[tuple[str, dict[str, str | None]]]) -> None:
        self.polls = polls
        self.index = -1

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        self.index = min(self.index + 1, len(self.polls) - 1)
        return {"state": self.polls[self.index][0]}

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        return {task: {"task_id": task, "state": state} for task, state in self.polls[self.index][1].items()}


def test_watcher_records_each_state_change_once() -> None:
    api = FakeApi(
        [
            ("running", {"wait": None, "train": None}),
            ("running", {"wait": "running", "train": None}),
            ("running", {"wait": "deferred", "train": None}),
            ("running", {"wait": "deferred", "train": None}),
            ("running", {"wait": "success", "train": "running"}),
            ("success", {"wait": "success", "train": "success"}),
        ]
    )
    changes: list[tuple[str, str]] = []
    watcher = RunWatcher(api, "dag", "run", on_change=lambda task, state, ti: changes.append((task, state)))  # type: ignore[arg-type]

    watcher.wait(timeout=5, interval=0)

    assert watcher.state == "success"
    assert watcher.states("wait") == ["none", "running", "deferred", "success"]
    assert watcher.states("train") == ["none", "running", "success"]
    assert changes.count(("wait", "deferred")) == 1


def test_watcher_says_when_the_run_ended_before_the_awaited_condition() -> None:
    api = FakeApi([("running", {"wait": "running"}), ("failed", {"wait": "failed"})])
    watcher = RunWatcher(api, "dag", "run")  # type: ignore[arg-type]

    with pytest.raises(RuntimeError, match="ended failed before the sensor deferred"):
        watcher.wait(
            lambda w: "deferred" in w.states("wait"), timeout=5, interval=0, what="the sensor deferred"
        )


class NotYetVisible(FakeApi):
    """The first ``misses`` reads of the run answer 404, as a just-triggered run once did on 3.1."""

    def __init__(self, polls: list[tuple[str, dict[str, str | None]]], misses: int) -> None:
        super().__init__(polls)
        self.misses = misses

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        if self.misses:
            self.misses -= 1
            raise AirflowApiError(404, "The DagRun was not found")
        return super().dag_run(dag_id, run_id)


def test_watcher_waits_out_a_new_run_not_visible_yet_but_not_a_run_that_vanished() -> None:
    watcher = RunWatcher(NotYetVisible([("success", {"wait": "success"})], misses=2), "dag", "run")  # type: ignore[arg-type]
    watcher.wait(timeout=5, interval=0)
    assert watcher.state == "success"

    vanished = NotYetVisible([("running", {"wait": "running"})], misses=0)
    watcher = RunWatcher(vanished, "dag", "run")  # type: ignore[arg-type]
    watcher.poll()
    vanished.misses = 1  # seen once, then gone: an error at once
    with pytest.raises(AirflowApiError, match="not found"):
        watcher.poll()


def test_wait_until_returns_the_first_truthy_value_or_times_out() -> None:
    values = iter([None, 0, "ready"])
    assert wait_until(lambda: next(values), timeout=5, what="x", interval=0) == "ready"
    with pytest.raises(TimeoutError, match="waiting for nothing"):
        wait_until(lambda: False, timeout=0.05, what="nothing", interval=0.01)


def test_log_lines_keep_the_message_and_its_own_fields_only() -> None:
    entry = {
        "timestamp": "2026-01-01T00:00:00Z",
        "level": "info",
        "event": "Trigger fired event",
        "name": "dag/run/task",
        "ti_id": "x",
        "task_id": "wait",
        "filename": "triggerer_job_runner.py",
        "lineno": 1,
    }
    assert log_line(entry) == "[info] Trigger fired event name=dag/run/task"
    assert log_line("plain text") == "plain text"


def finished_line(state: str, *, ti_id: bool = True, run_id: str = "r+1", map_index: int = -1) -> str:
    """The scheduler's "TaskInstance Finished" line as Airflow 3.3 (with ti_id) or 3.1 writes it."""
    ident = "ti_id=u, " if ti_id else ""
    return (
        f"TaskInstance Finished: dag_id=d, task_id=wait, run_id={run_id}, map_index={map_index}, {ident}"
        f"run_start_date=s, run_end_date=None, run_duration=None, state={state}, "
        "executor=LocalExecutor, executor_state=success"
    )


@pytest.mark.parametrize(
    ("line", "processed"),
    [
        (finished_line("deferred"), True),
        (finished_line("deferred", ti_id=False), True),
        # the race the tests avoid: the stale event arrived after the trigger had fired
        (finished_line("queued"), False),
        (finished_line("deferred", run_id="another"), False),
    ],
)
def test_deferral_processed_reads_the_schedulers_log(tmp_path: Path, line: str, processed: bool) -> None:
    stack = AirflowStack(home=tmp_path, dags_folder=tmp_path)
    stack.log_dir.mkdir()
    (stack.log_dir / "scheduler.log").write_text(f"2026-01-01 [info] {line} [airflow.jobs]\n")

    assert stack.deferral_processed("d", "r+1", "wait") is processed


def test_deferral_processed_tells_mapped_task_instances_apart(tmp_path: Path) -> None:
    stack = AirflowStack(home=tmp_path, dags_folder=tmp_path)
    stack.log_dir.mkdir()
    lines = [finished_line("deferred", map_index=0), finished_line("queued", map_index=2)]
    (stack.log_dir / "scheduler.log").write_text("".join(f"[info] {line}\n" for line in lines))

    assert stack.deferral_processed("d", "r+1", "wait", map_index=0) is True
    assert stack.deferral_processed("d", "r+1", "wait", map_index=2) is False  # the stale event came late
    assert stack.deferral_processed("d", "r+1", "wait", map_index=1) is False  # nothing seen yet
    assert stack.deferral_processed("d", "r+1", "wait") is False  # not a mapped index at all


def test_sensor_policy_sets_the_overrides_on_sensors_only() -> None:
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor

    namespace: dict[str, Any] = {}
    exec(SENSOR_POLICY.format(overrides={"poke_interval": 2.0, "timeout": 30.0}), namespace)
    sensor = TimeDeltaSensor(task_id="wait", delta=1, poke_interval=60)
    other = EmptyOperator(task_id="other")

    namespace["task_policy"](sensor)
    namespace["task_policy"](other)

    assert (sensor.poke_interval, sensor.timeout) == (2.0, 30.0)
    assert not hasattr(other, "poke_interval")


def test_demo_uses_the_real_api_only_with_pod_ids_and_credentials() -> None:
    assert real_api_settings({"PRIME_API_KEY": "k"}) is None
    assert real_api_settings({"PRIME_POD_IDS": " a, b ,", "PRIME_API_KEY": "k"}) == (["a", "b"], {})
    conn = '{"conn_type": "prime", "password": "k"}'
    assert real_api_settings({"PRIME_POD_IDS": "a", "AIRFLOW_CONN_PRIME_DEFAULT": conn}) == (
        ["a"],
        {"AIRFLOW_CONN_PRIME_DEFAULT": conn},
    )
    with pytest.raises(SystemExit, match="no PRIME_API_KEY"):
        real_api_settings({"PRIME_POD_IDS": "a"})
