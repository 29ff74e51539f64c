"""Which pods the create operator owns, adopts, replaces and deletes, against the simulator over HTTP.

Findings 6 (create side), 7, 8, 9, 10, 13, 14 and 22 of issue 19: ownership comes from the derived
name or from the record the operator wrote itself, never from timestamps; a retry never strands,
doubles or re-adopts a broken pod of its own.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
from airflow.sdk import DAG

from airflow_provider_prime._compat import AirflowException, AirflowSensorTimeout
from airflow_provider_prime.deployment import deployment_id
from airflow_provider_prime.exceptions import PrimeConfigError, PrimeTransientError
from airflow_provider_prime.models import Pod
from airflow_provider_prime.operators.ownership import MemoryOwnerRecords, PodOwner, create_window
from airflow_provider_prime.operators.pod import PrimeCreatePodOperator
from airflow_provider_prime.operators.pod_names import derived_pod_name
from airflow_provider_prime.testing import Fault, provisioned_pod, ready_pod
from tests.operators.conftest import (
    FAST_BOOT,
    SLOW_BOOT,
    TaskDeferralTimeout,
    TaskDeferred,
    TaskInstance,
    XComs,
    account,
    billing_after_deletes,
    billing_pods,
    create,
    make_context,
)

NAME = derived_pod_name("train_dag", "manual__1", "create_pod", -1, deployment=deployment_id())


def me(name: str, pod_id: str | None = None, **fields: Any) -> PodOwner:
    """The record the default task instance writes for ``name``."""
    identity = {"dag_id": "train_dag", "run_id": "manual__1", "task_id": "create_pod", "map_index": -1}
    return PodOwner(deployment=deployment_id(), name=name, pod_id=pod_id, **{**identity, **fields})


def plain(record: PodOwner | None) -> PodOwner | None:
    """``record`` without the times it carries (when it was written, its create's window)."""
    return None if record is None else replace(record, written_at=None, window=None)


# -- finding 6: the verdict goes to XCom with the id ---------------------------------------------


def test_the_ownership_verdict_is_published_with_the_pod_id(lifecycle_sim):
    sim = lifecycle_sim(SLOW_BOOT)
    sim.add_pod(ready_pod("pod-shared", ready_at=0.0, name="shared-box"))
    xcoms = XComs()
    own, borrowing = TaskInstance(xcoms=xcoms), TaskInstance(task_id="use_box", xcoms=xcoms)

    create(wait_for_ready=False).execute(make_context(own))
    create(task_id="use_box", name="shared-box", wait_for_ready=False).execute(make_context(borrowing))

    assert own.xcom["pod_owned"] == {own.xcom["pod_id"]: True}
    assert borrowing.xcom["pod_owned"] == {"pod-shared": False}
    create(wait_for_ready=False).on_kill()  # nothing known to this process: nothing deleted
    assert account(sim)["deleted"] == {}


# -- findings 7 and 10: the record the operator writes is what makes a user-named pod its own ----


def test_a_user_named_pod_gets_its_record_before_the_create_and_loses_it_with_the_pod(
    lifecycle_sim, monkeypatch, owner_records
):
    sim = lifecycle_sim(SLOW_BOOT)
    operator = create(name="my-box", timeout=0.3)
    at_the_post: list[PodOwner | None] = []
    real_create = operator.hook.create_pod

    def recording_create(request: Any) -> Pod:
        at_the_post.append(owner_records.get(deployment_id(), "my-box"))
        pod = real_create(request)
        at_the_post.append(owner_records.get(deployment_id(), "my-box"))
        return pod

    monkeypatch.setattr(operator.hook, "create_pod", recording_create)
    with pytest.raises(AirflowSensorTimeout):
        operator.execute(make_context())

    (pod_id,) = account(sim)["pods"]
    before = at_the_post[0]
    assert before is not None
    assert plain(before) == me("my-box")
    assert before.written_at is not None
    assert before.window == create_window(operator.hook.get_settings())
    assert owner_records.get(deployment_id(), "my-box") is None  # deleted with the pod
    assert account(sim)["deleted"] == {"my-box": 1}
    assert billing_after_deletes(sim) == []
    assert pod_id


def test_the_record_carries_the_pod_id_after_the_create(lifecycle_sim, owner_records):
    sim = lifecycle_sim(SLOW_BOOT)
    ti = TaskInstance()
    create(name="my-box", wait_for_ready=False).execute(make_context(ti))
    assert plain(owner_records.get(deployment_id(), "my-box")) == me("my-box", ti.xcom["pod_id"])
    assert ti.xcom["pod_owned"] == {ti.xcom["pod_id"]: True}
    create(name="my-box", wait_for_ready=False).hook.delete_pod(ti.xcom["pod_id"])
    assert billing_after_deletes(sim) == []


def test_a_cleared_run_still_owns_the_pod_its_first_try_created(lifecycle_sim):
    """Finding 10: clearing a run resets its start_date; timestamps disowned the run's own pod."""
    sim = lifecycle_sim(SLOW_BOOT)
    create(name="my-box", wait_for_ready=False).execute(make_context())  # then the worker died
    cleared = make_context(started=account_now_plus_minutes(5))
    with pytest.raises(AirflowSensorTimeout):
        create(name="my-box", timeout=0.3).execute(cleared)
    assert account(sim)["created"] == {"my-box": 1}
    assert account(sim)["deleted"] == {"my-box": 1}
    assert billing_after_deletes(sim) == []


def account_now_plus_minutes(minutes: int) -> Any:
    from datetime import datetime, timedelta, timezone

    return datetime.now(timezone.utc) + timedelta(minutes=minutes)


def test_a_pod_of_the_name_created_during_the_run_by_someone_else_is_not_owned(lifecycle_sim, owner_records):
    """Finding 10: a pod younger than the run is not therefore this task instance's."""
    sim = lifecycle_sim(SLOW_BOOT)
    other = TaskInstance(dag_id="other_dag", run_id="manual__7", task_id="make_box")
    create(task_id="make_box", name="my-box", wait_for_ready=False).execute(make_context(other))
    with pytest.raises(AirflowSensorTimeout):
        create(name="my-box", timeout=0.3).execute(make_context())
    assert account(sim)["deleted"] == {}  # the other DAG's pod: borrowed, kept
    assert billing_pods(sim) == [other.xcom["pod_id"]]
    create().hook.delete_pod(other.xcom["pod_id"])
    assert billing_after_deletes(sim) == []


def mapped_create(name: Any = None, **partial: Any) -> tuple[DAG, Any]:
    with DAG("train_dag", schedule=None) as dag:
        if name is not None:
            partial["name"] = name
        mapped = PrimeCreatePodOperator.partial(
            task_id="create_pod", gpu_type="H100_80GB", wait_for_ready=False, **partial
        ).expand(gpu_count=[1, 1])
    return dag, mapped


@pytest.mark.parametrize("where", ["name", "request"])
def test_a_static_name_on_a_mapped_create_is_refused_before_anything_is_rented(lifecycle_sim, where):
    sim = lifecycle_sim()
    if where == "name":
        _, mapped = mapped_create(name="box")
    else:
        request = {"cloudId": "sim-h100-80gb-1x", "gpuType": "H100_80GB", "gpuCount": 1, "name": "box"}
        _, mapped = mapped_create(request=request)
    operator = mapped.unmap({"gpu_count": 1})
    with pytest.raises(PrimeConfigError, match=r"'box' is the same for every map index.*map_index"):
        operator.execute(make_context(TaskInstance(map_index=1)))
    assert account(sim)["created"] == {}


def test_a_mapped_create_with_a_name_per_index_or_a_derived_one_runs(lifecycle_sim):
    sim = lifecycle_sim(SLOW_BOOT)
    _, mapped = mapped_create(name="box-{{ ti.map_index }}")
    for index in (0, 1):
        operator = mapped.unmap({"gpu_count": 1})
        operator.name = f"box-{index}"  # as rendered
        operator.execute(make_context(TaskInstance(map_index=index)))
    _, derived = mapped_create()
    for index in (0, 1):
        derived.unmap({"gpu_count": 1}).execute(make_context(TaskInstance(map_index=index)))
    assert len(account(sim)["created"]) == 4
    for pod_id in billing_pods(sim):
        create().hook.delete_pod(pod_id)
    assert billing_after_deletes(sim) == []


def test_a_templated_name_that_renders_alike_for_two_map_indexes_is_refused_by_the_record(lifecycle_sim):
    sim = lifecycle_sim(SLOW_BOOT)
    first = TaskInstance(map_index=0)
    create(name="box", wait_for_ready=False).execute(make_context(first))
    with pytest.raises(PrimeConfigError, match="belongs to map index 0"):
        create(name="box", wait_for_ready=False).execute(make_context(TaskInstance(map_index=1)))
    assert account(sim)["created"] == {"box": 1}
    create().hook.delete_pod(first.xcom["pod_id"])
    assert billing_after_deletes(sim) == []


# -- findings 8 and 9: every extra own pod is deleted, and reported --------------------------------


def test_adopting_a_derived_name_deletes_the_extra_live_pods_of_it(lifecycle_sim, logs):
    sim = lifecycle_sim(SLOW_BOOT)
    sim.add_pod(ready_pod("pod-first", ready_at=0.0, name=NAME))
    sim.add_pod(ready_pod("pod-second", ready_at=0.0, name=NAME))  # a lost create's twin
    ti = TaskInstance()
    create(wait_for_ready=False).execute(make_context(ti))

    kept = ti.xcom["pod_id"]
    (extra,) = {"pod-first", "pod-second"} - {kept}
    assert account(sim)["created"] == {}
    assert billing_after_deletes(sim) == [kept]
    assert any(extra in e["event"] and "Deleting" in e["event"] for e in logs)
    create().hook.delete_pod(kept)
    assert billing_after_deletes(sim) == []


def test_a_failed_create_deletes_every_live_pod_of_its_name_and_reports_each(
    lifecycle_sim, monkeypatch, logs
):
    sim = lifecycle_sim(SLOW_BOOT)
    operator = create()
    real_create = operator.hook.create_pod

    def twice_then_lost(request: Any) -> Pod:
        real_create(request)  # an earlier attempt the server made, though it seemed lost
        real_create(request)
        raise PrimeTransientError("the create may not have happened")

    monkeypatch.setattr(operator.hook, "create_pod", twice_then_lost)
    with pytest.raises(PrimeTransientError):
        operator.execute(make_context())

    assert account(sim)["created"] == {NAME: 2}
    assert account(sim)["deleted"] == {NAME: 2}
    deleting = [e["event"] for e in logs if e["event"].startswith("Deleting pod")]
    assert len(deleting) == 2
    assert billing_after_deletes(sim) == []


# -- finding 13: if_exists="fail" never strands the task instance's own pod ------------------------


@pytest.mark.parametrize("name", [None, "my-box"])
def test_if_exists_fail_adopts_the_pod_of_an_earlier_try_of_the_same_task_instance(lifecycle_sim, name):
    sim = lifecycle_sim(SLOW_BOOT)
    first, retry = TaskInstance(), TaskInstance()
    create(name=name, wait_for_ready=False, if_exists="fail").execute(make_context(first))
    create(name=name, wait_for_ready=False, if_exists="fail").execute(make_context(retry))
    assert retry.xcom["pod_id"] == first.xcom["pod_id"]
    assert retry.xcom["pod_owned"] == {first.xcom["pod_id"]: True}
    assert len(account(sim)["pods"]) == 1
    create().hook.delete_pod(first.xcom["pod_id"])
    assert billing_after_deletes(sim) == []


# -- finding 14: Airflow's deferral timeout, with the pod unreadable -------------------------------


def deferred(operator: PrimeCreatePodOperator, ti: TaskInstance) -> None:
    with pytest.raises(TaskDeferred):
        operator.execute(make_context(ti))


@pytest.mark.parametrize(
    ("prepare", "options"),
    [
        ("created", {"name": "my-box"}),  # a user-named pod this task created
        ("borrowed", {"name": "shared-box", "terminate_preexisting": True}),
    ],
)
def test_the_deferral_timeout_deletes_the_pod_even_when_it_cannot_be_read(lifecycle_sim, prepare, options):
    sim = lifecycle_sim(SLOW_BOOT)
    if prepare == "borrowed":
        sim.add_pod(provisioned_pod("pod-shared", SLOW_BOOT, name="shared-box"))
    ti = TaskInstance()
    deferred(create(deferrable=True, **options), ti)
    pod_id = ti.xcom["pod_id"]
    sim.inject(Fault.server_error(503, method="GET", path=f"/api/v1/pods/{pod_id}", times=100))

    resumed = create(deferrable=True, **options)  # a new worker process: the XCom and the pod
    with pytest.raises(TaskDeferralTimeout):
        resumed.resume_execution("__fail__", {"error": "Trigger timeout"}, make_context(ti))
    assert account(sim)["deleted"] == {options["name"]: 1}
    assert billing_after_deletes(sim) == []


def test_the_deferral_timeout_keeps_a_borrowed_pod(lifecycle_sim):
    sim = lifecycle_sim(SLOW_BOOT)
    sim.add_pod(provisioned_pod("pod-shared", SLOW_BOOT, name="shared-box"))
    ti = TaskInstance()
    deferred(create(deferrable=True, name="shared-box"), ti)
    with pytest.raises(TaskDeferralTimeout):
        create(deferrable=True, name="shared-box").resume_execution(
            "__fail__", {"error": "Trigger timeout"}, make_context(ti)
        )
    assert account(sim)["deleted"] == {}
    create().hook.delete_pod("pod-shared")
    assert billing_after_deletes(sim) == []


def test_a_borrowed_pod_with_terminate_preexisting_is_deleted_by_the_triggers_on_kill(lifecycle_sim):
    sim = lifecycle_sim(SLOW_BOOT)
    sim.add_pod(provisioned_pod("pod-shared", SLOW_BOOT, name="shared-box"))
    ti = TaskInstance()
    with pytest.raises(TaskDeferred) as caught:
        create(deferrable=True, name="shared-box", terminate_preexisting=True).execute(make_context(ti))
    assert caught.value.trigger.serialize()[1]["terminate_on_kill"] is True
    create().hook.delete_pod("pod-shared")
    assert billing_after_deletes(sim) == []


# -- finding 22: a retry replaces its own broken pod -----------------------------------------------


@pytest.mark.parametrize("state", ["ERROR", "STOPPED", "installation ERROR"])
@pytest.mark.parametrize("name", [None, "my-box"])
def test_a_retry_replaces_its_own_broken_pod_with_a_fresh_one(lifecycle_sim, state, name):
    sim = lifecycle_sim(FAST_BOOT)
    first = TaskInstance()
    create(name=name, wait_for_ready=False).execute(make_context(first))
    broken = first.xcom["pod_id"]
    if state == "installation ERROR":
        sim.set_pod_state(broken, "ACTIVE", installation_status="ERROR", installation_failure="pip failed")
    else:
        sim.set_pod_state(broken, state)

    retry = TaskInstance()
    handover = create(name=name).execute(make_context(retry))  # ready: a fresh pod

    assert retry.xcom["pod_id"] != broken
    assert set(handover) == {retry.xcom["pod_id"]}
    assert account(sim)["pods"][broken]["deleted"]
    assert billing_after_deletes(sim) == [retry.xcom["pod_id"]]
    create().hook.delete_pod(retry.xcom["pod_id"])
    assert billing_after_deletes(sim) == []


def test_a_broken_borrowed_pod_is_not_deleted(lifecycle_sim, owner_records):
    sim = lifecycle_sim(SLOW_BOOT)
    sim.add_pod(ready_pod("pod-shared", ready_at=0.0, name="shared-box"))
    sim.set_pod_state("pod-shared", "ERROR")
    with pytest.raises(Exception, match="ERROR"):
        create(name="shared-box").execute(make_context())
    assert account(sim)["deleted"] == {}
    assert isinstance(owner_records, MemoryOwnerRecords)
    assert owner_records.texts == {}  # a borrowed pod gets no record
    create().hook.delete_pod("pod-shared")
    assert billing_after_deletes(sim) == []


# -- adversary B1-B6: a user-named pod is this task instance's only on proof -------------------------


def pending_record(written_ago: float, **fields: Any) -> PodOwner:
    """The record an earlier try wrote before its create request ``written_ago`` seconds ago."""
    window = create_window(create().hook.get_settings())
    return replace(me("my-box", **fields), written_at=time.time() - written_ago, window=window)


def test_a_retry_borrows_a_pod_made_after_its_stale_records_window_and_drops_the_record(
    lifecycle_sim, owner_records
):
    """B4 (SIGKILL between the record and the POST): the record must not claim a person's later pod."""
    sim = lifecycle_sim(SLOW_BOOT)
    owner_records.put(pending_record(written_ago=3600))
    sim.add_pod(ready_pod("persons-pod", ready_at=36_000.0, name="my-box"))
    ti = TaskInstance()
    with pytest.raises(AirflowSensorTimeout):
        create(name="my-box", timeout=0.3).execute(make_context(ti))
    assert ti.xcom["pod_owned"] == {"persons-pod": False}
    assert account(sim)["deleted"] == {}
    assert owner_records.get(deployment_id(), "my-box") is None  # it can claim nothing any more
    create().hook.delete_pod("persons-pod")
    assert billing_after_deletes(sim) == []


def test_a_retry_adopts_the_one_pod_its_lost_create_made_and_records_its_id(lifecycle_sim, owner_records):
    """The answer was lost and the try SIGKILLed: the one pod made in the window is the retry's own."""
    sim = lifecycle_sim(SLOW_BOOT)
    owner_records.put(pending_record(written_ago=2))
    sim.add_pod(ready_pod("ours", ready_at=36_000.0, name="my-box"))
    ti = TaskInstance()
    create(name="my-box", wait_for_ready=False).execute(make_context(ti))
    assert ti.xcom["pod_owned"] == {"ours": True}
    assert plain(owner_records.get(deployment_id(), "my-box")) == me("my-box", "ours")
    assert account(sim)["created"] == {}
    create().hook.delete_pod("ours")
    assert billing_after_deletes(sim) == []


def test_two_pods_a_lost_create_may_have_made_fail_the_retry_and_neither_is_deleted(
    lifecycle_sim, owner_records
):
    sim = lifecycle_sim(SLOW_BOOT)
    owner_records.put(pending_record(written_ago=2))
    sim.add_pod(ready_pod("pod-a", ready_at=36_000.0, name="my-box"))
    sim.add_pod(ready_pod("pod-b", ready_at=36_000.0, name="my-box"))
    with pytest.raises(PrimeConfigError, match=r"pod-a, pod-b\); none was adopted or deleted"):
        create(name="my-box").execute(make_context())
    assert account(sim)["deleted"] == {}
    assert account(sim)["created"] == {}
    for pod_id in ("pod-a", "pod-b"):
        create().hook.delete_pod(pod_id)
    assert billing_after_deletes(sim) == []


def test_a_lost_answer_of_a_user_named_create_deletes_the_one_pod_it_made(lifecycle_sim, monkeypatch):
    sim = lifecycle_sim(SLOW_BOOT)
    operator = create(name="my-box")
    real_create = operator.hook.create_pod

    def made_then_lost(request: Any) -> Pod:
        real_create(request)
        raise PrimeTransientError("the create may not have happened")

    monkeypatch.setattr(operator.hook, "create_pod", made_then_lost)
    with pytest.raises(PrimeTransientError):
        operator.execute(make_context())
    assert account(sim)["deleted"] == {"my-box": 1}
    assert billing_after_deletes(sim) == []


def test_a_kill_before_the_create_was_sent_deletes_no_pod_of_the_name(lifecycle_sim, monkeypatch):
    """B2 before the POST: on_kill looked the name up and deleted a pod that could only be another's."""
    sim = lifecycle_sim(SLOW_BOOT)
    operator = create(name="my-box")
    real_create = operator.hook.create_pod

    def someone_creates_then_killed_before_sending(request: Any) -> Pod:
        sim.add_pod(ready_pod("persons-pod", ready_at=36_000.0, name="my-box"))
        operator.on_kill()  # the SIGTERM lands before the hook sends anything
        return real_create(request)  # the task goes on where it was: the POST goes out

    monkeypatch.setattr(operator.hook, "create_pod", someone_creates_then_killed_before_sending)
    with pytest.raises(AirflowException, match="stopped"):
        operator.execute(make_context())
    assert account(sim)["pods"]["persons-pod"]["deleted"] is False
    assert account(sim)["deleted"] == {"my-box": 1}  # its own, deleted after the create returned
    assert billing_after_deletes(sim) == ["persons-pod"]
    create().hook.delete_pod("persons-pod")
    assert billing_after_deletes(sim) == []


def test_a_record_of_another_task_instance_is_replaced_only_when_stale(lifecycle_sim, owner_records):
    """B6: its pod is gone, or its create's window is over: the name is free again."""
    sim = lifecycle_sim(SLOW_BOOT)
    other = {"dag_id": "other_dag", "run_id": "manual__7", "task_id": "make_box"}
    owner_records.put(me("my-box", "long-gone-pod", **other))
    ti = TaskInstance()
    create(name="my-box", wait_for_ready=False).execute(make_context(ti))
    assert plain(owner_records.get(deployment_id(), "my-box")) == me("my-box", ti.xcom["pod_id"])
    create().hook.delete_pod(ti.xcom["pod_id"])
    assert billing_after_deletes(sim) == []

    owner_records.put(pending_record(written_ago=2, **other))  # its create is under way
    with pytest.raises(PrimeConfigError, match="other_dag / manual__7 / make_box: its create is under way"):
        create(name="my-box", wait_for_ready=False).execute(make_context())
    owner_records.put(pending_record(written_ago=3600, **other))  # a SIGKILL long ago
    ti = TaskInstance()
    create(name="my-box", wait_for_ready=False).execute(make_context(ti))
    assert plain(owner_records.get(deployment_id(), "my-box")) == me("my-box", ti.xcom["pod_id"])
    create().hook.delete_pod(ti.xcom["pod_id"])
    assert billing_after_deletes(sim) == []


def test_the_create_says_its_deployment_identity_and_where_it_comes_from(lifecycle_sim, monkeypatch, logs):
    sim = lifecycle_sim(SLOW_BOOT)
    monkeypatch.setenv("AIRFLOW__PRIME__DEPLOYMENT_ID", "prod")
    ti = TaskInstance()
    create(wait_for_ready=False).execute(make_context(ti))
    events = [e["event"] for e in logs]
    assert any(e.startswith("Deployment identity prod ([prime] deployment_id)") for e in events), events
    monkeypatch.delenv("AIRFLOW__PRIME__DEPLOYMENT_ID")
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "http://airflow-api:8080/execution/")
    create(task_id="again", wait_for_ready=False).execute(make_context(TaskInstance(task_id="again")))
    assert any(
        "derived from [core] execution_api_server_url 'http://airflow-api:8080/execution/'; set [prime] "
        "deployment_id" in e["event"]
        for e in logs
    )
    for pod_id in billing_pods(sim):
        create().hook.delete_pod(pod_id)
    assert billing_after_deletes(sim) == []


def test_the_verdict_is_pushed_before_the_pod_id(lifecycle_sim):
    """Found by the model test: a SIGKILL between the two pushes left a borrowed pod's id without
    its verdict, and the teardown read it as a plain id and deleted the user's pod."""
    sim = lifecycle_sim(SLOW_BOOT)
    sim.add_pod(ready_pod("pod-shared", ready_at=0.0, name="shared-box"))
    borrowing = TaskInstance(task_id="use_box")
    pushed: list[str] = []
    push = borrowing.xcom_push

    def killed_after_the_first_push(key: str, value: Any) -> None:
        if pushed:
            raise SystemExit("SIGKILL")  # the process is gone: no more effects
        pushed.append(key)
        push(key, value)

    borrowing.xcom_push = killed_after_the_first_push  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        create(task_id="use_box", name="shared-box", wait_for_ready=False).execute(make_context(borrowing))
    assert pushed == ["pod_owned"]
    assert borrowing.xcom == {"pod_owned": {"pod-shared": False}}
    assert account(sim)["deleted"] == {}
