"""Attacks on the ownership record a user-named create leaves behind when its create never happened.

The record is written before the POST with ``pod_id=None`` ("the create may have reached the
server"), and such a record matches *every* pod of the name (operator ``_owns`` and the reaper's
``record.pod_id in (None, pod.id)``). When the task is stopped before its POST went out (an
``execution_timeout`` while connecting), nothing deletes that record: it stays, and later claims
whatever pod of that name appears, a person's or another deployment's.
"""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk.api.datamodels._generated import TaskInstanceState

from airflow_provider_prime.models import Pod
from airflow_provider_prime.operators.ownership import MemoryOwnerRecords
from airflow_provider_prime.operators.reaper import PrimeReapPodsOperator
from airflow_provider_prime.testing import ready_pod
from tests.operators.conftest import (
    SLOW_BOOT,
    TaskInstance,
    account,
    billing_after_deletes,
    create,
    make_context,
)
from tests.operators.fake_airflow import FakeAirflow

try:
    from airflow.sdk.exceptions import AirflowTaskTimeout
except ImportError:  # Airflow 3.1
    from airflow.exceptions import AirflowTaskTimeout  # type: ignore[attr-defined,no-redef]

NAME = "my-box"


def timed_out_before_the_post(monkeypatch: pytest.MonkeyPatch) -> None:
    """Try 1: execution_timeout fires while the create connects; no POST reaches the server."""
    operator = create(name=NAME)

    def timeout_before_sending(request: Any) -> Pod:
        raise AirflowTaskTimeout()

    monkeypatch.setattr(operator.hook, "create_pod", timeout_before_sending)
    with pytest.raises(AirflowTaskTimeout):
        operator.execute(make_context())
    operator.on_kill()


def test_a_retry_does_not_claim_a_persons_pod_through_a_stale_record(lifecycle_sim, monkeypatch):
    sim = lifecycle_sim(SLOW_BOOT)
    timed_out_before_the_post(monkeypatch)
    sim.add_pod(ready_pod("persons-pod", ready_at=36_000.0, name=NAME))  # made by hand meanwhile

    ti = TaskInstance()
    with pytest.raises(BaseException):  # noqa: B017,PT011 - the retry's wait times out
        create(name=NAME, timeout=0.3).execute(make_context(ti))
    try:
        assert ti.xcom["pod_owned"] == {"persons-pod": False}, "the retry claimed a person's pod"
        assert account(sim)["pods"]["persons-pod"]["deleted"] is False, "the retry deleted a person's pod"
    finally:
        if not account(sim)["pods"]["persons-pod"]["deleted"]:
            create().hook.delete_pod("persons-pod")
        assert billing_after_deletes(sim) == []


def test_the_reaper_does_not_delete_a_persons_pod_through_a_stale_record(
    lifecycle_sim, monkeypatch, owner_records: MemoryOwnerRecords
):
    sim = lifecycle_sim(SLOW_BOOT)
    timed_out_before_the_post(monkeypatch)
    sim.add_pod(ready_pod("persons-pod", ready_at=0.0, name=NAME))
    answers = FakeAirflow().ti("train_dag", "manual__1", "create_pod", TaskInstanceState.FAILED)
    reaper = PrimeReapPodsOperator(task_id="reap", dag_ids=["train_dag"], min_age=0, dry_run=False)
    reaper.airflow_states = answers
    reaper.owner_records = owner_records
    result = reaper.execute(make_context())
    try:
        assert "persons-pod" not in result["deleted"], result
        assert account(sim)["pods"]["persons-pod"]["deleted"] is False
    finally:
        if not account(sim)["pods"]["persons-pod"]["deleted"]:
            create().hook.delete_pod("persons-pod")
        assert billing_after_deletes(sim) == []
