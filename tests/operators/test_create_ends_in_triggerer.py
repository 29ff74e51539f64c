"""The create operator's successful deferred wait ends in the triggerer, over HTTP to the simulator.

The return value the trigger pushes is the one ``execute_complete`` returns (``price_hr`` in the
pod's entry); ``pod_id`` and ``pod_owned`` were pushed before deferring and nothing touches them; a
failed wait still resumes a worker, which deletes the pod. The triggerer's side is faked with the
Task SDK's own types (``tests/triggers/supervisor.py``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from airflow.sdk.bases.xcom import BaseXCom
from airflow.sdk.execution_time.comms import SetXCom
from airflow.triggers.base import TaskSuccessEvent, TriggerEvent

from airflow_provider_prime.deployment import deployment_id
from airflow_provider_prime.exceptions import PrimePodFailedError
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.operators.pod import PrimeCreatePodOperator
from airflow_provider_prime.operators.pod_names import derived_pod_name
from airflow_provider_prime.testing import CreateLifecycle
from airflow_provider_prime.triggers import task_end
from tests.operators.conftest import (
    TaskDeferred,
    TaskInstance,
    account,
    billing_after_deletes,
    create,
    make_context,
)
from tests.triggers.supervisor import TaskInstanceState, airflow_told

FAILURE = "pip could not build flash-attn: CUDA toolkit not found"
NAME = derived_pod_name("train_dag", "manual__1", "create_pod", -1, deployment=deployment_id())


@pytest.fixture(autouse=True)
def no_success_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    """No listener waits for task successes (Airflow's example plugin may be loaded in a test run);
    the tests that need one register it themselves."""
    monkeypatch.setattr(task_end, "success_listeners", lambda: False)


def deferral(operator: PrimeCreatePodOperator, ti: TaskInstance) -> TaskDeferred:
    with pytest.raises(TaskDeferred) as caught:
        operator.execute(make_context(ti))
    return caught.value


def only_event(trigger: Any) -> TriggerEvent:
    async def run() -> list[TriggerEvent]:
        return [event async for event in trigger.run()]

    (event,) = asyncio.run(run())
    return event


def test_the_ready_pod_ends_the_task_with_the_creates_return_value(lifecycle_sim, monkeypatch):
    sim = lifecycle_sim()
    ti = TaskInstance()
    deferred = deferral(create(deferrable=True, poll_interval=0.05), ti)
    pushed_before = dict(ti.xcom)
    assert set(pushed_before) == {"pod_id", "pod_owned", "offer"}  # offer: the chosen one and why
    trigger = deferred.trigger
    assert trigger.end_from_trigger is True
    supervisor = airflow_told(monkeypatch, trigger, TaskInstanceState.DEFERRED)

    event = only_event(trigger)

    assert isinstance(event, TaskSuccessEvent)
    (push,) = [q for q in supervisor.questions if isinstance(q, SetXCom)]
    assert push.key == "return_value"
    # What a worker would have returned from execute_complete with the plain event.
    _, kwargs = trigger.serialize()
    kwargs.pop("end_from_trigger")
    plain = only_event(type(trigger)(**kwargs))
    returned = create(deferrable=True).execute_complete(make_context(ti), plain.payload, **deferred.kwargs)
    assert BaseXCom.deserialize_value(push) == returned
    pod_id = pushed_before["pod_id"]
    assert returned[pod_id]["price_hr"] == pytest.approx(2.49)
    assert ti.xcom == pushed_before  # pod_id and pod_owned as pushed before deferring
    assert account(sim)["deleted"] == {}  # the pod is handed over, not deleted
    PrimeHook("prime_default").delete_pod(pod_id)  # what the teardown does
    assert billing_after_deletes(sim) == []


def test_a_failed_wait_resumes_a_worker_that_deletes_the_pod(lifecycle_sim, monkeypatch):
    sim = lifecycle_sim(CreateLifecycle(active_after=1, installed_after=2, installation_failure=FAILURE))
    ti = TaskInstance()
    deferred = deferral(create(deferrable=True, timeout=30, poll_interval=0.05), ti)
    supervisor = airflow_told(monkeypatch, deferred.trigger, TaskInstanceState.DEFERRED)

    event = only_event(deferred.trigger)

    assert type(event) is TriggerEvent
    assert not [q for q in supervisor.questions if isinstance(q, SetXCom)]
    with pytest.raises(PrimePodFailedError):
        create(deferrable=True).execute_complete(make_context(ti), event.payload, **deferred.kwargs)
    assert account(sim)["deleted"] == {NAME: 1}
    assert billing_after_deletes(sim) == []


def test_a_create_with_a_success_callback_resumes_a_worker(lifecycle_sim):
    """Airflow never runs the success callback of a task its trigger ended: the worker must."""
    sim = lifecycle_sim()
    ti = TaskInstance()
    deferred = deferral(create(deferrable=True, on_success_callback=lambda context: None), ti)
    assert deferred.trigger.end_from_trigger is False
    assert "price_hr" not in deferred.trigger.serialize()[1]
    PrimeHook("prime_default").delete_pod(ti.xcom["pod_id"])
    assert billing_after_deletes(sim) == []
