"""Reading a production-tier run: its wait task instances, their triggerers, the simulator's request log."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

from airflow_provider_prime.testing import STATUS_PATH
from airflow_provider_prime.testing.process import PrimeSimulatorProcess
from scripts.airflow_api import FINISHED_RUN_STATES
from scripts.airflow_stack import AirflowStack, wait_until

#: Bound for one step of a run (a fan-out's deferral, a trigger moving, a run finishing) on two
#: shared cores; a 200-wait fan-out started from the triggerer defers in well under a minute.
STEP_TIMEOUT = 300.0
#: Pod ids per status request (the API's limit, which the client chunks by).
IDS_PER_REQUEST = 100


def wait_tis(stack: AirflowStack, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """Every task instance of the run whose task id starts with ``wait``, by task id."""
    path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
    body = stack.api.request("GET", path, params={"limit": 1000})
    tis = [ti for ti in body["task_instances"] if str(ti["task_id"]).startswith("wait")]
    return sorted(tis, key=lambda ti: str(ti["task_id"]))


def triggerer_of(ti: dict[str, Any]) -> int | None:
    trigger = ti.get("trigger") or {}
    triggerer_id = trigger.get("triggerer_id")
    return int(triggerer_id) if triggerer_id is not None else None


def wait_all_deferred(stack: AirflowStack, dag_id: str, run_id: str, count: int) -> list[dict[str, Any]]:
    """Wait until ``count`` waits are DEFERRED with their trigger on a triggerer; their TIs."""

    def deferred() -> list[dict[str, Any]] | None:
        if stack.api.dag_run(dag_id, run_id)["state"] in FINISHED_RUN_STATES:
            raise RuntimeError(f"run {run_id} of {dag_id} ended before its waits deferred")
        tis = wait_tis(stack, dag_id, run_id)
        ready = len(tis) == count and all(ti["state"] == "deferred" and triggerer_of(ti) for ti in tis)
        return tis if ready else None

    tis: list[dict[str, Any]] = wait_until(deferred, STEP_TIMEOUT, f"{count} waits of {run_id} deferred", 2.0)
    return tis


def wait_finished(stack: AirflowStack, dag_id: str, run_id: str) -> str:
    """Wait until the run is over; its state."""
    state: str = wait_until(
        lambda: (s := stack.api.dag_run(dag_id, run_id)["state"]) in FINISHED_RUN_STATES and s,
        STEP_TIMEOUT,
        f"run {run_id} of {dag_id} to finish",
        2.0,
    )
    return state


def status_requests(simulator: PrimeSimulatorProcess, since: float = 0.0) -> list[dict[str, Any]]:
    """The status requests the simulator logged since epoch second ``since``, oldest first."""
    log = simulator.stats_snapshot(log=None)["log"]
    return [r for r in log if r["path"].rstrip("/") == STATUS_PATH and r["time"] >= since]


def requests_floor(pods_per_triggerer: Iterable[set[str]]) -> int:
    """Status requests one poll interval needs: ⌈distinct pods / 100⌉ for each triggerer's poller."""
    return sum(math.ceil(len(pods) / IDS_PER_REQUEST) for pods in pods_per_triggerer if pods)


def settle(seconds: float) -> float:
    """Let the waits run for ``seconds``; the epoch second it ended."""
    time.sleep(seconds)
    return time.time()
