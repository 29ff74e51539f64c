"""A fake Airflow deployment for the model test: task instances, DAG runs, XCom and Variables.

Whatever the provider asks Airflow goes through ``task_runner.SUPERVISOR_COMMS``, as in a worker or
a triggerer. :class:`FakeComms` answers those requests the way Airflow's supervisor does: with the
Task SDK's own result types (``TaskStatesResult``, ``DagRunStateResult``, ``TICount``,
``VariableResult``, ``OKResponse``...) carrying the Task SDK's enums, sent through the same
msgpack frame and ``ToTask`` decoder the real comms channel uses, and with an *error frame*
(``AirflowRuntimeError`` carrying an ``ErrorResponse``) where the API server answers 404, as for
the state of a DAG run that was deleted. Plain strings never stand in for Airflow's answers.

One :class:`Deployment` is one Airflow installation; two of them may share one Prime key (staging
and prod) and then have the same DAG ids and the same ``scheduled__`` run ids.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
from airflow.sdk.api.datamodels._generated import DagRunState, TaskInstanceState
from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType
from airflow.sdk.execution_time import comms
from pydantic import BaseModel, TypeAdapter

#: Task-instance states in which the task is still working (or will again, by itself).
UNFINISHED = frozenset(
    {
        None,
        TaskInstanceState.SCHEDULED,
        TaskInstanceState.QUEUED,
        TaskInstanceState.RUNNING,
        TaskInstanceState.DEFERRED,
        TaskInstanceState.UP_FOR_RETRY,
        TaskInstanceState.UP_FOR_RESCHEDULE,
        TaskInstanceState.RESTARTING,
    }
)

_TO_TASK: TypeAdapter[Any] = TypeAdapter(comms.ToTask)


@dataclass(frozen=True)
class TIKey:
    """One task instance: the identity its pod name is derived from."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1

    def __str__(self) -> str:
        index = f"[{self.map_index}]" if self.map_index >= 0 else ""
        return f"{self.dag_id}/{self.run_id}/{self.task_id}{index}"

    @property
    def states_key(self) -> str:
        """How Airflow's ``/task-instances/states`` keys it: ``task_id`` or ``task_id_<index>``."""
        return self.task_id if self.map_index < 0 else f"{self.task_id}_{self.map_index}"


@dataclass
class TI:
    """A task instance as Airflow's database holds it."""

    key: TIKey
    state: TaskInstanceState | None = None
    try_number: int = 0
    max_tries: int = 1

    @property
    def unfinished(self) -> bool:
        return self.state in UNFINISHED


@dataclass
class Run:
    """A DAG run: its state, when it (last) started, and whether its downstream work still runs."""

    dag_id: str
    run_id: str
    state: DagRunState
    start_date: datetime
    #: The training task downstream of the creates: it uses their pods until it ends.
    training: bool = True


@dataclass
class Deployment:
    """One Airflow: runs, task instances, XCom and Variables, and a comms channel answering for them."""

    name: str
    deployment_id: str
    runs: dict[tuple[str, str], Run] = field(default_factory=dict)
    tis: dict[TIKey, TI] = field(default_factory=dict)
    xcom: dict[tuple[TIKey, str], Any] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)

    # -- what the model changes ----------------------------------------------------------------

    def tis_of(self, dag_id: str, run_id: str) -> list[TI]:
        return [ti for key, ti in self.tis.items() if (key.dag_id, key.run_id) == (dag_id, run_id)]

    def clear_xcom(self, key: TIKey) -> None:
        """A new try starts: Airflow clears the XCom the previous try pushed."""
        for xcom_key in [k for k in self.xcom if k[0] == key]:
            del self.xcom[xcom_key]

    def delete_run(self, dag_id: str, run_id: str) -> None:
        self.runs.pop((dag_id, run_id), None)
        for key in [k for k in self.tis if (k.dag_id, k.run_id) == (dag_id, run_id)]:
            del self.tis[key]
            self.clear_xcom(key)

    # -- what Airflow answers -----------------------------------------------------------------

    def _matching(self, msg: comms.GetTaskStates | comms.GetTICount) -> Iterator[tuple[Any, Any]]:
        """The task instances a question of the Task SDK asks about (its filters, as Airflow reads them)."""
        for key, ti in self.tis.items():
            if key.dag_id != msg.dag_id:
                continue
            if msg.run_ids and key.run_id not in msg.run_ids:
                continue
            if msg.task_ids and key.task_id not in msg.task_ids:
                continue
            if msg.map_index is not None and key.map_index != msg.map_index:
                continue
            yield key, ti

    def task_states(self, msg: comms.GetTaskStates) -> BaseModel:
        states: dict[str, dict[str, Any]] = {}
        for key, ti in self._matching(msg):
            states.setdefault(key.run_id, {})[key.states_key] = ti.state
        return comms.TaskStatesResult(task_states=states)

    def ti_count(self, msg: comms.GetTICount) -> BaseModel:
        wanted = None if msg.states is None else {None if s == "null" else s for s in msg.states}
        count = 0
        for _key, ti in self._matching(msg):
            state = None if ti.state is None else ti.state.value
            if wanted is not None and state not in wanted:
                continue
            count += 1
        return comms.TICount(count=count)

    def run_state(self, msg: comms.GetDagRunState) -> BaseModel:
        run = self.runs.get((msg.dag_id, msg.run_id))
        if run is None:  # the API server answers 404; the supervisor turns that into an error frame
            raise _ErrorFrame(
                comms.ErrorResponse(
                    error=ErrorType.API_SERVER_ERROR,
                    detail={"status_code": 404, "message": "DAG run not found", "detail": None},
                )
            )
        return comms.DagRunStateResult(state=run.state)

    def dr_count(self, msg: comms.GetDRCount) -> BaseModel:
        count = sum(
            1
            for (dag_id, run_id), run in self.runs.items()
            if dag_id == msg.dag_id
            and (not msg.run_ids or run_id in msg.run_ids)
            and (msg.states is None or run.state.value in msg.states)
        )
        return comms.DRCount(count=count)

    def get_variable(self, msg: comms.GetVariable) -> BaseModel:
        if msg.key not in self.variables:
            return comms.ErrorResponse(error=ErrorType.VARIABLE_NOT_FOUND, detail={"message": msg.key})
        return comms.VariableResult(key=msg.key, value=self.variables[msg.key])

    def variable_keys(self, msg: comms.GetVariableKeys) -> BaseModel:
        keys = sorted(k for k in self.variables if msg.prefix is None or k.startswith(msg.prefix))
        page = keys[msg.offset : msg.offset + msg.limit]
        return comms.VariableKeysResult(keys=page, total_entries=len(keys))

    def put_variable(self, msg: comms.PutVariable) -> BaseModel | None:
        if msg.value is None:
            self.variables.pop(msg.key, None)
        else:
            self.variables[msg.key] = msg.value
        return comms.OKResponse(ok=True)

    def delete_variable(self, msg: comms.DeleteVariable) -> BaseModel:
        self.variables.pop(msg.key, None)
        return comms.OKResponse(ok=True)

    def get_xcom(self, msg: comms.GetXCom) -> BaseModel:
        key = TIKey(msg.dag_id, msg.run_id, msg.task_id, -1 if msg.map_index is None else msg.map_index)
        value = self.xcom.get((key, msg.key))
        return comms.XComResult(key=msg.key, value=None if value is None else json.dumps(value))

    def set_xcom(self, msg: comms.SetXCom) -> None:
        key = TIKey(msg.dag_id, msg.run_id, msg.task_id, -1 if msg.map_index is None else msg.map_index)
        self.xcom[(key, msg.key)] = msg.value


class _ErrorFrame(Exception):
    """An answer the supervisor sends as an error frame (the task side raises AirflowRuntimeError)."""

    def __init__(self, error: comms.ErrorResponse) -> None:
        super().__init__(error.error.value)
        self.error = error


class FakeComms:
    """``SUPERVISOR_COMMS`` for the deployment whose process runs now (set by the process model).

    ``gate`` is called before every request that changes something (a kill point: a SIGKILLed
    process sends nothing more). ``requests`` records every message, for the secrets check.
    """

    def __init__(self) -> None:
        self.deployment: Deployment | None = None
        self.gate: Callable[[str], None] = lambda _what: None
        self.requests: list[BaseModel] = []

    def send(self, msg: BaseModel) -> Any:
        self.requests.append(msg)
        deployment = self.deployment
        if deployment is None:
            raise RuntimeError(f"no deployment is answering Airflow requests ({type(msg).__name__})")
        handlers: dict[type[BaseModel], Callable[[Any], BaseModel | None]] = {
            comms.GetTaskStates: deployment.task_states,
            comms.GetTICount: deployment.ti_count,
            comms.GetDagRunState: deployment.run_state,
            comms.GetDRCount: deployment.dr_count,
            comms.GetVariable: deployment.get_variable,
            comms.GetVariableKeys: deployment.variable_keys,
            comms.PutVariable: deployment.put_variable,
            comms.DeleteVariable: deployment.delete_variable,
            comms.GetXCom: deployment.get_xcom,
            comms.SetXCom: deployment.set_xcom,
        }
        if isinstance(msg, (comms.PutVariable, comms.DeleteVariable, comms.SetXCom)):
            self.gate(type(msg).__name__)
        if isinstance(msg, comms.GetConnection):  # connections come from the environment
            return _decode(
                comms.ErrorResponse(error=ErrorType.CONNECTION_NOT_FOUND, detail={"conn_id": msg.conn_id})
            )
        handler = handlers.get(type(msg))
        if handler is None:
            return None  # MaskSecret and the like: nothing to answer
        try:
            return _decode(handler(msg))
        except _ErrorFrame as frame:
            raise _error(frame.error) from None

    async def asend(self, msg: BaseModel) -> Any:
        return self.send(msg)


def _frame(**parts: Any) -> Any:
    """A response frame as the supervisor sends it, and as the task process decodes it."""
    raw = comms._ResponseFrame(id=1, **parts).as_bytes()
    return msgspec.msgpack.decode(bytes(raw[4:]), type=comms._ResponseFrame)


def _decode(answer: BaseModel | None) -> Any:
    """The answer as the task process receives it: a msgpack frame, then the ``ToTask`` decoder."""
    if answer is None:
        return None
    return _TO_TASK.validate_python(_frame(body=answer.model_dump()).body)


def _error(error: comms.ErrorResponse) -> AirflowRuntimeError:
    """An error frame as the task process turns it into an exception."""
    return AirflowRuntimeError(error=_TO_TASK.validate_python(_frame(error=error.model_dump()).error))


def iter_states(deployment: Deployment) -> Iterator[tuple[TIKey, TaskInstanceState | None]]:
    for key, ti in deployment.tis.items():
        yield key, ti.state
