"""A successful wait ends in the triggerer (``end_from_trigger``), over real HTTP to the simulator.

The triggerer's side is faked with the Task SDK's own types (``tests/triggers/supervisor.py``): a
``task_instance`` on the trigger and a supervisor channel that records what the trigger sends. Each
branch of :mod:`airflow_provider_prime.triggers.task_end` is here: the XCom pushed as a worker
pushes it and a bare ``TaskSuccessEvent``; and every fallback to today's event (no triggerer, a
refused push, a custom XCom backend, a failed wait, an operator that did not ask).
"""

from __future__ import annotations

import time
from typing import Any
from unittest import mock

import pytest
from airflow.sdk import Asset
from airflow.sdk.api.datamodels._generated import TaskInstanceState
from airflow.sdk.bases.xcom import BaseXCom
from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType
from airflow.sdk.execution_time import xcom as xcom_module
from airflow.sdk.execution_time.comms import ErrorResponse, SetXCom
from airflow.triggers.base import BaseTaskEndEvent, TaskSuccessEvent, TriggerEvent

from airflow_provider_prime import _compat
from airflow_provider_prime.readiness import READY_LINE
from airflow_provider_prime.sensors.pod_status import PodStatusSensor
from airflow_provider_prime.testing import fixed_pod, ready_pod
from airflow_provider_prime.triggers import task_end
from airflow_provider_prime.triggers.pod_lifecycle import OwnedPodTrigger
from airflow_provider_prime.triggers.pod_status import PodStatusTrigger

try:
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow 3.1
    from airflow.exceptions import TaskDeferred  # type: ignore[no-redef, attr-defined, unused-ignore]

from tests.triggers.supervisor import DAG_ID, RUN_ID, TASK_ID, FakeSupervisor, airflow_told

POLL = 0.05


@pytest.fixture(autouse=True)
def no_success_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    """No listener waits for task successes (Airflow's example plugin may be loaded in a test run);
    the tests that need one register it themselves."""
    monkeypatch.setattr(task_end, "success_listeners", lambda: False)


def status_trigger(pod_ids: list[str], **kwargs: Any) -> PodStatusTrigger:
    return PodStatusTrigger(pod_ids=pod_ids, deadline=time.time() + 30, poll_interval=POLL, **kwargs)


async def only_event(trigger: PodStatusTrigger) -> TriggerEvent:
    (event,) = [event async for event in trigger.run()]  # exactly one event, then run() returns
    return event


def pushes(supervisor: FakeSupervisor) -> list[SetXCom]:
    return [q for q in supervisor.questions if isinstance(q, SetXCom)]


@pytest.fixture
def ready(prime_simulator_factory, prime_connect):
    """A connected simulator whose pods ``a`` (one node) and ``b`` (two nodes) are ready."""
    sim = prime_simulator_factory(ready_pod("a", ready_at=0), ready_pod("b", ready_at=0, nodes=2))
    prime_connect(sim)
    return sim


class TestEndsInTheTriggerer:
    async def test_ready_pods_push_the_handover_as_a_worker_would_and_end_the_task(
        self, ready, monkeypatch, logs
    ):
        trigger = status_trigger(["a", "b"], end_from_trigger=True)
        supervisor = airflow_told(monkeypatch, trigger, TaskInstanceState.DEFERRED)

        event = await only_event(trigger)

        assert isinstance(event, TaskSuccessEvent)
        assert event.task_instance_state == TaskInstanceState.SUCCESS
        assert event.xcoms is None  # Airflow would store these JSON-encoded twice: pushed instead
        (push,) = pushes(supervisor)
        assert (push.key, push.dag_id, push.run_id, push.task_id, push.map_index) == (
            "return_value",
            DAG_ID,
            RUN_ID,
            TASK_ID,
            -1,
        )
        assert set(push.value) == {"a", "b"}
        assert len(push.value["b"]["ssh_connections"]) == 2
        assert push.mapped_length == 2  # what a worker sends for mapped downstream tasks
        # The success line the sensor logs when it resumes, now in the trigger's (= the task's) log.
        ready_lines = [e for e in logs if e["event"] == READY_LINE % "2/2 pods ready"]
        assert [e["log_level"] for e in ready_lines] == ["info"]

    async def test_the_xcom_is_what_the_sensors_execute_complete_returns(self, ready, monkeypatch):
        ended = status_trigger(["a", "b"], end_from_trigger=True)
        supervisor = airflow_told(monkeypatch, ended, TaskInstanceState.DEFERRED)
        await only_event(ended)
        (push,) = pushes(supervisor)

        resumed = await only_event(status_trigger(["a", "b"]))  # today's event, for a worker
        sensor = PodStatusSensor(task_id=TASK_ID, pod_ids=["a", "b"])
        returned = sensor.execute_complete({}, resumed.payload)

        assert BaseXCom.deserialize_value(push) == returned
        assert push.value == BaseXCom.serialize_value(returned)

    async def test_a_mapped_task_instance_pushes_no_mapped_length(self, ready, monkeypatch):
        trigger = status_trigger(["a"], end_from_trigger=True)
        supervisor = airflow_told(monkeypatch, trigger, TaskInstanceState.DEFERRED, map_index=3)
        assert isinstance(await only_event(trigger), TaskSuccessEvent)
        (push,) = pushes(supervisor)
        assert (push.map_index, push.mapped_length) == (3, None)  # as a worker: mapped, no TaskMap

    async def test_the_owned_pod_trigger_pushes_the_creates_return_value_with_the_price(
        self, ready, monkeypatch
    ):
        trigger = OwnedPodTrigger(
            pod_ids=["a"], deadline=time.time() + 30, poll_interval=POLL, end_from_trigger=True, price_hr=2.49
        )
        supervisor = airflow_told(monkeypatch, trigger, TaskInstanceState.DEFERRED)
        assert isinstance(await only_event(trigger), TaskSuccessEvent)
        (push,) = pushes(supervisor)
        assert push.value["a"]["price_hr"] == 2.49
        assert push.value["a"]["status"] == "ACTIVE"
        assert push.value["a"]["installation_status"] == "FINISHED"

    async def test_the_event_crosses_the_triggerers_channel_as_an_end_event(self, ready, monkeypatch):
        """The runner sends events to its supervisor as JSON; the end event must come back as one."""
        from airflow.triggers.base import DiscrimatedTriggerEvent
        from pydantic import TypeAdapter

        trigger = status_trigger(["a"], end_from_trigger=True)
        airflow_told(monkeypatch, trigger, TaskInstanceState.DEFERRED)
        event = await only_event(trigger)
        adapter: TypeAdapter[Any] = TypeAdapter(DiscrimatedTriggerEvent)
        received = adapter.validate_json(adapter.dump_json(event))
        assert isinstance(received, BaseTaskEndEvent)
        assert received.task_instance_state == TaskInstanceState.SUCCESS


class TestFallsBackToTodaysEvent:
    async def test_outside_a_triggerer_as_under_dags_test(self, ready, logs):
        """``airflow dags test`` runs the trigger in line, without a task instance, and would hand
        a ``TaskSuccessEvent``'s payload (the string "success") to ``execute_complete``."""
        event = await only_event(status_trigger(["a"], end_from_trigger=True))
        assert type(event) is TriggerEvent
        assert event.payload["status"] == "success"
        assert not [e for e in logs if e["event"].startswith("All pods ready") and e["log_level"] == "info"]

    async def test_when_the_operator_did_not_ask(self, ready, monkeypatch):
        trigger = status_trigger(["a"])
        supervisor = airflow_told(monkeypatch, trigger, TaskInstanceState.DEFERRED)
        event = await only_event(trigger)
        assert type(event) is TriggerEvent
        assert event.payload["status"] == "success"
        assert pushes(supervisor) == []

    @pytest.mark.parametrize(
        "refusal",
        [
            AirflowRuntimeError(ErrorResponse(error=ErrorType.API_SERVER_ERROR, detail={"status_code": 400})),
            ConnectionResetError("supervisor gone"),
        ],
        ids=["api-error", "channel-error"],
    )
    async def test_when_the_push_is_refused(self, ready, monkeypatch, logs, refusal):
        trigger = status_trigger(["a"], end_from_trigger=True)
        supervisor = airflow_told(monkeypatch, trigger, TaskInstanceState.DEFERRED)

        async def refuse(msg: Any) -> Any:
            supervisor.questions.append(msg)
            raise refusal

        monkeypatch.setattr(supervisor, "asend", refuse)
        event = await only_event(trigger)
        assert type(event) is TriggerEvent
        assert event.payload["status"] == "success"
        assert any("a worker resumes the task" in e["event"] for e in logs if e["log_level"] == "warning")

    async def test_with_a_custom_xcom_backend(self, ready, monkeypatch):
        class ObjectStoreXCom(BaseXCom):
            pass

        monkeypatch.setattr(xcom_module, "XCom", ObjectStoreXCom)
        trigger = status_trigger(["a"], end_from_trigger=True)
        supervisor = airflow_told(monkeypatch, trigger, TaskInstanceState.DEFERRED)
        event = await only_event(trigger)
        assert type(event) is TriggerEvent
        assert pushes(supervisor) == []

    async def test_on_an_airflow_that_cannot(self, ready, monkeypatch):
        monkeypatch.setattr(task_end, "TRIGGER_ENDS_TASK", False)
        trigger = status_trigger(["a"], end_from_trigger=True)
        supervisor = airflow_told(monkeypatch, trigger, TaskInstanceState.DEFERRED)
        assert type(await only_event(trigger)) is TriggerEvent
        assert pushes(supervisor) == []

    async def test_a_failed_wait_resumes_a_worker(self, prime_simulator_factory, prime_connect, monkeypatch):
        """A failure must run task code (the create deletes its pod, soft_fail skips): never ended here."""
        sim = prime_simulator_factory(fixed_pod("a", "TERMINATED"))
        prime_connect(sim)
        trigger = status_trigger(["a"], end_from_trigger=True)
        supervisor = airflow_told(monkeypatch, trigger, TaskInstanceState.DEFERRED)
        event = await only_event(trigger)
        assert type(event) is TriggerEvent
        assert event.payload["status"] == "failed"
        assert pushes(supervisor) == []

    async def test_a_timeout_resumes_a_worker(self, prime_simulator_factory, prime_connect, monkeypatch):
        sim = prime_simulator_factory(fixed_pod("a", "PROVISIONING"))
        prime_connect(sim)
        trigger = PodStatusTrigger(
            pod_ids=["a"], deadline=time.time() + 0.3, poll_interval=POLL, end_from_trigger=True
        )
        supervisor = airflow_told(monkeypatch, trigger, TaskInstanceState.DEFERRED)
        event = await only_event(trigger)
        assert type(event) is TriggerEvent
        assert event.payload["status"] == "timeout"
        assert pushes(supervisor) == []


class TestSerialization:
    def test_end_from_trigger_and_the_price_survive_a_round_trip(self):
        original = OwnedPodTrigger(
            pod_ids=["a"], deadline=1_900_000_000.0, end_from_trigger=True, price_hr=1.5
        )
        _, kwargs = original.serialize()
        assert (kwargs["end_from_trigger"], kwargs["price_hr"]) == (True, 1.5)
        again = OwnedPodTrigger(**kwargs)
        assert (again.end_from_trigger, again.price_hr) == (True, 1.5)
        assert again.serialize() == original.serialize()

    def test_a_trigger_that_does_not_end_the_task_serializes_as_before(self):
        """Kwargs an older release's trigger cannot take are left out when unused (rolling upgrades)."""
        _, kwargs = OwnedPodTrigger(pod_ids=["a"], deadline=1_900_000_000.0, price_hr=1.5).serialize()
        assert "end_from_trigger" not in kwargs
        assert "price_hr" not in kwargs
        _, kwargs = PodStatusTrigger(pod_ids=["a"], deadline=1_900_000_000.0).serialize()
        assert "end_from_trigger" not in kwargs


class TestEndsInTriggerer:
    """Which tasks may end in the triggerer: those with nothing but the return value due."""

    def test_a_plain_sensor_does(self):
        assert task_end.ends_in_triggerer(PodStatusSensor(task_id="w", pod_ids="a"))

    @pytest.mark.parametrize(
        "option",
        [
            {"on_success_callback": lambda context: None},  # the DAG processor never runs it
            {"post_execute": lambda context, result: None},
            {"outlets": [Asset(uri="s3://bucket/ready", name="ready")]},  # a worker's success makes events
            {"do_xcom_push": False},
            {"multiple_outputs": True},
        ],
        ids=["on_success_callback", "post_execute", "outlets", "no-xcom", "multiple_outputs"],
    )
    def test_a_task_with_more_to_do_on_success_does_not(self, option):
        assert not task_end.ends_in_triggerer(PodStatusSensor(task_id="w", pod_ids="a", **option))

    def test_a_custom_xcom_backend_does_not(self, monkeypatch):
        monkeypatch.setattr(xcom_module, "XCom", type("ObjectStoreXCom", (BaseXCom,), {}))
        assert not task_end.ends_in_triggerer(PodStatusSensor(task_id="w", pod_ids="a"))

    def test_an_airflow_that_cannot_does_not(self, monkeypatch):
        monkeypatch.setattr(task_end, "TRIGGER_ENDS_TASK", False)
        assert not task_end.ends_in_triggerer(PodStatusSensor(task_id="w", pod_ids="a"))

    def test_every_supported_airflow_can(self):
        """3.1.0 and 3.3.2 both end a task from a TaskSuccessEvent and answer SetXCom from a trigger."""
        assert _compat.TRIGGER_ENDS_TASK

    def test_the_deferring_sensor_asks_for_it(self, prime_simulator_factory, prime_connect):
        prime_connect(prime_simulator_factory(fixed_pod("a", "PROVISIONING")))
        for option, asked in (({}, True), ({"on_success_callback": lambda context: None}, False)):
            sensor = PodStatusSensor(task_id="w", pod_ids="a", deferrable=True, poke_interval=1, **option)
            with pytest.raises(TaskDeferred) as caught:
                sensor.execute({"ti": mock.Mock()})
            assert caught.value.trigger.end_from_trigger is asked

    def test_the_sensor_started_in_the_triggerer_asks_for_it(self):
        sensor = PodStatusSensor(task_id="w", pod_ids="a", start_from_trigger=True)
        if not _compat.START_FROM_TRIGGER:
            pytest.skip("Airflow < 3.3 starts every wait on a worker")
        assert sensor.start_trigger_args is not None
        assert sensor.start_trigger_args.trigger_kwargs["end_from_trigger"] is True
        with_callback = PodStatusSensor(
            task_id="w", pod_ids="a", start_from_trigger=True, on_success_callback=lambda context: None
        )
        assert with_callback.start_trigger_args is not None
        assert with_callback.start_trigger_args.trigger_kwargs["end_from_trigger"] is False


def test_a_registered_success_listener_keeps_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow calls on_task_instance_success (OpenLineage's, a plugin's) only for a task a worker
    ends: with one registered, the wait resumes a worker, so the listener sees the success."""
    sensor = PodStatusSensor(task_id="wait", pod_ids=["p"], deferrable=True)
    assert task_end.ends_in_triggerer(sensor)
    monkeypatch.setattr(task_end, "success_listeners", lambda: True)
    assert not task_end.ends_in_triggerer(sensor)


def test_success_listeners_reads_airflows_listener_manager() -> None:
    assert isinstance(_compat.success_listeners(), bool)
