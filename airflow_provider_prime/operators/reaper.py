"""The reaper: delete the pods that nothing else will, because the task that owned them is gone.

A pod created by :class:`~airflow_provider_prime.operators.pod.PrimeCreatePodOperator` is deleted
by the task itself on every exit it lives to see, and by the teardown. What remains: a worker
killed hard (SIGKILL, OOM, a lost machine), a deferred task marked failed on Airflow 3.1/3.2, a
DAG run deleted while its pods ran. The reaper lists the pods whose names carry the provider's
marker (:mod:`.pod_names`), asks Airflow through the Task SDK which task instances of the given
DAGs exist and in which state, derives their pods' names, and deletes a pod when its task
instance is no longer alive:

* spared: the task instance is queued, scheduled, running, deferred, up for retry or
  reschedule, restarting, or not yet run (cleared: it will run again and adopt the pod); or it
  succeeded and its DAG run is still going (the pod is handed to the tasks after it);
* deleted: it failed, was skipped, upstream-failed or removed; it succeeded and its run is over;
  or Airflow knows no such task instance (the DAG run was deleted);
* untouched: pods without the marker (named by a user), pods of DAGs not in ``dag_ids``, and pods
  younger than ``min_age`` (a create can be a moment ahead of what Airflow reports).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_prime.deployment import deployment_id
from airflow_provider_prime.exceptions import PrimeConfigError, PrimeError
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.models import Pod
from airflow_provider_prime.operators._values import seconds, timestamp
from airflow_provider_prime.operators.pod import GONE_STATES
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
    {None, "queued", "scheduled", "running", "deferred", "up_for_retry", "up_for_reschedule", "restarting"}
)
#: DAG-run states in which a succeeded create's pod is still in use downstream.
LIVE_RUN_STATES = frozenset({"queued", "running"})
#: Default age below which a pod is never reaped.
DEFAULT_MIN_AGE = timedelta(minutes=5)

#: ``dag_id -> {run_id: {task key: state}}``, the Task SDK's ``get_task_states`` answer per DAG.
TaskStates = Callable[[str], Mapping[str, Mapping[str, Any]]]
#: ``(dag_id, run_id) -> run state``.
RunState = Callable[[str, str], str]


@dataclass(frozen=True)
class Owner:
    """The task instance a pod name belongs to, and the state Airflow reports for it."""

    dag_id: str
    run_id: str
    task_key: str
    state: str | None


@dataclass
class Reaping:
    """What one reaper pass decided, pod by pod: ``{pod_id: reason}`` per outcome."""

    deleted: dict[str, str] = field(default_factory=dict)
    spared: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, dict[str, str]]:
        return {"deleted": dict(self.deleted), "spared": dict(self.spared), "ignored": dict(self.ignored)}


def task_instance_names(
    dag_id: str, states: Mapping[str, Mapping[str, Any]], deployment: str
) -> dict[str, Owner]:
    """Every pod name the task instances of one DAG may have used, with its owner.

    The Task SDK keys a mapped task instance ``<task_id>_<map_index>``; such a key is read both
    ways (an unmapped task may also end in ``_<digits>``), which can only spare more pods.
    """
    names: dict[str, Owner] = {}
    for run_id, tasks in states.items():
        for key, state in tasks.items():
            owner = Owner(dag_id, run_id, key, state)
            names[derived_pod_name(dag_id, run_id, key, -1, deployment=deployment)] = owner
            mapped = re.fullmatch(r"(.+)_(\d+)", key)
            if mapped:
                names[derived_pod_name(dag_id, run_id, mapped[1], int(mapped[2]), deployment=deployment)] = (
                    owner
                )
    return names


def decide(
    pods: Iterable[Pod],
    dag_ids: Sequence[str],
    task_states: TaskStates,
    run_state: RunState,
    *,
    now: datetime,
    min_age: float,
    deployment: str,
) -> tuple[Reaping, list[Pod]]:
    """Sort the pods into deleted (the second value: the pods to delete), spared and ignored."""
    dags = {dag_tag(dag_id): dag_id for dag_id in dag_ids}
    ours = deployment_tag(deployment)
    reaping, doomed = Reaping(), []
    names: dict[str, dict[str, Owner]] = {}
    for pod in pods:
        derived = parse_derived_name(pod.name)
        if derived is None or pod.status in GONE_STATES:
            continue  # not ours to judge, or on its way out already
        if derived.deployment_tag != ours:
            reaping.ignored[pod.id] = f"{pod.name}: another deployment"
            continue
        dag_id = dags.get(derived.dag_tag)
        if dag_id is None:
            reaping.ignored[pod.id] = f"{pod.name}: from a DAG not in dag_ids"
            continue
        created = timestamp(pod.created_at)
        if created is None or (now - created).total_seconds() < min_age:
            reaping.spared[pod.id] = f"{pod.name}: younger than {min_age:.0f}s"
            continue
        if dag_id not in names:
            names[dag_id] = task_instance_names(dag_id, task_states(dag_id), deployment)
        owner = names[dag_id].get(pod.name or "")
        verdict = _verdict(owner, run_state)
        if verdict.startswith("alive"):
            reaping.spared[pod.id] = f"{pod.name}: {verdict}"
        else:
            reaping.deleted[pod.id] = f"{pod.name}: {verdict}"
            doomed.append(pod)
    return reaping, doomed


def _verdict(owner: Owner | None, run_state: RunState) -> str:
    if owner is None:
        return "no task instance of it in Airflow (its DAG run was deleted?)"
    where = f"{owner.dag_id} / {owner.run_id} / {owner.task_key}"
    if owner.state in LIVE_TI_STATES:
        return f"alive: {where} is {owner.state or 'not run yet'}"
    if owner.state == "success":
        run = run_state(owner.dag_id, owner.run_id)
        if run in LIVE_RUN_STATES:
            return f"alive: {where} succeeded and its run is {run}"
        return f"{where} succeeded and its run is {run}"
    return f"{where} is {owner.state}"


def flag(value: object) -> bool:
    """A boolean argument that a template may have rendered as text."""
    if isinstance(value, str):
        if value.strip().lower() not in ("true", "false", "1", "0", "yes", "no", ""):
            raise PrimeConfigError(f"dry_run must be true or false, not {value!r}")
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _sdk_task_states(dag_id: str) -> Mapping[str, Mapping[str, Any]]:
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    return RuntimeTaskInstance.get_task_states(dag_id=dag_id)


def _sdk_run_state(dag_id: str, run_id: str) -> str:
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    return str(RuntimeTaskInstance.get_dagrun_state(dag_id=dag_id, run_id=run_id))


class PrimeReapPodsOperator(BaseOperator):
    """Delete marker-named pods whose task instance is no longer alive in Airflow (see the module).

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

    def execute(self, context: Context) -> dict[str, dict[str, str]]:
        dag_ids = [self.dag_ids] if isinstance(self.dag_ids, str) else list(self.dag_ids)
        if not dag_ids or not all(isinstance(d, str) and d for d in dag_ids):
            raise PrimeConfigError(f"dag_ids must name at least one DAG, not {self.dag_ids!r}")
        dry_run = flag(self.dry_run_mode)
        min_age = seconds(self.min_age if isinstance(self.min_age, timedelta) else float(self.min_age))
        reaping, doomed = decide(
            self.hook.list_pods(),
            dag_ids,
            _sdk_task_states,
            _sdk_run_state,
            now=datetime.now(timezone.utc),
            min_age=min_age,
            deployment=deployment_id(),
        )
        for pod_id, why in reaping.spared.items():
            self.log.info("Sparing pod %s: %s", pod_id, why)
        for pod_id, why in reaping.ignored.items():
            self.log.info("Not judging pod %s: %s", pod_id, why)
        failures = []
        for pod in doomed:
            why = reaping.deleted[pod.id]
            if dry_run:
                self.log.warning("Dry run: would delete orphan pod %s (%s/h): %s", pod.id, pod.price_hr, why)
                continue
            self.log.warning("Deleting orphan pod %s (%s/h): %s", pod.id, pod.price_hr, why)
            try:
                self.hook.delete_pod(pod.id)
            except PrimeError as exc:
                failures.append(f"{pod.id}: {exc}")
        if failures:
            raise PrimeError("Could not delete every orphan pod: " + "; ".join(failures))
        return reaping.as_dict()
