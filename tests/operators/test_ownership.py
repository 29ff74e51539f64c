"""Ownership records: written by the create operator, read by it and the reaper, tolerant of junk."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_prime.operators.ownership import (
    KEY_PREFIX,
    MemoryOwnerRecords,
    OwnerRecords,
    PodOwner,
    VariableOwnerRecords,
    parse_owner,
    record_key,
)

OWNER = PodOwner("prod", "train_dag", "manual__1", "create", -1, "my-pod")


def test_a_record_round_trips_through_json() -> None:
    assert PodOwner.from_json(OWNER.to_json()) == OWNER
    with_id = OWNER.with_pod_id("pod-1")
    assert PodOwner.from_json(with_id.to_json()) == with_id


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "not json",
        "[]",
        '{"deployment": "prod"}',
        OWNER.to_json().replace('"map_index":-1', '"map_index":"-1"'),
        OWNER.to_json().replace('"map_index":-1', '"map_index":true'),
        OWNER.to_json().replace('"pod_id":null', '"pod_id":7'),
        OWNER.to_json().replace('"dag_id":"train_dag"', '"dag_id":""'),
    ],
)
def test_anything_else_is_no_record(text: Any) -> None:
    assert parse_owner(text) is None


def test_the_same_task_instance_is_deployment_dag_run_task_and_map_index() -> None:
    assert OWNER.same_task_instance(OWNER.with_pod_id("pod-1"))
    for other in (
        PodOwner("staging", "train_dag", "manual__1", "create", -1, "my-pod"),
        PodOwner("prod", "other", "manual__1", "create", -1, "my-pod"),
        PodOwner("prod", "train_dag", "manual__2", "create", -1, "my-pod"),
        PodOwner("prod", "train_dag", "manual__1", "create_1", -1, "my-pod"),
        PodOwner("prod", "train_dag", "manual__1", "create", 0, "my-pod"),
    ):
        assert not OWNER.same_task_instance(other)


def test_keys_are_per_deployment_and_safe_in_a_url() -> None:
    assert record_key("prod", "my-pod") == f"{KEY_PREFIX}prod__my-pod"
    assert record_key("staging", "my-pod") != record_key("prod", "my-pod")
    odd = record_key("prod", "my pod?#/x")
    assert odd.startswith(f"{KEY_PREFIX}prod__~")
    assert all(c not in odd for c in " ?#/")
    assert len(record_key("prod", "x" * 500)) <= 250
    assert record_key("prod", "x" * 500) != record_key("prod", "x" * 501)


def test_memory_records_are_kept_per_deployment_and_name() -> None:
    records: OwnerRecords = MemoryOwnerRecords()
    records.put(OWNER)
    assert records.get("prod", "my-pod") == OWNER
    assert records.get("staging", "my-pod") is None
    assert records.get("prod", "other-pod") is None
    records.put(OWNER.with_pod_id("pod-1"))
    assert records.get("prod", "my-pod") == OWNER.with_pod_id("pod-1")
    records.delete("prod", "my-pod")
    records.delete("prod", "my-pod")  # idempotent
    assert records.get("prod", "my-pod") is None


def test_a_record_under_the_wrong_key_is_not_believed() -> None:
    records = MemoryOwnerRecords()
    records.texts[record_key("prod", "my-pod")] = PodOwner("staging", "d", "r", "t", -1, "my-pod").to_json()
    assert records.get("prod", "my-pod") is None


class FakeVariables:
    """``airflow.sdk.Variable`` as the Task SDK has it (3.1.0 to 3.3): get, set and delete."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.descriptions: dict[str, str | None] = {}
        self.deleted: list[str] = []

    def get(self, key: str, default: Any = None, deserialize_json: bool = False) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any, description: str | None = None, serialize_json: bool = False) -> None:
        self.values[key], self.descriptions[key] = value, description

    def delete(self, key: str) -> None:
        self.deleted.append(key)
        self.values.pop(key, None)


def test_variable_records_go_through_the_task_sdk_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect

    import airflow.sdk

    real = airflow.sdk.Variable
    for method in ("get", "set", "delete"):  # the calls below exist with these parameters in this Airflow
        params = inspect.signature(getattr(FakeVariables, method)).parameters
        assert list(inspect.signature(getattr(real, method)).parameters) == [p for p in params if p != "self"]
    fake = FakeVariables()
    monkeypatch.setattr(airflow.sdk, "Variable", fake)
    records = VariableOwnerRecords()
    records.put(OWNER)
    key = f"{KEY_PREFIX}prod__my-pod"
    assert fake.values[key] == OWNER.to_json()
    assert "train_dag / manual__1 / create" in (fake.descriptions[key] or "")
    assert records.get("prod", "my-pod") == OWNER
    assert records.get("prod", "nobody") is None
    records.delete("prod", "nobody")
    assert fake.deleted == []
    records.delete("prod", "my-pod")
    assert fake.deleted == [key]
    assert records.get("prod", "my-pod") is None
