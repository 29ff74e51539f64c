"""PrimeCapacityEventTrigger on a real scheduler and triggerer: one DAG run per appearance of capacity.

The asset of ``dags/e2e_prime_capacity_event.py`` is watched for an L40S in Europe at most $1/h,
which only the simulator's ``sim-l40s-1x`` fits; the test sells it out and back through the
simulator's control API. "Nothing fired" is proven by the simulator's availability requests
moving on (the trigger polls every second; the only other watcher in this session, the example
DAG's, polls every minute), never by sleeping for a while.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_prime._compat import ASSET_STATE_STORE
from airflow_provider_prime.testing import GPUS_PATH
from airflow_provider_prime.testing.process import PrimeSimulatorProcess
from scripts.airflow_api import RunWatcher
from scripts.airflow_stack import AirflowStack, wait_until
from tests.e2e.runs import STEP_TIMEOUT

pytestmark = pytest.mark.e2e

DAG_ID = "e2e_prime_capacity_event"
ASSET = "e2e_prime_l40s_capacity"
OFFER = "sim-l40s-1x"


def availability_requests(simulator: PrimeSimulatorProcess) -> int:
    return int(simulator.stats_snapshot()["by_path"].get(GPUS_PATH, 0))


def polls_pass(simulator: PrimeSimulatorProcess, n: int, timeout: float = STEP_TIMEOUT) -> None:
    """``n`` more availability requests reached the simulator: the trigger judged n - 1 more answers."""
    target = availability_requests(simulator) + n
    wait_until(lambda: availability_requests(simulator) >= target, timeout, f"{n} more availability polls")


def asset_events(stack: AirflowStack) -> list[dict[str, Any]]:
    assets = stack.api.request("GET", "/assets", params={"name_pattern": ASSET})["assets"]
    (asset,) = [a for a in assets if a["name"] == ASSET]
    found: list[dict[str, Any]] = stack.api.request(
        "GET", "/assets/events", params={"asset_id": asset["id"], "limit": 100}
    )["asset_events"]
    return found


def dag_runs(stack: AirflowStack) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = stack.api.request("GET", f"/dags/{DAG_ID}/dagRuns", params={"limit": 100})[
        "dag_runs"
    ]
    return sorted(found, key=lambda run: str(run["run_after"]))


@pytest.fixture
def capacity(e2e_simulator: PrimeSimulatorProcess) -> Iterator[PrimeSimulatorProcess]:
    """The simulator, its L40S back in stock (the default) however the test ends."""
    try:
        yield e2e_simulator
    finally:
        e2e_simulator.set_stock(OFFER, "High")


def test_a_dag_run_per_appearance_of_capacity_and_none_while_it_stays(
    airflow_stack: AirflowStack, capacity: PrimeSimulatorProcess
) -> None:
    airflow_stack.wait_for_dags(DAG_ID)
    capacity.set_stock(OFFER, "Unavailable")
    polls_pass(capacity, 4)  # the trigger runs, and has seen the capacity gone
    events, runs = len(asset_events(airflow_stack)), len(dag_runs(airflow_stack))
    polls_pass(capacity, 4)
    assert (len(asset_events(airflow_stack)), len(dag_runs(airflow_stack))) == (events, runs)  # sold out

    capacity.set_stock(OFFER, "Medium")
    wait_until(lambda: len(dag_runs(airflow_stack)) == runs + 1, STEP_TIMEOUT, "a run for the capacity")
    polls_pass(capacity, 6)  # capacity stays: nothing more fires
    assert len(asset_events(airflow_stack)) == events + 1
    assert len(dag_runs(airflow_stack)) == runs + 1
    event = asset_events(airflow_stack)[-1]
    assert event["extra"]["payload"]["cloud_id"] == OFFER
    assert event["extra"]["payload"]["stock_status"] == "Medium"
    run = dag_runs(airflow_stack)[-1]
    watcher = RunWatcher(airflow_stack.api, DAG_ID, run["dag_run_id"])
    watcher.wait(timeout=STEP_TIMEOUT)
    assert watcher.state == "success", watcher.history
    assert airflow_stack.api.xcom(DAG_ID, run["dag_run_id"], "what_appeared") == OFFER

    # A triggerer restart does not fire for the capacity already seen (the trigger's memory).
    airflow_stack.kill("triggerer")
    airflow_stack.start(["triggerer"])
    polls_pass(capacity, 8)  # the new triggerer has taken the trigger over and polls
    assert len(asset_events(airflow_stack)) == events + 1
    assert len(dag_runs(airflow_stack)) == runs + 1
    # ... because it remembered, not by luck: the restarted trigger says what it read, and where
    memory = "asset state store" if ASSET_STATE_STORE else "Variable"
    log = (airflow_stack.log_dir / "triggerer.log").read_text(errors="replace")
    assert f"remembered: capacity present ({memory}" in log

    # Gone, then back: a second run.
    capacity.set_stock(OFFER, "Unavailable")
    polls_pass(capacity, 4)
    capacity.set_stock(OFFER, "High")
    wait_until(lambda: len(dag_runs(airflow_stack)) == runs + 2, STEP_TIMEOUT, "a run for the return")
    polls_pass(capacity, 4)
    assert len(asset_events(airflow_stack)) == events + 2
    assert len(dag_runs(airflow_stack)) == runs + 2
