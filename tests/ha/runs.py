"""Reading a production-tier run: mapped task instances, their triggerers, the simulator's request log."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

from airflow_provider_prime.testing import STATUS_PATH
from airflow_provider_prime.testing.process import PrimeSimulatorProcess
from scripts.airflow_api import FINISHED_RUN_STATES
from scripts.airflow_stack import AirflowStack, wait_until

#: Bound for one step of a run (a fan-out's deferral, a trigger moving). A classic fan-out starts a
#: worker process per wait, a couple of CPU seconds each: two shared cores need minutes for 200.
STEP_TIMEOUT = 900.0
#: Pod ids per status request (the API's limit, which the client chunks by).
IDS_PER_REQUEST = 100


def mapped_tis(stack: AirflowStack, dag_id: str, run_id: str, task_id: str = "wait") -> list[dict[str, Any]]:
    """Every mapped task instance of ``task_id``, by map index."""
    path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/listMapped"
    body = stack.api.request("GET", path, params={"limit": 1000})
    return sorted(body["task_instances"], key=lambda ti: int(ti["map_index"]))


def triggerer_of(ti: dict[str, Any]) -> int | None:
    trigger = ti.get("trigger") or {}
    triggerer_id = trigger.get("triggerer_id")
    return int(triggerer_id) if triggerer_id is not None else None


def wait_all_deferred(stack: AirflowStack, dag_id: str, run_id: str, count: int) -> list[dict[str, Any]]:
    """Wait until ``count`` mapped waits are DEFERRED with their trigger on a triggerer; their TIs."""

    def deferred() -> list[dict[str, Any]] | None:
        if stack.api.dag_run(dag_id, run_id)["state"] in FINISHED_RUN_STATES:
            raise RuntimeError(f"run {run_id} of {dag_id} ended before its waits deferred")
        tis = mapped_tis(stack, dag_id, run_id)
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
