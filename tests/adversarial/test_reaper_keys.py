"""Attacks on the reaper with Airflow's ambiguous keys and half-broken answers (Task SDK types)."""

from __future__ import annotations

import pytest
from airflow.sdk.api.datamodels._generated import DagRunState, TaskInstanceState

from airflow_provider_prime.operators.ownership import MemoryOwnerRecords
from airflow_provider_prime.operators.pod_names import derived_pod_name
from airflow_provider_prime.operators.reaper import PrimeReapPodsOperator
from airflow_provider_prime.testing import CreateLifecycle, ready_pod
from tests.operators.conftest import account, billing_pods, make_context
from tests.operators.fake_airflow import SERVER_ERROR, FakeAirflow

DAG, RUN = "train_dag", "scheduled__2026-01-01T00:00:00+00:00"
GONE_AT_ONCE = CreateLifecycle(active_after=1.0, installed_after=2.0, deleting_for=0.0)
TI = TaskInstanceState


@pytest.fixture(autouse=True)
def _prod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__PRIME__DEPLOYMENT_ID", "prod")


def reap(answers: FakeAirflow) -> dict[str, dict[str, str]]:
    op = PrimeReapPodsOperator(task_id="reap", dag_ids=[DAG], min_age=0, dry_run=False)
    op.airflow_states = answers
    op.owner_records = MemoryOwnerRecords()
    return op.execute(make_context())


@pytest.mark.parametrize("order", ["mapped_last", "unmapped_last"])
def test_mapped_create_1_and_unmapped_create_1_are_judged_apart(lifecycle_sim, order):
    """Held (finding 17): whichever wins the shared key, each pod is judged by its own task instance."""
    mapped = derived_pod_name(DAG, RUN, "create", 1, deployment="prod")
    unmapped = derived_pod_name(DAG, RUN, "create_1", -1, deployment="prod")
    sim = lifecycle_sim(
        GONE_AT_ONCE,
        ready_pod("p-mapped", name=mapped, ready_at=0.0),
        ready_pod("p-unmapped", name=unmapped, ready_at=0.0),
    )
    answers = FakeAirflow().run(DAG, RUN, DagRunState.RUNNING)
    steps = [("create", 1, TI.RUNNING), ("create_1", -1, TI.FAILED)]
    for task_id, index, state in steps if order == "unmapped_last" else steps[::-1]:
        answers.ti(DAG, RUN, task_id, state, map_index=index)
    result = reap(answers)
    assert set(result["deleted"]) == {"p-unmapped"}
    assert billing_pods(sim) == ["p-mapped"]
    answers.ti(DAG, RUN, "create", TI.FAILED, map_index=1)
    assert set(reap(answers)["deleted"]) == {"p-mapped"}
    assert billing_pods(sim) == []


def test_an_error_on_the_precise_question_spares_the_ambiguous_pod(lifecycle_sim):
    """Held: the bulk answer says 'failed' under a shared key, the precise one errs: spared."""
    name = derived_pod_name(DAG, RUN, "create", 1, deployment="prod")
    sim = lifecycle_sim(GONE_AT_ONCE, ready_pod("p", name=name, ready_at=0.0))
    answers = FakeAirflow(task_states_error=SERVER_ERROR, task_states_error_on="precise")
    answers.ti(DAG, RUN, "create", TI.FAILED, map_index=1).run(DAG, RUN, DagRunState.RUNNING)
    assert reap(answers)["deleted"] == {}
    assert account(sim)["pods"]["p"]["deleted"] is False
    answers.task_states_error = None
    assert set(reap(answers)["deleted"]) == {"p"}
    assert billing_pods(sim) == []
