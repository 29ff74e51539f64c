"""The teardown keeps a borrowed pod (finding 6) and cleans the ownership record of one it deletes.

The DAG is the documented one (create, then terminate as its teardown, fed ``create.output``),
run task by task against the simulator with one run's XComs shared between the two task instances.
"""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk import DAG

from airflow_provider_prime.deployment import deployment_id
from airflow_provider_prime.operators.pod import PrimeCreatePodOperator, PrimeTerminatePodOperator
from airflow_provider_prime.testing import provisioned_pod
from tests.operators.conftest import (
    SLOW_BOOT,
    TaskInstance,
    XComs,
    account,
    billing_after_deletes,
    billing_pods,
    make_context,
)


def lifecycle_dag(
    name: str | None = None, **terminate_options: Any
) -> tuple[PrimeCreatePodOperator, PrimeTerminatePodOperator]:
    with DAG("train_dag", schedule=None):
        create = PrimeCreatePodOperator(
            task_id="create_pod", gpu_type="H100_80GB", name=name, wait_for_ready=False, deferrable=False
        )
        terminate = PrimeTerminatePodOperator(
            task_id="terminate_pod",
            pod_ids=create.output["pod_id"],
            poll_interval=0.05,
            timeout=30,
            deferrable=False,
            **terminate_options,
        )
        create >> terminate.as_teardown(setups=create)
    return create, terminate


def run(
    create: PrimeCreatePodOperator, terminate: PrimeTerminatePodOperator, between: Any = None
) -> dict[str, Any]:
    """Run create, ``between()``, then terminate in one DAG run; terminate gets the rendered ``pod_ids``."""
    xcoms = XComs()
    created = TaskInstance(xcoms=xcoms)
    create.execute(make_context(created))
    if between is not None:
        between()
    terminate.pod_ids = created.xcom["pod_id"]  # what create.output["pod_id"] renders to
    result: dict[str, Any] = terminate.execute(
        make_context(TaskInstance(task_id="terminate_pod", xcoms=xcoms))
    )
    return result


def test_the_teardown_keeps_a_pod_the_create_only_borrowed(lifecycle_sim, logs):
    sim = lifecycle_sim(SLOW_BOOT)
    sim.add_pod(provisioned_pod("pod-shared", SLOW_BOOT, name="shared-box"))
    report = run(*lifecycle_dag(name="shared-box"))
    assert report == {}
    assert account(sim)["deleted"] == {}
    assert any("Keeping pod pod-shared" in e["event"] and "terminate_borrowed" in e["event"] for e in logs)
    assert billing_pods(sim) == ["pod-shared"]
    PrimeTerminatePodOperator(
        task_id="t", pod_ids="pod-shared", deferrable=False, poll_interval=0.05
    ).execute(make_context())  # a plain id, no create upstream: deleted
    assert billing_after_deletes(sim) == []


def test_terminate_borrowed_deletes_it_anyway(lifecycle_sim):
    sim = lifecycle_sim(SLOW_BOOT)
    sim.add_pod(provisioned_pod("pod-shared", SLOW_BOOT, name="shared-box"))
    report = run(*lifecycle_dag(name="shared-box", terminate_borrowed=True))
    assert set(report) == {"pod-shared"}
    assert billing_after_deletes(sim) == []


@pytest.mark.parametrize("name", [None, "my-box"])
def test_the_teardown_deletes_the_creates_own_pod_and_its_record(lifecycle_sim, owner_records, name):
    sim = lifecycle_sim(SLOW_BOOT)
    recorded: list[Any] = []
    report = run(*lifecycle_dag(name=name), between=lambda: recorded.append(owner_records.texts.copy()))
    (pod_id,) = report
    assert len(recorded[0]) == (0 if name is None else 1)  # a record for a user-named pod only
    assert report[pod_id]["status"] == "TERMINATED"
    assert owner_records.get(deployment_id(), "my-box") is None
    assert billing_after_deletes(sim) == []


def test_an_own_verdict_from_any_upstream_create_wins(lifecycle_sim):
    """Two creates adopt one pod: one made it (own), one borrowed it; the teardown deletes it."""
    sim = lifecycle_sim(SLOW_BOOT)
    xcoms = XComs()
    with DAG("train_dag", schedule=None):
        maker = PrimeCreatePodOperator(task_id="make", gpu_type="H100_80GB", name="box", wait_for_ready=False)
        user = PrimeCreatePodOperator(task_id="use", gpu_type="H100_80GB", name="box", wait_for_ready=False)
        terminate = PrimeTerminatePodOperator(
            task_id="terminate_pod", pod_ids=[maker.output["pod_id"], user.output["pod_id"]], deferrable=False
        )
    made = TaskInstance(task_id="make", xcoms=xcoms)
    maker.execute(make_context(made))
    user.execute(make_context(TaskInstance(task_id="use", xcoms=xcoms)))
    terminate.pod_ids = [made.xcom["pod_id"]] * 2
    terminate.poll_interval = 0.05
    report = terminate.execute(make_context(TaskInstance(task_id="terminate_pod", xcoms=xcoms)))
    assert set(report) == {made.xcom["pod_id"]}
    assert billing_after_deletes(sim) == []
