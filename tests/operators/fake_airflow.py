"""A fake of Airflow's answers to the reaper, in the Task SDK's own types, keyed as Airflow keys them.

:class:`FakeAirflow` holds task instances and runs and answers ``GetTaskStates`` the way Airflow's
Execution API does (``routes/task_instances.py``, ``get_task_instance_states``): the same filters,
the key ``<task_id>_<map_index>`` for a mapped task instance (so ``create[1]`` and an unmapped
``create_1`` share a key, the later one winning), wrapped in a ``TaskStatesResult``; a run's state
as a ``DagRunStateResult`` holding a ``DagRunState``; or an ``ErrorResponse`` when told to fail.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from airflow.sdk.api.datamodels._generated import DagRunState, TaskInstanceState
from airflow.sdk.exceptions import ErrorType
from airflow.sdk.execution_time.comms import DagRunStateResult, ErrorResponse, TaskStatesResult

SERVER_ERROR = ErrorResponse(error=ErrorType.API_SERVER_ERROR, detail={"status_code": 503})


@dataclass
class FakeAirflow:
    """Task instances ``(dag_id, run_id, task_id, map_index) -> state`` and runs ``-> DagRunState``."""

    tis: dict[tuple[str, str, str, int], TaskInstanceState | None] = field(default_factory=dict)
    runs: dict[tuple[str, str], DagRunState] = field(default_factory=dict)
    #: Give each state as its string value (as a JSON answer decodes) instead of the enum member.
    as_text: bool = False
    #: Answer ``GetTaskStates`` so: every one (``"all"``), the unfiltered (``"bulk"``) or the filtered
    #: ones (``"precise"``); and every ``GetDagRunState``.
    task_states_error: ErrorResponse | None = None
    task_states_error_on: str = "all"
    run_state_error: ErrorResponse | None = None
    asked: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def ti(
        self, dag_id: str, run_id: str, task_id: str, state: TaskInstanceState | None, map_index: int = -1
    ) -> FakeAirflow:
        self.tis[dag_id, run_id, task_id, map_index] = state
        return self

    def run(self, dag_id: str, run_id: str, state: DagRunState) -> FakeAirflow:
        self.runs[dag_id, run_id] = state
        return self

    def task_states(
        self,
        dag_id: str,
        *,
        run_ids: list[str] | None = None,
        task_ids: list[str] | None = None,
        map_index: int | None = None,
    ) -> TaskStatesResult | ErrorResponse:
        query = {"run_ids": run_ids, "task_ids": task_ids, "map_index": map_index}
        self.asked.append(("task_states", {"dag_id": dag_id, **query}))
        precise = any(v is not None for v in query.values())
        if self.task_states_error and self.task_states_error_on in ("all", "precise" if precise else "bulk"):
            return self.task_states_error
        answer: dict[str, dict[str, Any]] = defaultdict(dict)
        for (dag, run_id, task_id, index), state in self.tis.items():
            if dag != dag_id or (task_ids and task_id not in task_ids) or (run_ids and run_id not in run_ids):
                continue
            if map_index is not None and index != map_index:
                continue
            value = state.value if (self.as_text and state is not None) else state
            answer[run_id][task_id if index < 0 else f"{task_id}_{index}"] = value
        return TaskStatesResult(task_states=dict(answer))

    def run_state(self, dag_id: str, run_id: str) -> DagRunStateResult | ErrorResponse:
        self.asked.append(("run_state", {"dag_id": dag_id, "run_id": run_id}))
        if self.run_state_error:
            return self.run_state_error
        return DagRunStateResult(state=self.runs[dag_id, run_id])
