"""Ownership records: written by the create operator, read by it and the reaper, tolerant of junk."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_provider_prime.hooks._settings import PrimeApiSettings
from airflow_provider_prime.models import Pod
from airflow_provider_prime.operators.ownership import (
    CLOCK_SKEW,
    KEY_PREFIX,
    MemoryOwnerRecords,
    OwnerRecords,
    PodOwner,
    VariableOwnerRecords,
    claim,
    create_window,
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


# -- the proof a record gives (adversary B1-B5): its pod id, or one pod created in its window -------

WRITTEN = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
PENDING = replace(OWNER, written_at=WRITTEN.timestamp(), window=340.0)  # written before its POST


def pod(pod_id: str, after: float, *, name: str = "my-pod", status: str = "PROVISIONING") -> Pod:
    """A pod of ``name`` created ``after`` seconds after the record was written."""
    created = (WRITTEN + timedelta(seconds=after)).isoformat().replace("+00:00", "Z")
    return Pod.model_validate(
        {"id": pod_id, "name": name, "status": status, "providerType": "runpod", "createdAt": created}
    )


def test_the_times_round_trip_and_an_older_record_without_them_still_reads() -> None:
    assert PodOwner.from_json(PENDING.to_json()) == PENDING
    older = json.loads(OWNER.to_json())
    del older["written_at"], older["window"]
    assert PodOwner.from_json(json.dumps(older)) == OWNER
    for junk in ('"written_at":"soon"', '"written_at":true', '"written_at":-1'):
        assert parse_owner(PENDING.to_json().replace(f'"written_at":{PENDING.written_at}', junk)) is None


def test_outlives_run_round_trips_and_an_older_record_without_it_outlives() -> None:
    """#outlives-run: a record written before the field keeps today's rule (the pod outlives its run)."""
    given_back = replace(PENDING, outlives_run=False)
    assert PodOwner.from_json(given_back.to_json()) == given_back
    assert json.loads(given_back.to_json())["outlives_run"] is False
    older = json.loads(PENDING.to_json())
    del older["outlives_run"]
    assert PodOwner.from_json(json.dumps(older)).outlives_run is True
    for junk in ('"outlives_run":"no"', '"outlives_run":0', '"outlives_run":null'):
        assert parse_owner(given_back.to_json().replace('"outlives_run":false', junk)) is None


def test_the_window_is_the_creates_own_time_budget() -> None:
    """At most 1 + max_retries attempts of connect + read timeout, and the longest wait between them."""
    settings = PrimeApiSettings(base_url="https://api.example", api_key="k")
    assert create_window(settings) == 4 * (10 + 30) + 3 * 60
    quick = replace(settings, max_retries=0, connect_timeout=2.0, read_timeout=5.0)
    assert create_window(quick) == 7.0


def test_a_record_with_a_pod_id_proves_that_pod_only() -> None:
    record = OWNER.with_pod_id("p1")
    assert claim(record, [pod("p9", 1), pod("p1", 99_999)]).pod == pod("p1", 99_999)
    gone = claim(record, [pod("p1", 1, status="TERMINATED"), pod("p9", 1)])
    assert gone.pod is None
    assert "not live" in gone.why


def test_a_record_without_a_pod_id_proves_the_one_new_pod_created_in_its_window() -> None:
    assert claim(PENDING, [pod("p1", 0.5)]).pod == pod("p1", 0.5)
    assert claim(PENDING, [pod("p1", 340 + CLOCK_SKEW - 1)]).pod is not None  # the slowest create
    assert claim(PENDING, [pod("p1", -CLOCK_SKEW + 1)]).pod is not None  # the API's clock behind ours
    for outside in (-CLOCK_SKEW - 1, 340 + CLOCK_SKEW + 1, 3600):
        verdict = claim(PENDING, [pod("p1", outside)])
        assert verdict.pod is None
        assert "no pod of the name was created in its create's window" in verdict.why
    assert claim(PENDING, [pod("p1", 1)], seen={"p1"}).pod is None  # listed before the POST
    assert claim(PENDING, [pod("p1", 1, name="other")]).pod is None
    assert claim(PENDING, [pod("p1", 1, status="DELETING")]).pod is None


def test_two_pods_in_the_window_prove_nothing_and_are_named() -> None:
    verdict = claim(PENDING, [pod("p1", 1), pod("p2", 2), pod("old", -3600)])
    assert verdict.pod is None
    assert [p.id for p in verdict.candidates] == ["p1", "p2"]
    assert "a person must choose" in verdict.why
    assert "p1, p2" in verdict.why


def test_an_older_record_without_times_or_pod_id_proves_nothing() -> None:
    verdict = claim(OWNER, [pod("p1", 1)])
    assert verdict.pod is None
    assert "older version" in verdict.why
    assert OWNER.window_over(0.0)
    assert not PENDING.window_over(WRITTEN.timestamp() + 340)
    assert PENDING.window_over(WRITTEN.timestamp() + 340 + CLOCK_SKEW + 1)
