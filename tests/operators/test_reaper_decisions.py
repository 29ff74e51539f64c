"""Which pods the reaper deletes, spares and leaves alone, from pods and Airflow's answers in SDK types."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from airflow.sdk.api.datamodels._generated import DagRunState, TaskInstanceState
from airflow.sdk.exceptions import ErrorType
from airflow.sdk.execution_time.comms import DagRunStateResult, ErrorResponse, TaskStatesResult

from airflow_provider_prime.exceptions import PrimeConfigError
from airflow_provider_prime.models import Pod
from airflow_provider_prime.operators.ownership import MemoryOwnerRecords, PodOwner
from airflow_provider_prime.operators.pod_names import derived_pod_name
from airflow_provider_prime.operators.reaper import (
    UnreadableAnswer,
    airflow_state,
    dag_id_list,
    decide,
    flag,
    read_task_states,
)
from tests.operators.fake_airflow import SERVER_ERROR, FakeAirflow

NOW = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
DAG = "train_dag"
HERE = "prod"
TI = TaskInstanceState


def pod(pod_id: str, name: str | None, *, age: float = 3600, status: str = "ACTIVE") -> Pod:
    created = (NOW - timedelta(seconds=age)).isoformat()
    return Pod.model_validate(
        {"id": pod_id, "name": name, "status": status, "providerType": "runpod", "createdAt": created}
    )


def name_of(
    run_id: str, task_id: str = "create", map_index: int = -1, dag_id: str = DAG, deployment: str = HERE
) -> str:
    return derived_pod_name(dag_id, run_id, task_id, map_index, deployment=deployment)


def judge(
    pods: list[Pod],
    airflow: FakeAirflow,
    *,
    min_age: float = 0.0,
    records: MemoryOwnerRecords | None = None,
) -> tuple[dict[str, Any], list[str]]:
    reaping, doomed = decide(
        pods,
        [DAG],
        airflow,
        deployment=HERE,
        owner_records=records or MemoryOwnerRecords(),
        now=NOW,
        min_age=min_age,
    )
    return reaping.as_dict(), [d.pod.id for d in doomed]


# -- finding 1: Airflow's answers are read as the Task SDK hands them over --------------------------


def test_a_succeeded_create_keeps_its_pod_while_its_run_is_running_as_the_sdk_says_it() -> None:
    """Finding 1: str(DagRunState.RUNNING) is "DagRunState.RUNNING"; the old reaper deleted this pod."""
    airflow = FakeAirflow().ti(DAG, "r1", "create", TI.SUCCESS).run(DAG, "r1", DagRunState.RUNNING)
    report, doomed = judge([pod("p1", name_of("r1"))], airflow)
    assert doomed == []
    assert "succeeded and its run is running" in report["spared"]["p1"]


@pytest.mark.parametrize("run", [DagRunState.SUCCESS, DagRunState.FAILED])
def test_a_succeeded_create_in_a_finished_run_is_reaped(run: DagRunState) -> None:
    airflow = FakeAirflow().ti(DAG, "r1", "create", TI.SUCCESS).run(DAG, "r1", run)
    report, doomed = judge([pod("p1", name_of("r1"))], airflow)
    assert doomed == ["p1"]
    assert f"its run is {run.value}" in report["deleted"]["p1"]


@pytest.mark.parametrize("as_text", [False, True], ids=["enum", "text"])
@pytest.mark.parametrize(
    "state",
    [
        TI.RUNNING,
        TI.DEFERRED,
        TI.UP_FOR_RETRY,
        TI.UP_FOR_RESCHEDULE,
        TI.QUEUED,
        TI.SCHEDULED,
        TI.RESTARTING,
        None,
    ],
)
def test_the_pod_of_a_live_task_instance_is_spared(state: TaskInstanceState | None, as_text: bool) -> None:
    airflow = FakeAirflow(as_text=as_text).ti(DAG, "r1", "create", state)
    report, doomed = judge([pod("p1", name_of("r1"))], airflow)
    assert doomed == []
    assert "p1" in report["spared"]


@pytest.mark.parametrize("as_text", [False, True], ids=["enum", "text"])
@pytest.mark.parametrize("state", [TI.FAILED, TI.UPSTREAM_FAILED, TI.SKIPPED, TI.REMOVED])
def test_the_pod_of_a_dead_task_instance_is_deleted(state: TaskInstanceState, as_text: bool) -> None:
    airflow = FakeAirflow(as_text=as_text).ti(DAG, "r1", "create", state)
    report, doomed = judge([pod("p1", name_of("r1"))], airflow)
    assert doomed == ["p1"]
    assert f"is {state.value}" in report["deleted"]["p1"]


@pytest.mark.parametrize(
    ("given", "read"),
    [
        (DagRunState.RUNNING, "running"),
        (DagRunStateResult(state=DagRunState.QUEUED), "queued"),
        (TI.UP_FOR_RETRY, "up_for_retry"),
        ("DagRunState.RUNNING", "running"),
        (" success ", "success"),
        ("awaiting_input", "awaiting_input"),
        (None, None),
    ],
)
def test_every_form_of_a_state_reads_as_its_plain_value(given: object, read: str | None) -> None:
    assert airflow_state(given) == read


@pytest.mark.parametrize(
    "answer",
    [SERVER_ERROR, ErrorResponse(error=ErrorType.GENERIC_ERROR), 42, ["running"]],
)
def test_an_answer_that_is_no_state_is_unreadable_not_an_attribute_error(answer: object) -> None:
    with pytest.raises(UnreadableAnswer):
        airflow_state(answer)
    with pytest.raises(UnreadableAnswer):
        read_task_states(answer)


def test_task_states_read_from_the_sdk_result() -> None:
    result = TaskStatesResult(task_states={"r1": {"a": TI.RUNNING, "b": "failed", "c": None}})
    assert read_task_states(result) == {"r1": {"a": "running", "b": "failed", "c": None}}


def test_an_error_response_for_the_task_states_spares_every_pod_and_says_why() -> None:
    """Finding 23: an ErrorResponse gave an AttributeError; now the reaper spares and says why."""
    airflow = FakeAirflow(task_states_error=SERVER_ERROR).ti(DAG, "r1", "create", TI.FAILED)
    report, doomed = judge([pod("p1", name_of("r1")), pod("p2", name_of("gone"))], airflow)
    assert doomed == []
    assert "API_SERVER_ERROR" in report["spared"]["p1"]
    assert "could not read the task states of DAG train_dag" in report["spared"]["p2"]


def test_an_error_response_for_the_run_state_spares_the_pod() -> None:
    airflow = FakeAirflow(run_state_error=SERVER_ERROR).ti(DAG, "r1", "create", TI.SUCCESS)
    report, doomed = judge([pod("p1", name_of("r1"))], airflow)
    assert doomed == []
    assert "could not read the state of run train_dag / r1" in report["spared"]["p1"]


def test_a_state_this_provider_does_not_know_spares_the_pod() -> None:
    airflow = FakeAirflow()
    airflow.tis[DAG, "r1", "create", -1] = "paused_for_tea"  # type: ignore[assignment]
    report, doomed = judge([pod("p1", name_of("r1"))], airflow)
    assert doomed == []
    assert "does not know" in report["spared"]["p1"]


def test_a_pod_whose_run_is_gone_from_airflow_is_deleted() -> None:
    report, doomed = judge(
        [pod("p1", name_of("deleted-run"))], FakeAirflow().ti(DAG, "r1", "create", TI.RUNNING)
    )
    assert doomed == ["p1"]
    assert "no task instance" in report["deleted"]["p1"]


def test_run_states_are_asked_only_for_pods_of_succeeded_creates() -> None:
    airflow = FakeAirflow()
    for i in range(50):
        airflow.ti(DAG, f"r{i}", "create", TI.SUCCESS).run(DAG, f"r{i}", DagRunState.SUCCESS)
    judge([pod("p7", name_of("r7"))], airflow)
    assert [q for kind, q in airflow.asked if kind == "run_state"] == [{"dag_id": DAG, "run_id": "r7"}]


# -- finding 3: only this deployment's pods ----------------------------------------------------------


def test_the_pods_of_another_deployment_are_ignored() -> None:
    """Finding 3: staging's reaper deleted prod's pods of the same DAG and run id."""
    airflow = FakeAirflow().ti(DAG, "scheduled__1", "create", TI.FAILED)
    theirs = pod("theirs", name_of("scheduled__1", deployment="staging"))
    mine = pod("mine", name_of("scheduled__1"))
    report, doomed = judge([theirs, mine], airflow)
    assert doomed == ["mine"]
    assert report["ignored"]["theirs"].endswith("ignored: another deployment")


# -- finding 17: create[1] and create_1 share a key ---------------------------------------------------


@pytest.mark.parametrize("mapped_first", [True, False])
def test_a_mapped_and_an_unmapped_task_sharing_a_key_are_judged_each_by_its_own_state(
    mapped_first: bool,
) -> None:
    """Finding 17: Airflow answers one key ``create_1`` for both; the later one's state won for both pods."""
    airflow = FakeAirflow()
    mapped, unmapped = (DAG, "r1", "create", 1), (DAG, "r1", "create_1", -1)
    for key, state in [(mapped, TI.RUNNING), (unmapped, TI.FAILED)][:: 1 if mapped_first else -1]:
        airflow.tis[key] = state
    pods = [pod("training", name_of("r1", "create", 1)), pod("failed", name_of("r1", "create_1"))]
    report, doomed = judge(pods, airflow)
    assert doomed == ["failed"]
    assert "train_dag / r1 / create[1] is running" in report["spared"]["training"]
    asked = [q for kind, q in airflow.asked if kind == "task_states" and q["task_ids"]]
    assert {"dag_id": DAG, "run_ids": ["r1"], "task_ids": ["create"], "map_index": 1} in asked


def test_a_pod_matched_through_a_shared_key_is_spared_when_the_precise_answer_fails() -> None:
    airflow = FakeAirflow(task_states_error=SERVER_ERROR, task_states_error_on="precise")
    airflow.ti(DAG, "r1", "create", TI.FAILED, map_index=1).ti(DAG, "r1", "create_1", TI.RUNNING)
    report, doomed = judge([pod("p1", name_of("r1", "create", 1))], airflow)
    assert doomed == []
    assert "API_SERVER_ERROR" in report["spared"]["p1"]


def test_mapped_task_instances_are_told_apart_by_map_index() -> None:
    airflow = FakeAirflow().ti(DAG, "r1", "create", TI.DEFERRED, 0).ti(DAG, "r1", "create", TI.FAILED, 1)
    _, doomed = judge([pod("p0", name_of("r1", map_index=0)), pod("p1", name_of("r1", map_index=1))], airflow)
    assert doomed == ["p1"]


# -- finding 7: user-named pods with an ownership record ----------------------------------------------


def record(name: str, *, state_of: str = "r1", pod_id: str | None = None, deployment: str = HERE) -> PodOwner:
    return PodOwner(deployment, DAG, state_of, "create", -1, name, pod_id)


def test_a_user_named_pod_with_a_record_of_this_deployment_is_judged_like_a_derived_one() -> None:
    """Finding 7: user-named pods had no backstop at all."""
    records = MemoryOwnerRecords()
    records.put(record("failed-pod", state_of="r1", pod_id="p1"))
    records.put(record("live-pod", state_of="r2", pod_id="p2"))
    records.put(record("orphan-pod", state_of="deleted-run", pod_id="p3"))
    airflow = FakeAirflow().ti(DAG, "r1", "create", TI.FAILED).ti(DAG, "r2", "create", TI.DEFERRED)
    pods = [pod("p1", "failed-pod"), pod("p2", "live-pod"), pod("p3", "orphan-pod")]
    report, doomed = judge(pods, airflow, records=records)
    assert doomed == ["p1", "p3"]
    assert "train_dag / r1 / create is failed" in report["deleted"]["p1"]
    assert "is deferred" in report["spared"]["p2"]
    assert "no task instance" in report["deleted"]["p3"]


def test_user_named_pods_without_a_record_of_this_deployment_are_left_alone() -> None:
    records = MemoryOwnerRecords()
    records.put(record("staging-pod", deployment="staging"))
    airflow = FakeAirflow().ti(DAG, "r1", "create", TI.FAILED)
    report, doomed = judge([pod("p1", "my-own-pod"), pod("p2", "staging-pod")], airflow, records=records)
    assert doomed == []
    assert report == {"deleted": {}, "spared": {}, "ignored": {}}


def test_a_user_named_pod_the_record_does_not_name_is_spared() -> None:
    records = MemoryOwnerRecords()
    records.put(record("my-pod", pod_id="p1"))
    airflow = FakeAirflow().ti(DAG, "r1", "create", TI.FAILED)
    report, doomed = judge([pod("p1", "my-pod"), pod("p9", "my-pod")], airflow, records=records)
    assert doomed == ["p1"]
    assert "names pod p1, not this one" in report["spared"]["p9"]


def pending(name: str, written_ago: float) -> PodOwner:
    """A record written before a create request ``written_ago`` seconds before NOW (no pod id yet)."""
    return replace(record(name), written_at=(NOW - timedelta(seconds=written_ago)).timestamp(), window=340.0)


def test_a_record_without_a_pod_id_judges_only_the_one_pod_created_in_its_window() -> None:
    """Adversary B5: a pod_id-None record matched every pod of its name, a person's made later too."""
    records = MemoryOwnerRecords()
    records.put(pending("stale", written_ago=7200))  # a SIGKILL between the record and the POST
    records.put(pending("lost-answer", written_ago=3605))  # its pod made 5 s after the record
    records.put(pending("twice", written_ago=3605))
    records.put(record("older"))  # an older version's record: no pod id, no time
    airflow = FakeAirflow().ti(DAG, "r1", "create", TI.FAILED)
    pods = [
        pod("persons", "stale", age=3600),
        pod("ours", "lost-answer", age=3600),
        pod("t1", "twice", age=3600),
        pod("t2", "twice", age=3590),
        pod("o1", "older"),
    ]
    report, doomed = judge(pods, airflow, records=records)
    assert doomed == ["ours"]
    assert "no pod of the name was created in its create's window" in report["spared"]["persons"]
    assert "a person must choose" in report["spared"]["t1"]
    assert "a person must choose" in report["spared"]["t2"]
    assert "older version" in report["spared"]["o1"]


def test_a_user_named_pod_of_a_succeeded_create_outlives_its_run() -> None:
    records = MemoryOwnerRecords()
    records.put(record("keep-me", pod_id="p1"))
    airflow = FakeAirflow().ti(DAG, "r1", "create", TI.SUCCESS).run(DAG, "r1", DagRunState.SUCCESS)
    report, doomed = judge([pod("p1", "keep-me")], airflow, records=records)
    assert doomed == []
    assert "you named the pod" in report["spared"]["p1"]


@pytest.mark.parametrize("run", [DagRunState.SUCCESS, DagRunState.FAILED])
def test_a_user_named_pod_whose_teardown_did_not_delete_it_is_deleted_once_its_run_is_over(
    run: DagRunState,
) -> None:
    """#outlives-run: its create had a teardown downstream (outlives_run False) that failed or never ran."""
    records = MemoryOwnerRecords()
    records.put(replace(record("given-back", pod_id="p1"), outlives_run=False))
    airflow = FakeAirflow().ti(DAG, "r1", "create", TI.SUCCESS).run(DAG, "r1", run)
    report, doomed = judge([pod("p1", "given-back")], airflow, records=records)
    assert doomed == ["p1"]
    assert "its teardown did not delete the pod" in report["deleted"]["p1"]


def test_a_user_named_pod_with_a_teardown_is_kept_while_its_run_goes_on() -> None:
    records = MemoryOwnerRecords()
    records.put(replace(record("given-back", pod_id="p1"), outlives_run=False))
    airflow = FakeAirflow().ti(DAG, "r1", "create", TI.SUCCESS).run(DAG, "r1", DagRunState.RUNNING)
    report, doomed = judge([pod("p1", "given-back")], airflow, records=records)
    assert doomed == []
    assert "its run is running" in report["spared"]["p1"]


def test_a_record_that_cannot_be_read_spares_the_pod() -> None:
    class Broken(MemoryOwnerRecords):
        def get(self, deployment: str, name: str) -> PodOwner | None:
            raise RuntimeError("the API server is away")

    report, doomed = judge([pod("p1", "my-pod")], FakeAirflow(), records=Broken())
    assert doomed == []
    assert "could not read its ownership record" in report["spared"]["p1"]


# -- what is never judged -------------------------------------------------------------------------------


def test_user_named_other_dag_young_terminating_and_old_scheme_pods_are_not_deleted() -> None:
    pods = [
        pod("mine", "my-own-pod"),
        pod("other", name_of("r1", dag_id="another_dag")),
        pod("young", name_of("r9"), age=30),
        pod("going", name_of("r9"), status="DELETING"),
        pod("old", "airflow-create-3f9a1c8d2e4b7a10c5"),  # a name of the earlier 16-hex scheme
    ]
    report, doomed = judge(pods, FakeAirflow().ti(DAG, "r1", "create", TI.FAILED), min_age=300)
    assert doomed == []
    assert set(report["ignored"]) == {"other"}
    assert set(report["spared"]) == {"young"}


@pytest.mark.parametrize(("text", "value"), [("true", True), ("False", False), ("", False), (True, True)])
def test_dry_run_accepts_what_a_template_renders(text: object, value: bool) -> None:
    assert flag(text) is value


def test_dry_run_refuses_anything_else() -> None:
    with pytest.raises(PrimeConfigError, match="dry_run"):
        flag("perhaps")


@pytest.mark.parametrize(
    ("given", "ids"),
    [
        ("train_dag", ["train_dag"]),
        (["a", "b"], ["a", "b"]),
        ("a, b", ["a", "b"]),
        ("['a', 'b']", ["a", "b"]),
        ('["a"]', ["a"]),
    ],
)
def test_dag_ids_as_given_or_rendered(given: object, ids: list[str]) -> None:
    assert dag_id_list(given) == ids


@pytest.mark.parametrize("given", [None, [], "", [None], ["a", ""], 7, "[oops"])
def test_dag_ids_that_name_no_dag_are_a_clear_config_error(given: object) -> None:
    """Finding 23: ``dag_ids=None`` gave a bare TypeError."""
    with pytest.raises(PrimeConfigError, match="dag_ids must name at least one DAG"):
        dag_id_list(given)
