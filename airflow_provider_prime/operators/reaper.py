"""The reaper: delete the pods that nothing else will, because the task that owned them is gone.

A pod created by :class:`~airflow_provider_prime.operators.pod.PrimeCreatePodOperator` is deleted
by the task itself on every exit it lives to see, and by the teardown. What remains: a worker
killed hard (SIGKILL, OOM, a lost machine), a deferred task marked failed on Airflow 3.1/3.2, a
DAG run deleted while its pods ran. The reaper lists the pods, keeps those of this deployment
(:mod:`airflow_provider_prime.deployment`): derived names (:mod:`.pod_names`) carrying its tag, and
names a user chose that have an ownership record of it (:mod:`.ownership`). It asks Airflow
through the Task SDK which task instances of the given DAGs exist and in which state, and deletes
a pod when its task instance is no longer alive:

* spared: the task instance is queued, scheduled, running, deferred, awaiting input, up for retry
  or reschedule, restarting, or not yet run (cleared: it will run again and adopt the pod); or it
  succeeded and its DAG run is still going (the pod is handed to the tasks after it); or it
  succeeded and you named the pod with no teardown downstream of the create (its ownership record
  says ``outlives_run``: a name you chose is how a pod outlives its run); or Airflow's
  answer could not be read, or named a state this provider does not know;
* deleted: it failed, was skipped, upstream-failed or removed; it succeeded in a finished run
  (derived names, and user names whose create has a teardown downstream: the teardown failed or
  never ran); or Airflow knows no such task instance (the DAG run was deleted);
* untouched: pods of another deployment, pods of DAGs not in ``dag_ids``, user-named pods without
  a record of this deployment, and pods younger than ``min_age`` (a create can be a moment ahead
  of what Airflow reports). A user-named pod is judged only when its record proves it its task
  instance's (:func:`.ownership.claim`: the record names its id, or names none yet and it is the
  one pod of the name created in the record's window); otherwise it is spared, saying why.

Airflow hands its answers over in the Task SDK's own types: a ``TaskStatesResult`` whose states
may be strings or ``TaskInstanceState`` members, a ``DagRunStateResult`` holding a ``DagRunState``
(``str()`` of which is ``"DagRunState.RUNNING"``, not ``"running"``), or an ``ErrorResponse``.
:func:`airflow_state` and :func:`read_task_states` are the one place they are read; a pod is never
deleted on an answer they cannot read.

The Task SDK keys a mapped task instance ``<task_id>_<map_index>``, the same key as an unmapped
task named so (``create[1]`` and ``create_1``). A pod matched through such a key is judged by a
precise question (that task id, that map index, that run), never by the shared key.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

from airflow.sdk import BaseOperator

from airflow_provider_prime.deployment import deployment_id
from airflow_provider_prime.exceptions import PrimeConfigError, PrimeError
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.models import GONE_STATES, Pod
from airflow_provider_prime.operators._arguments import seconds, timestamp
from airflow_provider_prime.operators.ownership import OwnerRecords, PodOwner, VariableOwnerRecords, claim
from airflow_provider_prime.operators.pod_names import (
    dag_tag,
    deployment_tag,
    derived_pod_name,
    parse_derived_name,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Task-instance states in which a task may still use (or adopt) its pod. ``None``: not run yet.
LIVE_TI_STATES = frozenset(
    {
        None,
        "queued",
        "scheduled",
        "running",
        "deferred",
        "awaiting_input",
        "up_for_retry",
        "up_for_reschedule",
        "restarting",
    }
)
#: Task-instance states that end a task for good (short of a clear, which makes it ``None``).
DEAD_TI_STATES = frozenset({"failed", "upstream_failed", "skipped", "removed"})
#: DAG-run states in which a succeeded create's pod is still in use downstream.
LIVE_RUN_STATES = frozenset({"queued", "running"})
#: DAG-run states of a finished run.
OVER_RUN_STATES = frozenset({"success", "failed"})
#: Default age below which a pod is never reaped.
DEFAULT_MIN_AGE = timedelta(minutes=5)
_MAPPED_KEY = re.compile(r"(.+)_(\d+)")


class UnreadableAnswer(Exception):
    """Airflow's answer could not be read (an ``ErrorResponse``, an unknown shape): spare, say why."""


class AirflowStates(Protocol):
    """Airflow's answers about task instances and runs, as the Task SDK hands them over (unread)."""

    def task_states(
        self,
        dag_id: str,
        *,
        run_ids: list[str] | None = None,
        task_ids: list[str] | None = None,
        map_index: int | None = None,
    ) -> object: ...

    def run_state(self, dag_id: str, run_id: str) -> object: ...


class TaskSdkStates:
    """:class:`AirflowStates` through the running task's supervisor (so only inside a task).

    Sends the Task SDK's ``GetTaskStates``/``GetDagRunState`` itself, as
    ``RuntimeTaskInstance.get_task_states`` does, to receive the answer as it is: a result, or an
    ``ErrorResponse`` that the ``RuntimeTaskInstance`` helpers turn into an ``AttributeError``.
    """

    def task_states(
        self,
        dag_id: str,
        *,
        run_ids: list[str] | None = None,
        task_ids: list[str] | None = None,
        map_index: int | None = None,
    ) -> object:
        from airflow.sdk.execution_time import task_runner
        from airflow.sdk.execution_time.comms import GetTaskStates

        message = GetTaskStates(dag_id=dag_id, run_ids=run_ids, task_ids=task_ids, map_index=map_index)
        return task_runner.SUPERVISOR_COMMS.send(msg=message)

    def run_state(self, dag_id: str, run_id: str) -> object:
        from airflow.sdk.execution_time import task_runner
        from airflow.sdk.execution_time.comms import GetDagRunState

        return task_runner.SUPERVISOR_COMMS.send(msg=GetDagRunState(dag_id=dag_id, run_id=run_id))


def _error_of(answer: object) -> str | None:
    """What an ``ErrorResponse`` says, or ``None`` for any other answer."""
    if getattr(answer, "type", None) != "ErrorResponse" and type(answer).__name__ != "ErrorResponse":
        return None
    error = getattr(answer, "error", None)
    kind = error.value if isinstance(error, Enum) else error
    detail = getattr(answer, "detail", None)
    return f"Airflow answered {kind}" + (f" ({detail})" if detail else "")


def airflow_state(answer: object) -> str | None:
    """A task-instance or DAG-run state as Airflow handed it over, as its plain lowercase value.

    Reads a ``TaskInstanceState``/``DagRunState`` member (``"running"``, never
    ``"DagRunState.RUNNING"``), a string (the same text an enum's ``str()`` would give is read
    too), ``None`` (not run yet) and a ``DagRunStateResult``. Raises :class:`UnreadableAnswer` for
    an ``ErrorResponse`` or anything else.
    """
    error = _error_of(answer)
    if error is not None:
        raise UnreadableAnswer(error)
    if answer is None:
        return None
    if isinstance(answer, Enum):
        return airflow_state(answer.value)
    if isinstance(answer, str):
        text = answer.strip().rsplit(".", 1)[-1].lower()
        return text or None
    if hasattr(answer, "state"):  # DagRunStateResult (and its API response)
        return airflow_state(answer.state)
    raise UnreadableAnswer(f"Airflow gave a state as {type(answer).__name__}")


def read_task_states(answer: object) -> dict[str, dict[str, str | None]]:
    """``{run_id: {task key: state}}`` from a ``TaskStatesResult`` (or its mapping), states read.

    Raises :class:`UnreadableAnswer` for an ``ErrorResponse`` or any other shape.
    """
    error = _error_of(answer)
    if error is not None:
        raise UnreadableAnswer(error)
    states = getattr(answer, "task_states", answer)
    if not isinstance(states, Mapping):
        raise UnreadableAnswer(f"Airflow gave task states as {type(answer).__name__}")
    read: dict[str, dict[str, str | None]] = {}
    for run_id, tasks in states.items():
        if not isinstance(tasks, Mapping):
            raise UnreadableAnswer(f"Airflow gave the task states of run {run_id} as {type(tasks).__name__}")
        read[str(run_id)] = {str(key): airflow_state(state) for key, state in tasks.items()}
    return read


@dataclass(frozen=True)
class Owner:
    """The task instance a pod belongs to, as far as the reaper knows it, and its state."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    state: str | None = None
    #: Matched through a key ``<name>_<digits>``, which may name two task instances: ask precisely.
    ambiguous: bool = False

    def describe(self) -> str:
        index = "" if self.map_index < 0 else f"[{self.map_index}]"
        return f"{self.dag_id} / {self.run_id} / {self.task_id}{index}"


@dataclass
class Reaping:
    """What one reaper pass decided, pod by pod: ``{pod_id: reason}`` per outcome."""

    deleted: dict[str, str] = field(default_factory=dict)
    spared: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, dict[str, str]]:
        return {"deleted": dict(self.deleted), "spared": dict(self.spared), "ignored": dict(self.ignored)}


@dataclass(frozen=True)
class Doomed:
    """A pod to delete, and the ownership record to delete with it (user-named pods)."""

    pod: Pod
    record: PodOwner | None = None


def task_instance_names(
    dag_id: str, states: Mapping[str, Mapping[str, str | None]], *, deployment: str
) -> dict[str, Owner]:
    """Every pod name the task instances of one DAG may have used in ``deployment``, with its owner.

    A key ``<name>_<digits>`` is read both ways (a mapped task instance, or an unmapped task
    named so); such owners are marked ambiguous, and their pods judged by a precise question.
    """
    names: dict[str, Owner] = {}
    for run_id, tasks in states.items():
        for key, state in tasks.items():
            mapped = _MAPPED_KEY.fullmatch(key)
            readings = [(key, -1)] + ([(mapped[1], int(mapped[2]))] if mapped else [])
            for task_id, index in readings:
                name = derived_pod_name(dag_id, run_id, task_id, index, deployment=deployment)
                names[name] = Owner(dag_id, run_id, task_id, index, state, ambiguous=bool(mapped))
    return names


class _Judge:
    """One reaper pass's questions to Airflow, each asked at most once."""

    def __init__(self, airflow: AirflowStates, deployment: str) -> None:
        self.airflow, self.deployment = airflow, deployment
        self._names: dict[str, dict[str, Owner] | UnreadableAnswer] = {}
        self._runs: dict[tuple[str, str], str | UnreadableAnswer | None] = {}

    def names(self, dag_id: str) -> dict[str, Owner]:
        if dag_id not in self._names:
            try:
                states = read_task_states(self.airflow.task_states(dag_id))
                self._names[dag_id] = task_instance_names(dag_id, states, deployment=self.deployment)
            except Exception as exc:  # whatever it was, nothing is deleted on it
                self._names[dag_id] = _unreadable(exc, f"the task states of DAG {dag_id}")
        found = self._names[dag_id]
        if isinstance(found, UnreadableAnswer):
            raise found
        return found

    def ti_state(self, owner: Owner) -> tuple[bool, str | None]:
        """``(exists, state)`` of exactly this task instance (task id, map index and run)."""
        try:
            answer = self.airflow.task_states(
                owner.dag_id, run_ids=[owner.run_id], task_ids=[owner.task_id], map_index=owner.map_index
            )
            tasks = read_task_states(answer).get(owner.run_id, {})
        except Exception as exc:
            raise _unreadable(exc, f"the state of {owner.describe()}") from exc
        key = owner.task_id if owner.map_index < 0 else f"{owner.task_id}_{owner.map_index}"
        return (key in tasks, tasks.get(key))

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        if (dag_id, run_id) not in self._runs:
            try:
                self._runs[dag_id, run_id] = airflow_state(self.airflow.run_state(dag_id, run_id))
            except Exception as exc:
                self._runs[dag_id, run_id] = _unreadable(exc, f"the state of run {dag_id} / {run_id}")
        found = self._runs[dag_id, run_id]
        if isinstance(found, UnreadableAnswer):
            raise found
        return found


def _unreadable(exc: Exception, what: str) -> UnreadableAnswer:
    if isinstance(exc, UnreadableAnswer):
        return UnreadableAnswer(f"could not read {what}: {exc}")
    return UnreadableAnswer(f"could not read {what}: {type(exc).__name__}: {exc}")


def _verdict(
    judge: _Judge, owner: Owner | None, state: str | None, *, record: PodOwner | None = None
) -> tuple[bool, str]:
    """``(delete, why)`` for a pod of ``owner`` (``None``: no such task instance) in ``state``.

    ``record``: the ownership record of a user-named pod. After a succeeded create and an ended
    run, such a pod is spared when its record says it outlives its run (no teardown downstream of
    the create, or a record older than the field), and deleted when the DAG had a teardown give it
    back (the teardown failed or never ran: nothing else would stop its billing).
    """
    if owner is None:
        return True, "no task instance of it in Airflow (its DAG run was deleted?)"
    where = owner.describe()
    if state in LIVE_TI_STATES:
        return False, f"{where} is {state or 'not run yet'}"
    if state in DEAD_TI_STATES:
        return True, f"{where} is {state}"
    if state != "success":
        return False, f"{where} is {state!r}, a state this provider does not know"
    run = judge.run_state(owner.dag_id, owner.run_id)
    if run in LIVE_RUN_STATES:
        return False, f"{where} succeeded and its run is {run}"
    if run not in OVER_RUN_STATES:
        return False, f"{where} succeeded and its run is {run!r}, a state this provider does not know"
    if record is not None and record.outlives_run:
        return False, (
            f"{where} succeeded and you named the pod with no teardown downstream: it outlives its run "
            "(delete it yourself, or give the create a PrimeTerminatePodOperator teardown)"
        )
    if record is not None:
        return True, f"{where} succeeded, its run is {run} and its teardown did not delete the pod"
    return True, f"{where} succeeded and its run is {run}"


def decide(
    pods: Iterable[Pod],
    dag_ids: Sequence[str],
    airflow: AirflowStates,
    *,
    deployment: str,
    owner_records: OwnerRecords,
    now: datetime,
    min_age: float,
) -> tuple[Reaping, list[Doomed]]:
    """Sort the pods into deleted (the second value: the pods to delete), spared and ignored."""
    dags = {dag_tag(dag_id): dag_id for dag_id in dag_ids}
    ours = deployment_tag(deployment)
    judge = _Judge(airflow, deployment)
    reaping, doomed = Reaping(), []
    kept_names: set[str] = set()  # user names with a pod spared: their record stays
    pods = list(pods)
    for pod in pods:
        if pod.status in GONE_STATES or not pod.name:
            continue  # on its way out already, or nobody's by name
        label = pod.name
        derived = parse_derived_name(pod.name)
        record: PodOwner | None = None
        if derived is not None:
            if derived.deployment_tag != ours:
                reaping.ignored[pod.id] = f"{label}: ignored: another deployment"
                continue
            dag_id = dags.get(derived.dag_tag)
        else:
            try:
                record = owner_records.get(deployment, pod.name)
            except Exception as exc:
                reaping.spared[pod.id] = f"{label}: could not read its ownership record: {exc}"
                kept_names.add(pod.name)
                continue
            if record is None:
                continue  # a user's own pod: not ours to judge
            dag_id = record.dag_id if record.dag_id in dag_ids else None
        if dag_id is None:
            reaping.ignored[pod.id] = f"{label}: from a DAG not in dag_ids"
            continue
        if record is not None:
            proof = claim(record, pods)
            if proof.pod is None or proof.pod.id != pod.id:
                why = f"proves nothing: {proof.why}"
                if record.pod_id is not None:
                    why = f"names pod {record.pod_id}, not this one"
                reaping.spared[pod.id] = f"{label}: its ownership record {why}"
                kept_names.add(pod.name)
                continue
        created = timestamp(pod.created_at)
        if created is None or (now - created).total_seconds() < min_age:
            reaping.spared[pod.id] = f"{label}: younger than {min_age:.0f}s"
            kept_names.add(pod.name)
            continue
        try:
            delete, why = _judge_pod(judge, pod.name, dag_id, record)
        except UnreadableAnswer as exc:
            delete, why = False, f"spared, {exc}"
        if delete:
            reaping.deleted[pod.id] = f"{label}: {why}"
            doomed.append(Doomed(pod, record))
        else:
            reaping.spared[pod.id] = f"{label}: {why}"
            kept_names.add(pod.name)
    return reaping, [d if d.pod.name not in kept_names else Doomed(d.pod) for d in doomed]


def _judge_pod(judge: _Judge, name: str, dag_id: str, record: PodOwner | None) -> tuple[bool, str]:
    if record is not None:
        owner: Owner | None = Owner(record.dag_id, record.run_id, record.task_id, record.map_index)
    else:
        owner = judge.names(dag_id).get(name)
        if owner is not None and not owner.ambiguous:
            return _verdict(judge, owner, owner.state)  # the bulk answer is exact for it
    if owner is None:
        return _verdict(judge, None, None)
    exists, state = judge.ti_state(owner)
    return _verdict(judge, owner if exists else None, state, record=record)


def dag_id_list(value: object) -> list[str]:
    """``dag_ids`` as given or rendered: a list, one id, ``"a,b"`` or a rendered list's text."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                try:
                    value = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    value = None
        else:
            value = [part.strip() for part in text.split(",")]
    if isinstance(value, (list, tuple)) and value and all(isinstance(d, str) and d.strip() for d in value):
        return [d.strip() for d in value]
    raise PrimeConfigError(
        f"dag_ids must name at least one DAG (a list of DAG ids, or one id), not {value!r}: "
        "list the DAGs whose pods the reaper judges"
    )


def flag(value: object) -> bool:
    """A boolean argument that a template may have rendered as text."""
    if isinstance(value, str):
        if value.strip().lower() not in ("true", "false", "1", "0", "yes", "no", ""):
            raise PrimeConfigError(f"dry_run must be true or false, not {value!r}")
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


class PrimeReapPodsOperator(BaseOperator):
    """Delete this deployment's pods whose task instance is no longer alive in Airflow (see the module).

    :param dag_ids: the DAGs whose pods to judge (templated); their task states are read through
        the Task SDK, so the reaper needs no credentials for Airflow's API.
    :param dry_run: report what would be deleted, delete nothing (templated; "true"/"false" too).
    :param min_age: pods younger than this are spared (default 5 minutes; templated, seconds).

    Returns ``{"deleted": {pod_id: why}, "spared": {...}, "ignored": {...}}``; with ``dry_run``,
    ``deleted`` lists what a real run would delete. Fails, after trying all, if a deletion failed.
    """

    template_fields: Sequence[str] = ("dag_ids", "dry_run_mode", "min_age")
    ui_color = "#e8d9f5"

    def __init__(
        self,
        *,
        dag_ids: str | Sequence[str],
        prime_conn_id: str = PrimeHook.default_conn_name,
        dry_run: bool | str = False,
        min_age: timedelta | float | str = DEFAULT_MIN_AGE,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dag_ids = dag_ids
        self.prime_conn_id = prime_conn_id
        self.dry_run_mode = dry_run  # not ``dry_run``: BaseOperator has a method of that name
        self.min_age = min_age

    @cached_property
    def hook(self) -> PrimeHook:
        return PrimeHook(prime_conn_id=self.prime_conn_id)

    @cached_property
    def owner_records(self) -> OwnerRecords:
        """Where the create operator records the owners of user-named pods (tests swap it)."""
        return VariableOwnerRecords()

    @cached_property
    def airflow_states(self) -> AirflowStates:
        """Airflow's answers about task instances and runs (tests swap it for a fake)."""
        return TaskSdkStates()

    def execute(self, context: Context) -> dict[str, dict[str, str]]:
        dag_ids = dag_id_list(self.dag_ids)
        dry_run = flag(self.dry_run_mode)
        try:
            min_age = seconds(self.min_age if isinstance(self.min_age, timedelta) else float(self.min_age))
        except (TypeError, ValueError):
            raise PrimeConfigError(f"min_age must be seconds or a timedelta, not {self.min_age!r}") from None
        deployment = deployment_id()
        reaping, doomed = decide(
            self.hook.list_pods(),
            dag_ids,
            self.airflow_states,
            deployment=deployment,
            owner_records=self.owner_records,
            now=datetime.now(timezone.utc),
            min_age=min_age,
        )
        for pod_id, why in reaping.spared.items():
            self.log.info("Sparing pod %s: %s", pod_id, why)
        for pod_id, why in reaping.ignored.items():
            self.log.info("Not judging pod %s: %s", pod_id, why)
        failures = []
        for item in doomed:
            pod, why = item.pod, reaping.deleted[item.pod.id]
            if dry_run:
                self.log.warning("Dry run: would delete orphan pod %s (%s/h): %s", pod.id, pod.price_hr, why)
                continue
            self.log.warning("Deleting orphan pod %s (%s/h): %s", pod.id, pod.price_hr, why)
            try:
                self.hook.delete_pod(pod.id)
            except PrimeError as exc:
                failures.append(f"{pod.id}: {exc}")
                continue
            if item.record is not None:
                try:
                    self.owner_records.delete(deployment, item.record.name)
                except Exception as exc:
                    failures.append(
                        f"{pod.id} deleted, but not its ownership record {item.record.name!r}: {exc}"
                    )
        if failures:
            raise PrimeError(
                "Could not delete every orphan pod (each bills until deleted: run the reaper again, or "
                "delete it in Prime's console): " + "; ".join(failures)
            )
        return reaping.as_dict()
