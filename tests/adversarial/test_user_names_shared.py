"""Attacks on user-named pods when someone else (another deployment on the same key, another DAG,
a person) has a live pod of the same name: nothing of theirs may be adopted as ours or deleted.

The other party's pod appears at the worst moment: while our create request is in flight (it was
invisible to our lookup before the POST, as a lagging list or a concurrent create makes it).
The interleaving is exact: our hook's ``create_pod`` is wrapped, and the other pod is created
over HTTP before our real POST goes out.
"""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk.api.datamodels._generated import TaskInstanceState

from airflow_provider_prime.deployment import deployment_id
from airflow_provider_prime.exceptions import PrimeConfigError, PrimeError
from airflow_provider_prime.models import Pod
from airflow_provider_prime.operators.reaper import PrimeReapPodsOperator
from airflow_provider_prime.testing import Fault
from tests.operators.conftest import (
    SLOW_BOOT,
    TaskInstance,
    account,
    billing_after_deletes,
    create,
    make_context,
)
from tests.operators.fake_airflow import FakeAirflow

try:
    from airflow.sdk.exceptions import AirflowTaskTimeout
except ImportError:  # Airflow 3.1
    from airflow.exceptions import AirflowTaskTimeout  # type: ignore[attr-defined,no-redef]

NAME = "shared-box"


def staging_creates_its_pod(monkeypatch: pytest.MonkeyPatch) -> str:
    """Deployment 'staging' (same Prime key) creates its own pod named NAME; its id."""
    with monkeypatch.context() as m:
        m.setenv("AIRFLOW__PRIME__DEPLOYMENT_ID", "staging")
        ti = TaskInstance(dag_id="train_dag", run_id="manual__1")
        create(name=NAME, wait_for_ready=False).execute(make_context(ti))
    pod_id = ti.xcom["pod_id"]
    assert isinstance(pod_id, str)
    return pod_id


def cleanup(sim: Any, *pod_ids: str) -> None:
    hook = create().hook
    for pod_id in pod_ids:
        hook.delete_pod(pod_id)
    assert billing_after_deletes(sim) == []


def test_a_lost_create_answer_never_deletes_another_deployments_pod_of_the_same_name(
    lifecycle_sim, monkeypatch
):
    sim = lifecycle_sim(SLOW_BOOT)
    monkeypatch.setenv("AIRFLOW__PRIME__DEPLOYMENT_ID", "prod")
    operator = create(name=NAME)
    real_create = operator.hook.create_pod
    theirs: list[str] = []

    def staging_first_then_lost(request: Any) -> Pod:
        theirs.append(staging_creates_its_pod(monkeypatch))  # after our lookup, before our POST
        sim.inject(Fault.answer_lost(method="POST", path="/api/v1/pods/"))
        return real_create(request)  # ours is made, its answer lost: two live pods of NAME

    monkeypatch.setattr(operator.hook, "create_pod", staging_first_then_lost)
    with pytest.raises(PrimeError):
        operator.execute(make_context())

    try:
        assert account(sim)["pods"][theirs[0]]["deleted"] is False, "prod deleted staging's pod"
    finally:
        live = [p for p, pod in account(sim)["pods"].items() if pod["billing"]]
        cleanup(sim, *live)


@pytest.mark.parametrize("kill", ["sigterm", "timeout"])
def test_a_kill_during_the_create_never_deletes_another_deployments_pod_of_the_same_name(
    lifecycle_sim, monkeypatch, kill
):
    sim = lifecycle_sim(SLOW_BOOT)
    monkeypatch.setenv("AIRFLOW__PRIME__DEPLOYMENT_ID", "prod")
    operator = create(name=NAME)
    real_create = operator.hook.create_pod
    theirs: list[str] = []

    def staging_first_then_killed(request: Any) -> Pod:
        theirs.append(staging_creates_its_pod(monkeypatch))
        pod = real_create(request)
        if kill == "timeout":
            raise AirflowTaskTimeout()
        operator.on_kill()
        return pod

    monkeypatch.setattr(operator.hook, "create_pod", staging_first_then_killed)
    with pytest.raises(BaseException):  # noqa: B017,PT011 - AirflowException or AirflowTaskTimeout
        operator.execute(make_context())
    if kill == "timeout":
        operator.on_kill()

    try:
        assert account(sim)["pods"][theirs[0]]["deleted"] is False, "prod deleted staging's pod"
    finally:
        live = [p for p, pod in account(sim)["pods"].items() if pod["billing"]]
        cleanup(sim, *live)


@pytest.mark.xfail(
    strict=True,
    reason="LIMIT (docs/lifecycle.md, 'Two deployments sharing a key'): staging's pod is created after "
    "prod's lookup and a moment before prod's POST, which is dropped; the hook adopts the one live pod "
    "of the name, and it is new since the lookup, unique and created inside prod's create window, "
    "exactly as prod's own pod would be if only the answer had been lost. Nothing a client can see "
    "tells them apart (the API has no idempotency key or labels), so prod claims it "
    "(operators/pod.py _created_own). Two deployments sharing a key must not create the same "
    "user-chosen name at the same moment.",
)
def test_a_create_that_never_arrived_does_not_make_another_deployments_pod_ours(lifecycle_sim, monkeypatch):
    sim = lifecycle_sim(SLOW_BOOT)
    monkeypatch.setenv("AIRFLOW__PRIME__DEPLOYMENT_ID", "prod")
    operator = create(name=NAME, timeout=0.3)
    real_create = operator.hook.create_pod
    theirs: list[str] = []

    def staging_first_then_dropped(request: Any) -> Pod:
        theirs.append(staging_creates_its_pod(monkeypatch))
        sim.inject(Fault.drop(method="POST", path="/api/v1/pods/"))  # ours never arrives
        return real_create(request)

    monkeypatch.setattr(operator.hook, "create_pod", staging_first_then_dropped)
    ti = TaskInstance()
    with pytest.raises(BaseException):  # noqa: B017,PT011 - whatever the wait ends with
        operator.execute(make_context(ti))

    try:
        assert account(sim)["created"] == {NAME: 1}  # only staging's
        assert ti.xcom.get("pod_owned") != {theirs[0]: True}, "prod claimed staging's pod as its own"
        assert account(sim)["pods"][theirs[0]]["deleted"] is False, "prod deleted staging's pod"
    finally:
        live = [p for p, pod in account(sim)["pods"].items() if pod["billing"]]
        cleanup(sim, *live)


def test_a_second_task_of_the_same_name_does_not_erase_the_first_tasks_backstop(
    lifecycle_sim, monkeypatch, owner_records
):
    sim = lifecycle_sim(SLOW_BOOT)
    first = TaskInstance(dag_id="other_dag", run_id="manual__7", task_id="make_box")
    operator = create(name=NAME, wait_for_ready=False)
    real_find = operator.hook.find_pods_by_name
    theirs: list[str] = []

    def other_task_creates_meanwhile(name: str) -> list[Pod]:
        found = real_find(name)  # our lookup has read the list...
        if not theirs:  # ...and the other DAG's task creates its pod of the name now
            create(task_id="make_box", name=NAME, wait_for_ready=False).execute(make_context(first))
            theirs.append(first.xcom["pod_id"])
        return found

    monkeypatch.setattr(operator.hook, "find_pods_by_name", other_task_creates_meanwhile)
    with pytest.raises(PrimeConfigError, match=r"in use by .*other_dag / manual__7 / make_box: its pod"):
        operator.execute(make_context())  # refused: writing its record would erase the other's

    try:
        # The other DAG's worker is SIGKILLed; its task instance fails. The backstop must judge its pod.
        answers = FakeAirflow().ti("other_dag", "manual__7", "make_box", TaskInstanceState.FAILED)
        reaper = PrimeReapPodsOperator(task_id="reap", dag_ids=["other_dag"], min_age=0)
        reaper.airflow_states, reaper.owner_records = answers, owner_records
        assert owner_records.get(deployment_id(), NAME) is not None
        assert theirs[0] in reaper.execute(make_context())["deleted"], "the other task's pod has no backstop"
    finally:
        live = [p for p, pod in account(sim)["pods"].items() if pod["billing"]]
        cleanup(sim, *live)
