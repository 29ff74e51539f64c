"""Which pods the reaper deletes, spares and leaves alone, from pods and Airflow's task states."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_provider_prime.exceptions import PrimeConfigError
from airflow_provider_prime.models import Pod
from airflow_provider_prime.operators.pod_names import derived_pod_name
from airflow_provider_prime.operators.reaper import decide, flag

NOW = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
DAG = "train_dag"


def pod(pod_id: str, name: str | None, *, age: float = 3600, status: str = "ACTIVE") -> Pod:
    created = (NOW - timedelta(seconds=age)).isoformat()
    return Pod.model_validate(
        {"id": pod_id, "name": name, "status": status, "providerType": "runpod", "createdAt": created}
    )


def name_of(run_id: str, task_id: str = "create", map_index: int = -1, dag_id: str = DAG) -> str:
    return derived_pod_name(dag_id, run_id, task_id, map_index, deployment="prod")


class Airflow:
    """Task states as the Task SDK reports them, and the run states; counts what it was asked."""

    def __init__(
        self, states: Mapping[str, Mapping[str, Any]], runs: Mapping[str, str] | None = None
    ) -> None:
        self.states, self.runs = states, dict(runs or {})
        self.asked_runs: list[str] = []

    def task_states(self, dag_id: str) -> Mapping[str, Mapping[str, Any]]:
        return self.states if dag_id == DAG else {}

    def run_state(self, dag_id: str, run_id: str) -> str:
        self.asked_runs.append(run_id)
        return self.runs[run_id]


def judge(pods: list[Pod], airflow: Airflow, *, min_age: float = 0.0) -> tuple[dict[str, Any], list[str]]:
    reaping, doomed = decide(
        pods, [DAG], airflow.task_states, airflow.run_state, now=NOW, min_age=min_age, deployment="prod"
    )
    return reaping.as_dict(), [p.id for p in doomed]


@pytest.mark.parametrize("state", ["running", "deferred", "up_for_retry", "queued", "scheduled", None])
def test_the_pod_of_a_live_task_instance_is_spared(state: str | None) -> None:
    report, doomed = judge([pod("p1", name_of("r1"))], Airflow({"r1": {"create": state}}))
    assert doomed == []
    assert "p1" in report["spared"]


@pytest.mark.parametrize("state", ["failed", "upstream_failed", "skipped", "removed"])
def test_the_pod_of_a_dead_task_instance_is_deleted(state: str) -> None:
    report, doomed = judge([pod("p1", name_of("r1"))], Airflow({"r1": {"create": state}}))
    assert doomed == ["p1"]
    assert state in report["deleted"]["p1"]


def test_a_succeeded_create_keeps_its_pod_while_the_run_goes_on() -> None:
    airflow = Airflow(
        {"r1": {"create": "success"}, "r2": {"create": "success"}}, {"r1": "running", "r2": "failed"}
    )
    report, doomed = judge([pod("p1", name_of("r1")), pod("p2", name_of("r2"))], airflow)
    assert doomed == ["p2"]
    assert "running" in report["spared"]["p1"]


def test_a_pod_whose_run_is_gone_from_airflow_is_deleted() -> None:
    report, doomed = judge([pod("p1", name_of("deleted-run"))], Airflow({"r1": {"create": "running"}}))
    assert doomed == ["p1"]
    assert "no task instance" in report["deleted"]["p1"]


def test_mapped_task_instances_are_told_apart_by_map_index() -> None:
    states = {"r1": {"create_0": "deferred", "create_1": "failed"}}
    pods = [pod("p0", name_of("r1", map_index=0)), pod("p1", name_of("r1", map_index=1))]
    _, doomed = judge(pods, Airflow(states))
    assert doomed == ["p1"]


def test_user_named_other_dag_young_and_terminating_pods_are_not_deleted() -> None:
    pods = [
        pod("mine", "my-own-pod"),
        pod("other", name_of("r1", dag_id="another_dag")),
        pod("young", name_of("r9"), age=30),
        pod("going", name_of("r9"), status="DELETING"),
    ]
    report, doomed = judge(pods, Airflow({"r1": {"create": "failed"}}), min_age=300)
    assert doomed == []
    assert set(report["ignored"]) == {"other"}
    assert set(report["spared"]) == {"young"}


def test_run_states_are_asked_only_for_pods_of_succeeded_creates() -> None:
    states = {f"r{i}": {"create": "success"} for i in range(50)}
    airflow = Airflow(states, {"r7": "success"})
    judge([pod("p7", name_of("r7"))], airflow)
    assert airflow.asked_runs == ["r7"]


@pytest.mark.parametrize(("text", "value"), [("true", True), ("False", False), ("", False), (True, True)])
def test_dry_run_accepts_what_a_template_renders(text: object, value: bool) -> None:
    assert flag(text) is value


def test_dry_run_refuses_anything_else() -> None:
    with pytest.raises(PrimeConfigError, match="dry_run"):
        flag("perhaps")
