"""task_state: the question a trigger asks Airflow about its own task instance, and what each answer means.

Airflow's answers are the Task SDK's own types: TaskStatesResult holding TaskInstanceState members,
ErrorResponse, AirflowRuntimeError.
"""

from __future__ import annotations

import pytest
from airflow.sdk.api.datamodels._generated import TaskInstanceState
from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType
from airflow.sdk.execution_time import task_runner
from airflow.sdk.execution_time.comms import ErrorResponse, TaskStatesResult, TICount

from airflow_provider_prime.triggers.task_state import (
    STOPPED_STATES,
    ask_own_state,
    judge,
    state_key,
    supervisor_comms,
)
from tests.triggers.supervisor import NO_ANSWER, RUN_ID, TASK_ID, FakeSupervisor, states_of, task_instance

#: Where a try of the task instance waits, runs, or is about to: the pod may be in use.
KEPT = [
    TaskInstanceState.DEFERRED,
    TaskInstanceState.SCHEDULED,
    TaskInstanceState.QUEUED,
    TaskInstanceState.RUNNING,
    TaskInstanceState.RESTARTING,
    TaskInstanceState.SUCCESS,
    TaskInstanceState.UP_FOR_RESCHEDULE,
]
#: Where the user stopped the wait (or Airflow ended it) and no try uses the pod.
STOPPED = [
    TaskInstanceState.FAILED,
    TaskInstanceState.UP_FOR_RETRY,
    TaskInstanceState.UPSTREAM_FAILED,
    TaskInstanceState.SKIPPED,
    TaskInstanceState.REMOVED,
    None,  # cleared
]


def test_every_airflow_state_is_decided_on_purpose():
    assert set(KEPT).isdisjoint(STOPPED)
    assert set(STOPPED) == STOPPED_STATES
    others = set(TaskInstanceState) - set(KEPT) - set(STOPPED)
    assert {s.value for s in others} <= {"awaiting_input"}  # 3.3's human-in-the-loop: kept as well
    for state in others:
        assert not judge(states_of(task_instance(), state), RUN_ID, TASK_ID).stopped


@pytest.mark.parametrize("state", KEPT, ids=str)
def test_states_where_a_try_may_use_the_pod_keep_it(state):
    ti = task_instance()
    verdict = judge(states_of(ti, state), RUN_ID, TASK_ID)
    assert (verdict.stopped, verdict.known, verdict.said) == (False, True, state.value)


@pytest.mark.parametrize("state", STOPPED, ids=str)
def test_states_where_the_user_stopped_the_wait_delete(state):
    ti = task_instance()
    verdict = judge(states_of(ti, state), RUN_ID, TASK_ID)
    assert verdict.stopped
    assert verdict.known
    assert verdict.said == ("no state (cleared)" if state is None else state.value)


def test_a_state_sent_over_the_wire_as_its_value_is_read_the_same():
    # msgpack carries the enum's value; TaskStatesResult's states are Any.
    answer = TaskStatesResult(task_states={RUN_ID: {TASK_ID: TaskInstanceState.DEFERRED.value}})
    assert not judge(answer, RUN_ID, TASK_ID).stopped
    answer = TaskStatesResult(task_states={RUN_ID: {TASK_ID: TaskInstanceState.FAILED.value}})
    assert judge(answer, RUN_ID, TASK_ID).stopped


def test_a_deleted_run_has_no_task_instance_left_to_use_the_pod():
    verdict = judge(TaskStatesResult(task_states={}), RUN_ID, TASK_ID)
    assert verdict.stopped
    assert "no longer exists" in verdict.said


def test_a_run_without_the_key_asked_for_is_not_an_answer():
    answer = TaskStatesResult(task_states={RUN_ID: {"create_pod_0": TaskInstanceState.FAILED}})
    verdict = judge(answer, RUN_ID, TASK_ID)
    assert (verdict.stopped, verdict.known) == (False, False)


def test_an_error_response_keeps_the_pod():
    answer = ErrorResponse(error=ErrorType.API_SERVER_ERROR, detail={"status_code": 500})
    verdict = judge(answer, RUN_ID, TASK_ID)
    assert (verdict.stopped, verdict.known) == (False, False)
    assert "API_SERVER_ERROR" in verdict.said


def test_an_answer_of_another_kind_keeps_the_pod():
    verdict = judge(TICount(count=0), RUN_ID, TASK_ID)
    assert (verdict.stopped, verdict.known) == (False, False)


@pytest.mark.parametrize(("map_index", "key"), [(-1, "create_pod"), (0, "create_pod_0"), (7, "create_pod_7")])
def test_state_key_is_airflows(map_index, key):
    assert state_key("create_pod", map_index) == key


async def test_the_question_names_exactly_this_task_instance():
    ti = task_instance()
    supervisor = FakeSupervisor(states_of(ti, TaskInstanceState.DEFERRED))
    verdict = await ask_own_state(ti, timeout=5, comms=supervisor)
    assert not verdict.stopped
    (question,) = supervisor.asked_states
    assert (question.dag_id, question.task_ids, question.run_ids) == (ti.dag_id, [TASK_ID], [RUN_ID])
    assert question.map_index is None  # unmapped: Airflow's client drops -1 anyway


async def test_a_mapped_task_instance_asks_for_its_index_and_reads_its_key():
    ti = task_instance(map_index=3)
    supervisor = FakeSupervisor(states_of(ti, TaskInstanceState.FAILED))
    verdict = await ask_own_state(ti, timeout=5, comms=supervisor)
    assert verdict.stopped
    assert supervisor.asked_states[0].map_index == 3


async def test_an_error_frame_keeps_the_pod():
    error = AirflowRuntimeError(ErrorResponse(error=ErrorType.GENERIC_ERROR))
    verdict = await ask_own_state(task_instance(), timeout=5, comms=FakeSupervisor(error))
    assert (verdict.stopped, verdict.known) == (False, False)
    assert "AirflowRuntimeError" in verdict.said


async def test_no_answer_in_time_keeps_the_pod():
    verdict = await ask_own_state(task_instance(), timeout=0.01, comms=FakeSupervisor(NO_ANSWER))
    assert (verdict.stopped, verdict.known) == (False, False)
    assert "did not answer within 0.01 s" in verdict.said


async def test_without_a_task_instance_nothing_is_asked():
    supervisor = FakeSupervisor(TaskStatesResult(task_states={}))
    verdict = await ask_own_state(None, timeout=5, comms=supervisor)
    assert (verdict.stopped, verdict.known) == (False, False)
    assert supervisor.questions == []


async def test_outside_a_triggerer_there_is_no_one_to_ask(monkeypatch):
    monkeypatch.delattr(task_runner, "SUPERVISOR_COMMS", raising=False)
    assert supervisor_comms() is None
    verdict = await ask_own_state(task_instance(), timeout=5)
    assert (verdict.stopped, verdict.known) == (False, False)


async def test_the_triggerers_channel_is_used(monkeypatch):
    ti = task_instance()
    supervisor = FakeSupervisor(states_of(ti, TaskInstanceState.UP_FOR_RETRY))
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", supervisor, raising=False)
    assert supervisor_comms() is supervisor
    assert (await ask_own_state(ti, timeout=5)).stopped
