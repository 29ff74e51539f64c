"""PodStatusSensor with the real hook over HTTP, against the simulator on 127.0.0.1, in every mode."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from unittest import mock

import pytest

from airflow_provider_prime.exceptions import PrimeAuthError, PrimePodFailedError
from airflow_provider_prime.sensors.pod_status import PodStatusSensor
from airflow_provider_prime.testing import (
    DEFAULT_INSTALLATION_FAILURE,
    STATUS_PATH,
    Fault,
    ManualClock,
    fixed_pod,
    install_failure_pod,
    ready_pod,
)
from tests.simulated import advancing_per_request

try:
    from airflow.sdk.exceptions import AirflowRescheduleException, TaskDeferred
except ImportError:  # Airflow 3.1
    from airflow.exceptions import AirflowRescheduleException, TaskDeferred


def sensor(pod_ids: Any, **kwargs: Any) -> PodStatusSensor:
    kwargs.setdefault("poke_interval", 0.01)
    kwargs.setdefault("timeout", 60)
    kwargs.setdefault("deferrable", False)
    return PodStatusSensor(task_id="wait_for_pods", pod_ids=pod_ids, **kwargs)


def context() -> dict[str, Any]:
    ti = mock.Mock()
    ti.get_first_reschedule_date.return_value = None
    return {"ti": ti}


def test_poke_mode_waits_through_the_lifecycle_and_hands_over(prime_simulator_factory, prime_connect, logs):
    clock = ManualClock()
    sim = prime_simulator_factory(
        ready_pod("single", ready_at=6), ready_pod("multi", ready_at=8, nodes=2), clock=clock
    )
    prime_connect(sim)
    with advancing_per_request(sim, clock, step=1):
        handover = sensor(["single", "multi"]).execute(context())
    assert set(handover) == {"single", "multi"}
    assert len(handover["multi"]["ssh_connections"]) == 2
    assert all(handover["multi"]["ssh_connections"])
    assert sim.stats.by_path[STATUS_PATH] >= 8  # one request per poke, for both pods
    assert all(sorted(r.pod_ids) == ["multi", "single"] for r in sim.stats.log)
    assert any(e["event"].startswith("Waiting for pods: 0/2 pods ready") for e in logs)
    assert sim.api_key not in json.dumps(handover) + json.dumps(logs, default=str)


def test_installation_failure_fails_with_the_platform_text(prime_simulator_factory, prime_connect):
    prime_connect(
        prime_simulator_factory(ready_pod("good", ready_at=2), install_failure_pod("bad", fail_at=4))
    )
    with pytest.raises(PrimePodFailedError) as caught:
        sensor(["good", "bad"]).execute(context())
    assert f"bad: pod is ACTIVE, installation ERROR: {DEFAULT_INSTALLATION_FAILURE}" in str(caught.value)


def test_transient_errors_are_waited_out(prime_simulator_factory, prime_connect):
    sim = prime_simulator_factory(fixed_pod("p"))
    prime_connect(sim)
    sim.inject(Fault.server_error(503, times=4), Fault.rate_limited(retry_after=0.01, times=1))
    assert set(sensor("p").execute(context())) == {"p"}
    codes = sim.stats.by_status
    assert (codes[503], codes[429], codes[200]) == (4, 1, 1)


def test_wrong_key_fails_at_once_without_the_key_in_the_message(prime_simulator_factory, prime_connect):
    sim = prime_simulator_factory(fixed_pod("p"))
    prime_connect(sim, api_key="pk-wrong-key-456")
    with pytest.raises(PrimeAuthError) as caught:
        sensor("p").execute(context())
    assert "pk-wrong-key-456" not in str(caught.value)
    assert sim.stats.total == 1


def test_reschedule_mode_reschedules_then_hands_over(prime_simulator_factory, prime_connect):
    clock = ManualClock()
    sim = prime_simulator_factory(ready_pod("p", ready_at=10), clock=clock)
    prime_connect(sim)
    with pytest.raises(AirflowRescheduleException):
        sensor("p", mode="reschedule", poke_interval=60).execute(context())
    clock.advance(10)
    assert set(sensor("p", mode="reschedule", poke_interval=60).execute(context())) == {"p"}


def test_deferrable_mode_defers_then_completes_with_the_trigger_event(prime_simulator_factory, prime_connect):
    clock = ManualClock()
    sim = prime_simulator_factory(ready_pod("p", ready_at=10), clock=clock)
    prime_connect(sim)
    s = sensor("p", deferrable=True, poke_interval=0.05)
    with pytest.raises(TaskDeferred) as caught:
        s.execute(context())
    deferred = caught.value
    clock.advance(10)

    async def run_trigger() -> dict[str, Any]:
        (event,) = [e.payload async for e in deferred.trigger.run()]
        return event

    event = asyncio.run(run_trigger())
    handover = getattr(s, deferred.method_name)(context(), event)
    assert handover["p"]["status"] == "ACTIVE"
    assert handover["p"]["ssh_connections"]
