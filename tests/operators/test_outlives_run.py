"""#outlives-run: a user-named pod whose teardown failed is the reaper's to delete once its run is over.

The DAG is a real one, built here: ``create >> train >> terminate.as_teardown(setups=create)``. The
create writes into its ownership record that the pod does not outlive its run (a teardown gives it
back); the teardown fails (the API refuses its DELETE), the run ends, and the reaper, reading
Airflow's answers in the Task SDK's types, deletes the pod and its record. Without a teardown the
pod outlives its run as before: the reaper spares it.
"""

from __future__ import annotations

from typing import Any

import pytest
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG
from airflow.sdk.api.datamodels._generated import DagRunState, TaskInstanceState

from airflow_provider_prime.deployment import deployment_id
from airflow_provider_prime.exceptions import PrimeError
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.operators.ownership import MemoryOwnerRecords
from airflow_provider_prime.operators.pod import PrimeCreatePodOperator, PrimeTerminatePodOperator
from airflow_provider_prime.operators.reaper import PrimeReapPodsOperator
from airflow_provider_prime.testing import Fault, PrimeSimulator
from tests.operators.conftest import (
    SLOW_BOOT,
    TaskInstance,
    XComs,
    billing_after_deletes,
    billing_pods,
    make_context,
)
from tests.operators.fake_airflow import FakeAirflow

DAG_ID = "train_dag"
RUN = "manual__1"
NAME = "finetune-llama"


def build(*, teardown: bool) -> tuple[PrimeCreatePodOperator, PrimeTerminatePodOperator | None]:
    """The user's DAG: a named create and its training, with or without the documented teardown."""
    with DAG(DAG_ID, schedule=None):
        create = PrimeCreatePodOperator(
            task_id="create_pod", gpu_type="H100_80GB", name=NAME, wait_for_ready=False, deferrable=False
        )
        train = EmptyOperator(task_id="train")
        create >> train
        if not teardown:
            return create, None
        terminate = PrimeTerminatePodOperator(
            task_id="terminate_pod",
            pod_ids=create.output["pod_id"],
            poll_interval=0.05,
            timeout=30,
            deferrable=False,
        )
        train >> terminate.as_teardown(setups=create)
    return create, terminate


def reap(records: MemoryOwnerRecords, run: DagRunState) -> dict[str, Any]:
    """The reaper once the run is over: the create succeeded, the run ended in ``run``."""
    answers = (
        FakeAirflow()
        .ti(DAG_ID, RUN, "create_pod", TaskInstanceState.SUCCESS)
        .ti(DAG_ID, RUN, "train", TaskInstanceState.SUCCESS)
        .ti(DAG_ID, RUN, "terminate_pod", TaskInstanceState.FAILED)
        .run(DAG_ID, RUN, run)
    )
    reaper = PrimeReapPodsOperator(task_id="reap", dag_ids=[DAG_ID], min_age=0)
    reaper.airflow_states = answers
    reaper.owner_records = records
    report: dict[str, Any] = reaper.execute(make_context())  # type: ignore[arg-type]
    return report


@pytest.mark.parametrize("run", [DagRunState.SUCCESS, DagRunState.FAILED])
def test_a_named_pod_whose_teardown_failed_is_deleted_by_the_reaper_once_the_run_is_over(
    lifecycle_sim: Any, owner_records: MemoryOwnerRecords, run: DagRunState
) -> None:
    sim: PrimeSimulator = lifecycle_sim(SLOW_BOOT)
    create, terminate = build(teardown=True)
    assert terminate is not None
    xcoms = XComs()
    created = TaskInstance(xcoms=xcoms)
    create.execute(make_context(created))
    pod_id = created.xcom["pod_id"]
    record = owner_records.get(deployment_id(), NAME)
    assert record is not None
    assert record.pod_id == pod_id
    assert record.outlives_run is False  # the DAG gives the pod back

    sim.inject(Fault.server_error(403, method="DELETE", path=f"/api/v1/pods/{pod_id}", times=100))
    terminate.pod_ids = pod_id  # what create.output["pod_id"] renders to
    with pytest.raises(PrimeError, match=pod_id):
        terminate.execute(make_context(TaskInstance(task_id="terminate_pod", xcoms=xcoms)))
    assert billing_pods(sim) == [pod_id]  # the teardown failed: it bills
    sim.clear_faults()

    report = reap(owner_records, run)
    assert set(report["deleted"]) == {pod_id}
    assert "its teardown did not delete the pod" in report["deleted"][pod_id]
    assert owner_records.get(deployment_id(), NAME) is None  # deleted with its pod
    assert billing_after_deletes(sim) == []


def test_a_named_pod_without_a_teardown_outlives_its_run(
    lifecycle_sim: Any, owner_records: MemoryOwnerRecords
) -> None:
    sim: PrimeSimulator = lifecycle_sim(SLOW_BOOT)
    create, _ = build(teardown=False)
    created = TaskInstance()
    create.execute(make_context(created))
    pod_id = created.xcom["pod_id"]
    record = owner_records.get(deployment_id(), NAME)
    assert record is not None
    assert record.outlives_run is True

    report = reap(owner_records, DagRunState.SUCCESS)
    assert report["deleted"] == {}
    assert "it outlives its run" in report["spared"][pod_id]
    assert billing_pods(sim) == [pod_id]
    PrimeHook().delete_pod(pod_id)  # as its user would, when done with it
    assert billing_after_deletes(sim) == []


def test_a_create_outside_any_dag_records_that_its_pod_outlives_its_run(
    lifecycle_sim: Any, owner_records: MemoryOwnerRecords
) -> None:
    """No DAG structure to read: today's rule (the pod outlives its run), and the log says why."""
    sim: PrimeSimulator = lifecycle_sim(SLOW_BOOT)
    create = PrimeCreatePodOperator(
        task_id="create_pod", gpu_type="H100_80GB", name=NAME, wait_for_ready=False, deferrable=False
    )
    created = TaskInstance()
    create.execute(make_context(created))
    record = owner_records.get(deployment_id(), NAME)
    assert record is not None
    assert record.outlives_run is True
    PrimeHook().delete_pod(created.xcom["pod_id"])
    assert billing_after_deletes(sim) == []
