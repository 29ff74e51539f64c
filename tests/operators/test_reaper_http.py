"""PrimeReapPodsOperator over HTTP against the simulator, with Airflow's answers in the Task SDK's types."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from airflow.sdk.api.datamodels._generated import DagRunState, TaskInstanceState

from airflow_provider_prime.exceptions import PrimeConfigError
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.operators.ownership import MemoryOwnerRecords, PodOwner
from airflow_provider_prime.operators.pod_names import derived_pod_name
from airflow_provider_prime.operators.reaper import PrimeReapPodsOperator
from airflow_provider_prime.testing import CreateLifecycle, PrimeSimulator, ready_pod
from tests.operators.conftest import account, billing_pods, make_context
from tests.operators.fake_airflow import SERVER_ERROR, FakeAirflow

DAG = "train_dag"
HERE = "prod"
TI = TaskInstanceState
#: A deleted pod stops billing at once (the reaper does not wait for it to be gone).
GONE_AT_ONCE = CreateLifecycle(active_after=1.0, installed_after=2.0, deleting_for=0.0)


@pytest.fixture(autouse=True)
def _this_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__PRIME__DEPLOYMENT_ID", HERE)


def name_of(run_id: str, task_id: str = "create", map_index: int = -1, deployment: str = HERE) -> str:
    return derived_pod_name(DAG, run_id, task_id, map_index, deployment=deployment)


#: Pod id -> name: one of each kind the reaper meets in an account shared with another deployment.
PODS = {
    "live": name_of("r-live"),
    "dead": name_of("r-dead"),
    "used-downstream": name_of("r-done"),
    "staging": name_of("r-dead", deployment="staging"),
    "user-recorded": "finetune-llama",
    "user-own": "my-notebook",
}


@pytest.fixture
def sim(lifecycle_sim: Callable[..., PrimeSimulator]) -> Iterator[PrimeSimulator]:
    started = lifecycle_sim(
        GONE_AT_ONCE, *(ready_pod(pod_id, name=name, ready_at=0.0) for pod_id, name in PODS.items())
    )
    yield started
    hook = PrimeHook()
    for pod_id in billing_pods(started):  # the spared ones, as their owners would
        hook.delete_pod(pod_id)
    assert billing_pods(started) == []


def airflow() -> FakeAirflow:
    return (
        FakeAirflow()
        .ti(DAG, "r-live", "create", TI.DEFERRED)
        .ti(DAG, "r-dead", "create", TI.FAILED)
        .ti(DAG, "r-done", "create", TI.SUCCESS)
        .run(DAG, "r-done", DagRunState.RUNNING)
        .ti(DAG, "r-user", "create", TI.FAILED)
    )


def reaper(answers: FakeAirflow, records: MemoryOwnerRecords, **kwargs: object) -> PrimeReapPodsOperator:
    op = PrimeReapPodsOperator(task_id="reap", dag_ids=[DAG], min_age=0, **kwargs)  # type: ignore[arg-type]
    op.airflow_states = answers
    op.owner_records = records
    return op


def recorded() -> MemoryOwnerRecords:
    records = MemoryOwnerRecords()
    records.put(PodOwner(HERE, DAG, "r-user", "create", -1, "finetune-llama", "user-recorded"))
    return records


def deleted(sim: PrimeSimulator) -> set[str]:
    return {pod_id for pod_id, pod in account(sim)["pods"].items() if pod["deleted"]}


def test_the_reaper_deletes_only_this_deployments_orphans_and_their_records(sim: PrimeSimulator) -> None:
    records = recorded()
    report = reaper(airflow(), records).execute(make_context())  # type: ignore[arg-type]
    assert set(report["deleted"]) == {"dead", "user-recorded"}
    assert deleted(sim) == {"dead", "user-recorded"}
    assert set(report["spared"]) == {"live", "used-downstream"}
    assert "succeeded and its run is running" in report["spared"]["used-downstream"]
    assert report["ignored"] == {"staging": f"{PODS['staging']}: ignored: another deployment"}
    assert records.get(HERE, "finetune-llama") is None


def test_the_dry_run_deletes_nothing_and_reports_the_same(sim: PrimeSimulator) -> None:
    records = recorded()
    report = reaper(airflow(), records, dry_run="true").execute(make_context())  # type: ignore[arg-type]
    assert set(report["deleted"]) == {"dead", "user-recorded"}
    assert deleted(sim) == set()
    assert records.get(HERE, "finetune-llama") is not None


def test_an_error_response_from_airflow_deletes_nothing(sim: PrimeSimulator) -> None:
    answers = airflow()
    answers.task_states_error = answers.run_state_error = SERVER_ERROR
    report = reaper(answers, recorded()).execute(make_context())  # type: ignore[arg-type]
    assert report["deleted"] == {}
    assert deleted(sim) == set()
    assert all("API_SERVER_ERROR" in why for why in report["spared"].values())
    assert set(report["spared"]) == {"live", "dead", "used-downstream", "user-recorded"}


def test_dag_ids_none_is_a_config_error_before_any_request(sim: PrimeSimulator) -> None:
    op = PrimeReapPodsOperator(task_id="reap", dag_ids=None)  # type: ignore[arg-type]
    before = sim.stats.total
    with pytest.raises(PrimeConfigError, match="dag_ids must name at least one DAG"):
        op.execute(make_context())  # type: ignore[arg-type]
    assert sim.stats.total == before
