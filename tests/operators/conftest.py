"""Fixtures of the lifecycle operator tests: a simulator whose created pods boot fast, task contexts."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from airflow.sdk.definitions._internal.types import NOTSET

from airflow_provider_prime.operators import pod as pod_module
from airflow_provider_prime.operators.ownership import MemoryOwnerRecords
from airflow_provider_prime.operators.pod import PrimeCreatePodOperator
from airflow_provider_prime.testing import CreateLifecycle, PodScript, PrimeSimulator, Scenario
from tests.simulated import prime_connection_extra, prime_simulator_defaults

try:
    from airflow.sdk.exceptions import TaskDeferralTimeout, TaskDeferred
except ImportError:  # Airflow 3.1
    from airflow.exceptions import TaskDeferralTimeout, TaskDeferred  # type: ignore[attr-defined,no-redef]

__all__ = [
    "TaskDeferralTimeout",
    "TaskDeferred",
    "owner_records",
    "prime_connection_extra",
    "prime_simulator_defaults",
]

#: Created pods: ACTIVE after 1 pod second, installed after 2, gone 0.5 s after a DELETE.
FAST_BOOT = CreateLifecycle(active_after=1.0, installed_after=2.0, deleting_for=0.5)
#: Created pods that would need hours to be ready.
SLOW_BOOT = CreateLifecycle(active_after=1.0, installed_after=36_000.0, deleting_for=0.5)


class XComs:
    """One DAG run's XComs as Airflow keeps them: ``(task_id, map_index, key) -> value``."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, int, str], Any] = {}


class TaskInstance:
    """The task instance a context hands an operator: its identity and its run's XComs.

    ``xcom_pull`` follows the Task SDK's rules (``RuntimeTaskInstance.xcom_pull``): one task id and
    no ``map_indexes`` gives that task's value for this map index; a list of task ids without
    ``map_indexes`` gives every map index's value of each, ``None`` for a task that has none.
    """

    def __init__(
        self,
        dag_id: str = "train_dag",
        run_id: str = "manual__1",
        task_id: str = "create_pod",
        map_index: int = -1,
        xcoms: XComs | None = None,
    ) -> None:
        self.dag_id, self.run_id, self.task_id, self.map_index = dag_id, run_id, task_id, map_index
        self.try_number = 1
        self.xcoms = xcoms if xcoms is not None else XComs()

    @property
    def xcom(self) -> dict[str, Any]:
        """This task instance's own XComs by key."""
        mine = (self.task_id, self.map_index)
        return {
            key: value for (task, index, key), value in self.xcoms.values.items() if (task, index) == mine
        }

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms.values[(self.task_id, self.map_index, key)] = value

    def xcom_pull(
        self,
        task_ids: str | list[str] | None = None,
        key: str = "return_value",
        *,
        map_indexes: Any = NOTSET,
        default: Any = None,
        **kwargs: Any,
    ) -> Any:
        values = self.xcoms.values
        if isinstance(task_ids, (list, tuple)) and map_indexes is NOTSET:
            found: list[Any] = []
            for task in task_ids:
                per_index = [v for (t, _, k), v in sorted(values.items(), key=str) if t == task and k == key]
                found.extend(per_index or [None])
            return found
        task = self.task_id if task_ids is None else task_ids
        index = self.map_index if map_indexes is NOTSET or map_indexes is None else map_indexes
        return values.get((str(task), int(index), key), default)


class DagRun:
    def __init__(self, start_date: datetime) -> None:
        self.start_date = start_date
        self.conf: dict[str, Any] = {}


def make_context(ti: TaskInstance | None = None, started: datetime | None = None) -> dict[str, Any]:
    """A context as the operators read it: ``ti`` and ``dag_run`` (started a minute ago by default)."""
    started = started or datetime.now(timezone.utc) - timedelta(minutes=1)
    return {"ti": ti or TaskInstance(), "dag_run": DagRun(started)}


@pytest.fixture(autouse=True)
def owner_records(monkeypatch: pytest.MonkeyPatch) -> MemoryOwnerRecords:
    """The ownership records every operator of the test reads and writes (Variables need a task)."""
    records = MemoryOwnerRecords()
    monkeypatch.setattr(pod_module, "VariableOwnerRecords", lambda: records, raising=False)
    return records


@pytest.fixture
def lifecycle_sim(
    prime_simulator_factory: Callable[..., PrimeSimulator], prime_connect: Callable[..., str]
) -> Callable[..., PrimeSimulator]:
    """``start(lifecycle=FAST_BOOT, *pods, time_scale=20)``: a connected simulator, stopped afterwards."""

    def start(
        lifecycle: CreateLifecycle = FAST_BOOT, *pods: PodScript, time_scale: float = 20.0
    ) -> PrimeSimulator:
        sim = prime_simulator_factory(Scenario(pods=pods, lifecycle=lifecycle), time_scale=time_scale)
        prime_connect(sim)
        return sim

    return start


def account(sim: PrimeSimulator) -> dict[str, Any]:
    """The simulator's billing account: created/deleted/billing per name, per pod."""
    result: dict[str, Any] = sim.billing()
    return result


def billing_pods(sim: PrimeSimulator) -> list[str]:
    return [pod_id for pod_id, pod in account(sim)["pods"].items() if pod["billing"]]


def billing_after_deletes(sim: PrimeSimulator, within: float = 10.0) -> list[str]:
    """The pods still billing once deleted ones have had time to terminate (DELETING lasts a moment)."""
    end = time.monotonic() + within
    while (pods := billing_pods(sim)) and time.monotonic() < end:
        if all(account(sim)["pods"][pod_id]["deleted"] is False for pod_id in pods):
            return pods  # nothing is on its way out: no reason to wait
        time.sleep(0.05)
    return pods


def create(**kwargs: Any) -> PrimeCreatePodOperator:
    """A create operator as the tests use it: a quick worker wait unless told otherwise."""
    kwargs.setdefault("gpu_type", "H100_80GB")
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("timeout", 30)
    kwargs.setdefault("deferrable", False)
    return PrimeCreatePodOperator(task_id=kwargs.pop("task_id", "create_pod"), **kwargs)
