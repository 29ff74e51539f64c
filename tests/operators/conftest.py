"""Fixtures of the lifecycle operator tests: a simulator whose created pods boot fast, task contexts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_provider_prime.testing import CreateLifecycle, PodScript, PrimeSimulator, Scenario
from tests.simulated import connect, logs

try:
    from airflow.sdk.exceptions import TaskDeferralTimeout, TaskDeferred
except ImportError:  # Airflow 3.1
    from airflow.exceptions import TaskDeferralTimeout, TaskDeferred  # type: ignore[attr-defined,no-redef]

__all__ = ["TaskDeferralTimeout", "TaskDeferred", "connect", "logs"]

#: Created pods: ACTIVE after 1 pod second, installed after 2, gone 0.5 s after a DELETE.
FAST_BOOT = CreateLifecycle(active_after=1.0, installed_after=2.0, deleting_for=0.5)
#: Created pods that would need hours to be ready.
SLOW_BOOT = CreateLifecycle(active_after=1.0, installed_after=36_000.0, deleting_for=0.5)


class TaskInstance:
    """The task instance a context hands an operator: its identity and an XCom store."""

    def __init__(
        self, dag_id: str = "train_dag", run_id: str = "manual__1", task_id: str = "create_pod"
    ) -> None:
        self.dag_id, self.run_id, self.task_id, self.map_index = dag_id, run_id, task_id, -1
        self.try_number = 1
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value

    def xcom_pull(self, task_ids: str | None = None, key: str = "return_value", **kwargs: Any) -> Any:
        return self.xcom.get(key)


class DagRun:
    def __init__(self, start_date: datetime) -> None:
        self.start_date = start_date


def make_context(ti: TaskInstance | None = None, started: datetime | None = None) -> dict[str, Any]:
    """A context as the operators read it: ``ti`` and ``dag_run`` (started a minute ago by default)."""
    started = started or datetime.now(timezone.utc) - timedelta(minutes=1)
    return {"ti": ti or TaskInstance(), "dag_run": DagRun(started)}


@pytest.fixture
def lifecycle_sim(connect: Callable[..., str]) -> Iterator[Callable[..., PrimeSimulator]]:
    """``start(lifecycle=FAST_BOOT, *pods, time_scale=20)``: a connected simulator, stopped afterwards."""
    started: list[PrimeSimulator] = []

    def start(
        lifecycle: CreateLifecycle = FAST_BOOT, *pods: PodScript, time_scale: float = 20.0
    ) -> PrimeSimulator:
        sim = PrimeSimulator(Scenario(pods=pods, lifecycle=lifecycle), time_scale=time_scale).start()
        started.append(sim)
        connect(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


def account(sim: PrimeSimulator) -> dict[str, Any]:
    """The simulator's billing account: created/deleted/billing per name, per pod."""
    result: dict[str, Any] = sim.billing()
    return result


def billing_pods(sim: PrimeSimulator) -> list[str]:
    return [pod_id for pod_id, pod in account(sim)["pods"].items() if pod["billing"]]
