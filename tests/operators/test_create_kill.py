"""A create killed at any moment leaves nothing billing (findings 5 and 12), against the simulator.

The kill is delivered where Airflow delivers it: ``on_kill`` runs in the SIGTERM handler while
``execute`` is stopped wherever it was, and ``execute`` then goes on; an ``execution_timeout``
raises ``AirflowTaskTimeout`` (a ``BaseException``) inside ``execute``, then the task runner calls
``on_kill``. Each test puts the kill at one point by wrapping the hook call it interrupts: the real
request goes over HTTP first, so "the POST reached the server, its answer not read yet" is exact.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from airflow_provider_prime._compat import AirflowException
from airflow_provider_prime.deployment import deployment_id
from airflow_provider_prime.models import Pod
from airflow_provider_prime.operators import pod as pod_module
from airflow_provider_prime.operators.pod import PrimeCreatePodOperator
from airflow_provider_prime.operators.pod_names import derived_pod_name
from airflow_provider_prime.testing import Fault
from tests.operators.conftest import (
    SLOW_BOOT,
    TaskInstance,
    account,
    billing_after_deletes,
    billing_pods,
    create,
    make_context,
)

try:
    from airflow.sdk.exceptions import AirflowTaskTimeout
except ImportError:  # Airflow 3.1
    from airflow.exceptions import AirflowTaskTimeout  # type: ignore[attr-defined,no-redef]

NAME = derived_pod_name("train_dag", "manual__1", "create_pod", -1, deployment=deployment_id())


def posts(sim: Any) -> list[Any]:
    return [r for r in sim.stats.log if r.method == "POST"]


@pytest.mark.parametrize("deferrable", [False, True])
def test_a_sigterm_while_the_create_is_in_flight_deletes_the_new_pod_and_stops_the_task(
    lifecycle_sim, monkeypatch, deferrable
):
    sim = lifecycle_sim()
    operator = create(deferrable=deferrable)
    seen_by_on_kill: list[list[str]] = []
    real_create = operator.hook.create_pod

    def create_then_sigterm(request: Any) -> Pod:
        pod = real_create(request)  # the server made the pod; its answer is not back yet
        operator.on_kill()  # SIGTERM: the pod id is not known to the task
        seen_by_on_kill.append(billing_after_deletes(sim))
        return pod  # the handler returns and execute goes on

    monkeypatch.setattr(operator.hook, "create_pod", create_then_sigterm)
    with pytest.raises(AirflowException, match="killed"):
        operator.execute(make_context())  # neither waits nor defers

    assert seen_by_on_kill == [[]]  # on_kill found the pod by its name and deleted it
    assert account(sim)["created"] == {NAME: 1}
    assert billing_after_deletes(sim) == []


def test_a_timeout_while_the_create_is_in_flight_leaves_nothing_billing(lifecycle_sim, monkeypatch):
    sim = lifecycle_sim()
    operator = create()
    real_create = operator.hook.create_pod

    def create_then_timeout(request: Any) -> Pod:
        real_create(request)
        raise AirflowTaskTimeout()  # SIGALRM while reading the answer

    monkeypatch.setattr(operator.hook, "create_pod", create_then_timeout)
    with pytest.raises(AirflowTaskTimeout):
        operator.execute(make_context())
    operator.on_kill()  # what the task runner does next

    assert account(sim)["created"] == {NAME: 1}
    assert billing_after_deletes(sim) == []


def test_after_a_sigterm_the_task_never_creates(lifecycle_sim, monkeypatch):
    sim = lifecycle_sim()
    operator = create()
    real_offers = operator.hook.list_gpu_offers

    def offers_then_sigterm(*args: Any, **kwargs: Any) -> Any:
        offers = real_offers(*args, **kwargs)
        operator.on_kill()  # SIGTERM while choosing the offer: nothing exists yet
        return offers

    monkeypatch.setattr(operator.hook, "list_gpu_offers", offers_then_sigterm)
    with pytest.raises(AirflowException, match="nothing more is created"):
        operator.execute(make_context())
    assert posts(sim) == []
    assert account(sim)["created"] == {}


def test_a_sigterm_during_the_wait_stops_it_and_the_pod_is_deleted_once(lifecycle_sim, monkeypatch):
    sim = lifecycle_sim(SLOW_BOOT)
    operator = create()
    real_status = operator.hook.get_pods_status

    def status_then_sigterm(*args: Any, **kwargs: Any) -> Any:
        statuses = real_status(*args, **kwargs)
        operator.on_kill()
        return statuses

    monkeypatch.setattr(operator.hook, "get_pods_status", status_then_sigterm)
    with pytest.raises(AirflowException, match="killed"):
        operator.execute(make_context())
    assert account(sim)["deleted"] == {NAME: 1}
    assert len([r for r in sim.stats.log if r.method == "DELETE"]) == 1
    assert billing_after_deletes(sim) == []


def test_on_kill_makes_one_short_attempt_and_says_who_must_delete_the_pod(lifecycle_sim, monkeypatch, logs):
    """Finding 12: SIGKILL follows SIGTERM within about 5 s; the full retry budget outlives it."""
    sim = lifecycle_sim(SLOW_BOOT)
    monkeypatch.setattr(pod_module, "ON_KILL_BUDGET", 0.5)
    ti = TaskInstance()
    operator = create(wait_for_ready=False)
    operator.execute(make_context(ti))
    pod_id = ti.xcom["pod_id"]
    fault = sim.inject(Fault.hang(method="DELETE", times=100))

    started = time.monotonic()
    operator.on_kill()
    assert time.monotonic() - started < 2.0  # generous: the connection's own timeouts are 2 s, 3 tries

    errors = [e["event"] for e in logs if e["log_level"] == "error"]
    assert any(pod_id in e and "reaper" in e and "yourself" in e for e in errors), errors
    assert billing_pods(sim) == [pod_id]
    sim.clear_faults(fault[0])
    operator.hook.delete_pod(pod_id)  # the backstop, here
    assert billing_after_deletes(sim) == []


def test_a_kill_before_the_deferral_deletes_the_pod_instead_of_deferring(lifecycle_sim, monkeypatch):
    sim = lifecycle_sim(SLOW_BOOT)
    ti = TaskInstance()
    operator = create(deferrable=True)
    real_push = ti.xcom_push

    def push_then_sigterm(key: str, value: Any) -> None:
        real_push(key, value)
        if key == "pod_owned":
            operator.on_kill()

    monkeypatch.setattr(ti, "xcom_push", push_then_sigterm)
    with pytest.raises(AirflowException, match="killed"):  # a TaskDeferred would escape this
        operator.execute(make_context(ti))
    assert billing_after_deletes(sim) == []


class NoCallsInTheHandler:
    """Ownership records that fail the test when used inside ``on_kill`` (the supervisor's lock)."""

    def __init__(self, records: Any, operator: PrimeCreatePodOperator) -> None:
        self.records, self.operator = records, operator

    def __getattr__(self, method: str) -> Any:
        if self.operator._in_on_kill:
            raise AssertionError(f"owner_records.{method} called inside on_kill")
        return getattr(self.records, method)


def test_on_kill_makes_no_task_sdk_call_and_the_record_goes_when_the_task_stops(
    lifecycle_sim, monkeypatch, owner_records
):
    """The handler can interrupt a Variable call holding the supervisor channel's lock."""
    sim = lifecycle_sim(SLOW_BOOT)
    operator = create(name="my-box")
    operator.owner_records = NoCallsInTheHandler(owner_records, operator)  # type: ignore[assignment]
    real_status = operator.hook.get_pods_status

    def status_then_sigterm(*args: Any, **kwargs: Any) -> Any:
        statuses = real_status(*args, **kwargs)
        operator.on_kill()
        assert owner_records.get(deployment_id(), "my-box") is not None  # not yet
        return statuses

    monkeypatch.setattr(operator.hook, "get_pods_status", status_then_sigterm)
    with pytest.raises(AirflowException, match="killed"):
        operator.execute(make_context())
    assert owner_records.get(deployment_id(), "my-box") is None
    assert account(sim)["deleted"] == {"my-box": 1}
    assert billing_after_deletes(sim) == []
