"""PRIME_RETRY_POLICY: no capacity retries later, refusals fail at once, transient trouble retries.

On Airflow 3.3+ the decisions are checked on the policy and through the Task SDK's own failure
handling (``task_runner._handle_current_task_failed``, what a worker runs when a task raises); on
3.1 and 3.2 the policy is ``None`` and a DAG using it the documented way still builds and retries
as ``retries`` says.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest

from airflow_provider_prime._compat import RETRY_POLICY
from airflow_provider_prime.exceptions import (
    PrimeAuthError,
    PrimeBillingError,
    PrimeCapacityTimeoutError,
    PrimeConfigError,
    PrimeConnectionError,
    PrimeError,
    PrimeNoOfferError,
    PrimeNotFoundError,
    PrimeRequestError,
    PrimeResponseError,
    PrimeSoldOutError,
    PrimeTransientError,
)
from airflow_provider_prime.retry import NO_CAPACITY_RETRY_DELAY, PRIME_RETRY_POLICY, prime_retry_policy

needs_retry_policy = pytest.mark.skipif(not RETRY_POLICY, reason="Airflow < 3.3 has no retry_policy")

CASES = [
    (PrimeCapacityTimeoutError("waited 2:00:00 for capacity"), "fail", None),
    (PrimeNoOfferError("no offer matches"), "retry", NO_CAPACITY_RETRY_DELAY),
    (PrimeSoldOutError("sold out"), "retry", NO_CAPACITY_RETRY_DELAY),
    (PrimeAuthError("401"), "fail", None),
    (PrimeBillingError("402"), "fail", None),
    (PrimeRequestError("422 gpu_count"), "fail", None),
    (PrimeConfigError("bad pod id"), "fail", None),
    (PrimeTransientError("503"), "retry", None),
    (PrimeConnectionError("refused"), "retry", None),
    (TimeoutError("timed out"), "retry", None),
    (PrimeNotFoundError("404 pod"), "default", None),
    (PrimeResponseError("not JSON"), "default", None),
    (PrimeError("other"), "default", None),
    (ValueError("a bug"), "default", None),
]


def test_the_policy_exists_exactly_where_airflow_takes_one() -> None:
    assert (PRIME_RETRY_POLICY is not None) is RETRY_POLICY
    assert (prime_retry_policy(timedelta(minutes=1)) is not None) is RETRY_POLICY


@pytest.mark.parametrize("delay", [timedelta(seconds=-1), 60, None])
def test_a_bad_delay_is_refused_on_every_airflow(delay: Any) -> None:
    with pytest.raises(PrimeConfigError, match="no_capacity_delay must be a timedelta"):
        prime_retry_policy(delay)


@needs_retry_policy
@pytest.mark.parametrize(("error", "action", "delay"), CASES, ids=lambda v: type(v).__name__)
def test_each_kind_of_failure_gets_its_decision(error: BaseException, action: str, delay: Any) -> None:
    assert PRIME_RETRY_POLICY is not None
    decision = PRIME_RETRY_POLICY.evaluate(error, try_number=1, max_tries=4)
    assert (decision.action.value, decision.retry_delay) == (action, delay)


@needs_retry_policy
def test_another_no_capacity_delay() -> None:
    policy = prime_retry_policy(timedelta(minutes=2))
    assert policy is not None
    decision = policy.evaluate(PrimeSoldOutError("sold out"), try_number=1, max_tries=4)
    assert decision.retry_delay == timedelta(minutes=2)
    assert "2:00" in (decision.reason or "")


def _failed_task_outcome(error: BaseException) -> tuple[Any, Any]:
    """What Airflow's worker does when a task with the policy (and retries left) raises ``error``."""
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG
    from airflow.sdk.execution_time import task_runner

    with DAG("retry_policy", schedule=None, start_date=datetime(2025, 1, 1, tzinfo=timezone.utc)):
        task = EmptyOperator(
            task_id="create", retries=3, retry_delay=timedelta(seconds=42), retry_policy=PRIME_RETRY_POLICY
        )
    ti = SimpleNamespace(
        task=task,
        try_number=1,
        _ti_context_from_server=SimpleNamespace(max_tries=4, should_retry=True),
        _failure_metrics_emitted=True,
        rendered_map_index=None,
        end_date=None,
        stats_tags={},
    )
    message, state = task_runner._handle_current_task_failed(ti, error, mock.Mock(), None)  # type: ignore[arg-type]
    return message, state


@needs_retry_policy
def test_airflow_fails_a_refused_key_without_burning_retries() -> None:
    from airflow.sdk.api.datamodels._generated import TaskInstanceState

    message, state = _failed_task_outcome(PrimeAuthError("401: check the API key"))
    assert state is TaskInstanceState.FAILED
    assert message.state is TaskInstanceState.FAILED


@needs_retry_policy
def test_airflow_retries_a_sold_out_create_after_the_long_delay() -> None:
    from airflow.sdk.api.datamodels._generated import TaskInstanceState

    message, state = _failed_task_outcome(PrimeSoldOutError("Offer x is out of stock"))
    assert state is TaskInstanceState.UP_FOR_RETRY
    assert message.retry_delay_seconds == NO_CAPACITY_RETRY_DELAY.total_seconds()
    assert "No GPU capacity" in message.retry_reason


@needs_retry_policy
def test_airflow_fails_a_capacity_wait_that_reached_its_deadline_without_another_wait() -> None:
    """The user said how long to wait for capacity: a retry would wait that long all over again."""
    from airflow.sdk.api.datamodels._generated import TaskInstanceState

    message, state = _failed_task_outcome(PrimeCapacityTimeoutError("no offer came within 2:00:00"))
    assert state is TaskInstanceState.FAILED
    assert message.state is TaskInstanceState.FAILED


@needs_retry_policy
def test_airflow_retries_transient_trouble_with_the_tasks_delay() -> None:
    from airflow.sdk.api.datamodels._generated import TaskInstanceState

    message, state = _failed_task_outcome(PrimeTransientError("HTTP 503"))
    assert state is TaskInstanceState.UP_FOR_RETRY
    assert message.retry_delay_seconds is None  # the task's retry_delay (42 s) applies


def test_default_args_with_the_policy_build_on_every_airflow() -> None:
    """The documented use: in ``default_args`` (3.1 and 3.2 ignore a key no operator takes)."""
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    args = {"retries": 2, "retry_policy": PRIME_RETRY_POLICY}
    with DAG("retry_policy_args", schedule=None, start_date=start, default_args=args):
        task = EmptyOperator(task_id="t")
    assert task.retries == 2
    assert getattr(task, "retry_policy", None) is PRIME_RETRY_POLICY
