"""A stand-in for the triggerer's supervisor channel, answering with the Task SDK's own types.

Airflow 3.3's triggerer sets ``task_runner.SUPERVISOR_COMMS`` (a ``TriggerCommsDecoder``) and a
trigger's ``task_instance``; :func:`airflow_told` does both for a test, and its
:class:`FakeSupervisor` answers ``GetTaskStates`` as Airflow would: a ``TaskStatesResult`` whose
states are ``TaskInstanceState`` members (or ``None`` for a cleared task instance), an
``ErrorResponse``, an ``AirflowRuntimeError`` (an error frame) or no answer at all.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from airflow.sdk.api.datamodels._generated import TaskInstance, TaskInstanceState
from airflow.sdk.execution_time import task_runner
from airflow.sdk.execution_time.comms import ErrorResponse, GetTaskStates, TaskStatesResult

DAG_ID, RUN_ID, TASK_ID = "train", "scheduled__2026-01-01T00:00:00+00:00", "create_pod"

#: "No answer" from the supervisor: :meth:`FakeSupervisor.asend` waits until cancelled.
NO_ANSWER = object()


def task_instance(map_index: int = -1, task_id: str = TASK_ID) -> TaskInstance:
    """A task instance as the triggerer hands it to a trigger (the Task SDK's own model)."""
    return TaskInstance(
        id=uuid.uuid4(),
        task_id=task_id,
        dag_id=DAG_ID,
        run_id=RUN_ID,
        try_number=1,
        dag_version_id=uuid.uuid4(),
        map_index=map_index,
    )


def states_of(ti: TaskInstance, state: TaskInstanceState | None) -> TaskStatesResult:
    """Airflow's answer to a ``GetTaskStates`` for ``ti`` alone: ``ti`` is in ``state``."""
    key = ti.task_id if ti.map_index is None or ti.map_index < 0 else f"{ti.task_id}_{ti.map_index}"
    return TaskStatesResult(task_states={ti.run_id: {key: state}})


class FakeSupervisor:
    """Answers ``GetTaskStates`` with ``answer`` (raised if an exception; never, if :data:`NO_ANSWER`).

    Anything else the Task SDK sends while a supervisor is set (``MaskSecret`` when the hook masks
    the key) is recorded and answered with nothing, as the triggerer's supervisor does.
    """

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.questions: list[Any] = []
        self.gate: asyncio.Event | None = None  # when set, answers wait for it (a slow supervisor)

    async def asend(self, msg: Any) -> Any:
        self.questions.append(msg)
        if not isinstance(msg, GetTaskStates):
            return None
        if self.gate is not None:
            await self.gate.wait()
        if self.answer is NO_ANSWER:
            await asyncio.Event().wait()
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer

    def send(self, msg: Any) -> Any:
        self.questions.append(msg)
        assert not isinstance(msg, GetTaskStates), "GetTaskStates must be asked without blocking the loop"
        return None

    @property
    def asked_states(self) -> list[GetTaskStates]:
        return [q for q in self.questions if isinstance(q, GetTaskStates)]


def airflow_told(
    monkeypatch: pytest.MonkeyPatch, trigger: Any, answer: TaskInstanceState | Any | None, map_index: int = -1
) -> FakeSupervisor:
    """Give ``trigger`` a task instance and a supervisor that says ``answer`` about it.

    A ``TaskInstanceState`` (or ``None``: cleared) becomes that task instance's state in a
    ``TaskStatesResult``; anything else (an ``ErrorResponse``, an exception, :data:`NO_ANSWER`, a
    whole ``TaskStatesResult``) is the answer as it is.
    """
    ti = task_instance(map_index)
    trigger.task_instance = ti
    if answer is None or isinstance(answer, TaskInstanceState):
        answer = states_of(ti, answer)
    supervisor = FakeSupervisor(answer)
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", supervisor, raising=False)
    return supervisor


__all__ = [
    "DAG_ID",
    "NO_ANSWER",
    "RUN_ID",
    "TASK_ID",
    "ErrorResponse",
    "FakeSupervisor",
    "TaskInstanceState",
    "airflow_told",
    "states_of",
    "task_instance",
]
