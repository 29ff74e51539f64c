"""Helpers of the end-to-end tests that follow a DAG run: pods the simulator bills, a task's pod id,
states, deferral, logs, and a hard kill of a task's process."""

from __future__ import annotations

import os
import signal
from typing import Any

from airflow_provider_prime.testing.process import PrimeSimulatorProcess
from scripts.airflow_api import AirflowApiError, RunWatcher
from scripts.airflow_stack import AirflowStack, wait_until

CREATE = "create_pod"
STEP_TIMEOUT = 120.0


def billing(simulator: PrimeSimulatorProcess, pod_ids: list[str]) -> list[str]:
    """Which of ``pod_ids`` the simulator still bills (its own account, not the API's answers)."""
    pods = simulator.billing()["pods"]
    return [pod_id for pod_id in pod_ids if pods[pod_id]["billing"]]


def pod_id_of(stack: AirflowStack, watcher: RunWatcher, task_id: str = CREATE, map_index: int = -1) -> str:
    """The pod id the create task pushed to XCom before waiting (it is there as soon as the pod is)."""

    def pushed() -> str | None:
        path = f"/dags/{watcher.dag_id}/dagRuns/{watcher.run_id}/taskInstances/{task_id}/xcomEntries/pod_id"
        try:
            return str(stack.api.request("GET", path, params={"map_index": map_index})["value"])
        except AirflowApiError:
            return None

    found: str = wait_until(pushed, STEP_TIMEOUT, f"the pod id of {task_id}[{map_index}] in XCom")
    return found


def wait_state(watcher: RunWatcher, task_id: str, state: str) -> None:
    watcher.wait(lambda w: w.states(task_id)[-1:] == [state], timeout=STEP_TIMEOUT, what=f"{task_id} {state}")


def wait_deferred(
    stack: AirflowStack, watcher: RunWatcher, task_id: str = CREATE, map_index: int = -1
) -> None:
    """Deferred, held by a triggerer, and the deferring worker's end processed by the scheduler."""

    def ti(w: RunWatcher) -> dict[str, Any]:
        if map_index < 0:
            return w.task_instances.get(task_id, {})  # nothing yet on the run's first polls
        path = f"/dags/{w.dag_id}/dagRuns/{w.run_id}/taskInstances/{task_id}/{map_index}"
        try:
            found: dict[str, Any] = stack.api.request("GET", path)
        except AirflowApiError:
            return {}  # not expanded yet
        return found

    def deferred(w: RunWatcher) -> bool:
        current = ti(w)
        return (
            current.get("state") == "deferred"
            and (current.get("trigger") or {}).get("triggerer_id") is not None
            and stack.deferral_processed(w.dag_id, w.run_id, task_id, map_index)
        )

    watcher.wait(deferred, timeout=STEP_TIMEOUT, what=f"{task_id}[{map_index}] deferred to a triggerer")


def assert_none_billing(simulator: PrimeSimulatorProcess, pod_ids: list[str]) -> None:
    wait_until(lambda: not billing(simulator, pod_ids), 30, f"{pod_ids} to stop billing")


def run_log(stack: AirflowStack, watcher: RunWatcher, task_id: str, try_number: int = 1) -> str:
    return stack.api.task_log(watcher.dag_id, watcher.run_id, task_id, try_number)


def kill_task_process(watcher: RunWatcher, task_id: str) -> None:
    """SIGKILL the process running the task (the pid Airflow recorded for it): a hard crash."""
    pid = int(watcher.ti(task_id)["pid"])
    assert os.path.exists(f"/proc/{pid}"), f"the task process {pid} is not running"
    os.kill(pid, signal.SIGKILL)


def clear_failed_run(stack: AirflowStack, watcher: RunWatcher, task_id: str, **options: Any) -> None:
    """Clear a failed run's task as a user would, and wait until the run is seen queued again.

    The API answers the clear before its transaction is visible to the next read (seen on 3.1: a
    poll right after it read the run still failed and the task already cleared), so a wait that
    treats a finished run as the end must not start before the run has left ``failed``.
    """
    stack.api.request(
        "POST",
        f"/dags/{watcher.dag_id}/clearTaskInstances",
        json={"dry_run": False, "dag_run_id": watcher.run_id, "task_ids": [task_id], **options},
    )

    def reopened() -> bool:
        state: str = stack.api.dag_run(watcher.dag_id, watcher.run_id)["state"]
        return state not in ("failed", "success")

    wait_until(reopened, STEP_TIMEOUT, f"run {watcher.run_id} queued again after clearing {task_id}")


def last_try_log(stack: AirflowStack, watcher: RunWatcher, task_id: str) -> str:
    """The log of the task's latest try, for a failure message (its tail is what tells why)."""
    try_number = int(watcher.ti(task_id)["try_number"])
    return f"try {try_number}: ..." + run_log(stack, watcher, task_id, try_number)[-4000:]
