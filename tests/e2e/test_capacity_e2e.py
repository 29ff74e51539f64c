"""Waiting for capacity and ordered fallbacks on real Airflow processes (scheduler, triggerer, workers).

* A create deferred while its GPU is sold out waits in the triggerer (no pod, no create), and once the
  simulator has stock again it creates exactly one pod, which then boots, is used and given back.
* A create whose first GPU type is sold out takes the second, and says so in its XCom.

Each test ends with none of its pods billing, and puts the simulator's stock back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_prime.testing import GPUS_PATH, Scenario
from airflow_provider_prime.testing.process import PrimeSimulatorProcess
from scripts.airflow_stack import AirflowStack, wait_until
from tests.e2e.conftest import SLOW_BOOT
from tests.e2e.runs import (
    CREATE,
    STEP_TIMEOUT,
    assert_none_billing,
    last_try_log,
    pod_id_of,
    run_log,
    wait_deferred,
)

pytestmark = pytest.mark.e2e

WAIT_DAG, FALLBACK_DAG = "e2e_prime_capacity_wait", "e2e_prime_capacity_fallback"
H100 = "sim-h100-80gb-1x"
LISTS = f"GET {GPUS_PATH}"


def set_stock(simulator: PrimeSimulatorProcess, cloud_id: str, status: str) -> None:
    """The offer's stock from now on: the simulator's ``set_stock`` control once it has one.

    Without it (before the capacity controls are merged) the e2e scenario is served again with the
    offer changed; that forgets earlier tests' pods, which have all been given back by then.
    """
    if hasattr(simulator, "set_stock"):
        simulator.set_stock(cloud_id, status)
        return
    base = Scenario(name="e2e", lifecycle=SLOW_BOOT)
    offers = tuple(
        o.model_copy(update={"stock_status": status}) if o.cloud_id == cloud_id else o for o in base.offers
    )
    simulator.set_scenario(base.model_copy(update={"offers": offers}))


@pytest.fixture
def h100_sold_out(e2e_simulator: PrimeSimulatorProcess) -> Iterator[None]:
    set_stock(e2e_simulator, H100, "Unavailable")
    try:
        yield
    finally:
        set_stock(e2e_simulator, H100, "High")


@pytest.fixture
def dags(airflow_stack: AirflowStack) -> AirflowStack:
    airflow_stack.wait_for_dags(WAIT_DAG, FALLBACK_DAG)
    return airflow_stack


def lists(simulator: PrimeSimulatorProcess) -> int:
    return int(simulator.stats_snapshot()["by_method_path"].get(LISTS, 0))


def created(simulator: PrimeSimulatorProcess) -> dict[str, int]:
    return dict(simulator.billing()["created"])


def make_ready(simulator: PrimeSimulatorProcess, pod_id: str) -> None:
    simulator.set_pod_state(
        pod_id, "ACTIVE", installation_status="FINISHED", installation_progress=100, ssh_nodes=1, ip_nodes=1
    )


def offer_of(stack: AirflowStack, dag_id: str, run_id: str) -> dict[str, Any]:
    offer: dict[str, Any] = stack.api.xcom(dag_id, run_id, CREATE, "offer")
    return offer


def test_a_deferred_create_waits_through_a_sold_out_period_then_creates_exactly_one_pod(
    dags: AirflowStack, e2e_simulator: PrimeSimulatorProcess, h100_sold_out: None
) -> None:
    before = created(e2e_simulator)
    watcher = dags.trigger(WAIT_DAG)
    wait_deferred(dags, watcher)
    looked = lists(e2e_simulator)
    wait_until(lambda: lists(e2e_simulator) >= looked + 3, STEP_TIMEOUT, "three looks at the sold-out list")
    assert watcher.ti(CREATE)["state"] == "deferred"
    assert created(e2e_simulator) == before  # waiting, nothing created

    set_stock(e2e_simulator, H100, "High")
    pod_id = pod_id_of(dags, watcher)
    make_ready(e2e_simulator, pod_id)
    watcher.wait(timeout=STEP_TIMEOUT)

    assert watcher.state == "success", (watcher.history, last_try_log(dags, watcher, CREATE))
    name = e2e_simulator.billing()["pods"][pod_id]["name"]
    assert created(e2e_simulator).get(name) == 1  # exactly one create across the wait and the resume
    assert offer_of(dags, WAIT_DAG, watcher.run_id)["cloud_id"] == H100
    # The worker's part: the trigger's own lines are in a file the ready-wait's trigger replaced.
    log = run_log(dags, watcher, CREATE)
    assert "Deferring the wait for capacity to the triggerer. Waiting for capacity" in log
    assert f"cloud_id={H100}, stock Unavailable: out of stock (Unavailable)" in log
    assert "Capacity found for H100_80GB x1" in log
    assert_none_billing(e2e_simulator, [pod_id])


def test_a_fallback_takes_the_second_gpu_type_when_the_first_is_gone(
    dags: AirflowStack, e2e_simulator: PrimeSimulatorProcess, h100_sold_out: None
) -> None:
    watcher = dags.trigger(FALLBACK_DAG)
    pod_id = pod_id_of(dags, watcher)
    make_ready(e2e_simulator, pod_id)
    watcher.wait(timeout=STEP_TIMEOUT)

    assert watcher.state == "success", (watcher.history, last_try_log(dags, watcher, CREATE))
    offer = offer_of(dags, FALLBACK_DAG, watcher.run_id)
    assert offer["gpu_type"] == "A100_80GB"
    assert "GPU type A100_80GB is choice 2 of 2 (no offer of H100_80GB fits)" in offer["why"]
    handover = dags.api.xcom(FALLBACK_DAG, watcher.run_id, CREATE)
    assert handover[pod_id]["offer"] == offer
    assert_none_billing(e2e_simulator, [pod_id])
