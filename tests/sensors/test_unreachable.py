"""An API that cannot be reached, over real sockets, in poke, reschedule and deferrable mode.

A wait that has never had an answer (a port nothing listens on, a host that does not resolve,
https to a plain-HTTP server) fails after ``unreachable_timeout`` with a message about the
connection; a wait that had answers and then lost the API waits on until its timeout, and its
timeout names the last error.
"""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import datetime, timedelta, timezone
from typing import Any
from unittest import mock

import pytest

from airflow_provider_prime._compat import AirflowSensorTimeout
from airflow_provider_prime.exceptions import PrimeConnectionError
from airflow_provider_prime.sensors.pod_status import PodStatusSensor
from airflow_provider_prime.testing import fixed_pod
from tests.simulated import connection_env

try:
    from airflow.sdk.exceptions import AirflowRescheduleException, TaskDeferred
except ImportError:  # Airflow 3.1
    from airflow.exceptions import AirflowRescheduleException, TaskDeferred

KEY = "pk-unreachable-test-key"


def refused_url() -> str:
    """A loopback URL whose port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def use(monkeypatch: pytest.MonkeyPatch):
    def define(base_url: str) -> str:
        for name, value in connection_env(base_url, KEY).items():
            monkeypatch.setenv(name, value)
        return base_url

    return define


def sensor(**kwargs: Any) -> PodStatusSensor:
    kwargs.setdefault("poke_interval", 0.05)
    kwargs.setdefault("timeout", 60)
    kwargs.setdefault("unreachable_timeout", 0.5)
    kwargs.setdefault("deferrable", False)
    return PodStatusSensor(task_id="wait_for_pods", pod_ids="p", **kwargs)


def context(first_reschedule: datetime | None = None) -> dict[str, Any]:
    ti = mock.Mock()
    ti.get_first_reschedule_date.return_value = first_reschedule
    return {"ti": ti}


def keep_poking(s: PodStatusSensor) -> None:
    """What poke mode does between checks, on the sensor's own wait (not a new one)."""
    while not s.poke(context()):
        time.sleep(0.1)


def assert_points_at_the_connection(error: BaseException, base_url: str) -> None:
    message = str(error)
    assert f"The Prime API at {base_url} (connection 'prime_default') has not answered" in message
    for hint in ("host and port", "DNS", "TLS", "HTTPS_PROXY"):
        assert hint in message
    assert KEY not in message


@pytest.fixture(params=["refused", "unresolvable", "tls-to-plain-http"])
def dead_end(request: pytest.FixtureRequest, prime_simulator_factory) -> tuple[str, str]:
    """(base URL, words of the last error) of an endpoint that never answers."""
    if request.param == "refused":
        return refused_url(), "refused"
    if request.param == "unresolvable":
        return "https://nowhere.invalid", "nowhere.invalid"
    plain = prime_simulator_factory(fixed_pod("p"))  # plain HTTP; spoken to in TLS it never gives an answer
    return plain.base_url.replace("http://", "https://"), "ssl"


def test_poke_mode_fails_fast_when_the_api_never_answered(use, dead_end, logs):
    base_url, cause = dead_end
    use(base_url)
    started = time.monotonic()
    with pytest.raises(PrimeConnectionError) as caught:
        sensor().execute(context())
    assert time.monotonic() - started < 60  # not the whole timeout
    assert_points_at_the_connection(caught.value, base_url)
    assert cause in str(caught.value).lower()
    trouble = [e["event"] for e in logs if "Prime API" in e["event"] and e["log_level"] == "warning"]
    assert len(trouble) == 1  # said once, not at every poke
    assert trouble[0].startswith("Cannot reach the Prime API, will keep trying: ")


def test_reschedule_mode_holds_its_first_poke_until_an_answer_then_fails_fast(use, logs):
    base_url = use(refused_url())
    with pytest.raises(PrimeConnectionError) as caught:
        sensor(mode="reschedule", poke_interval=60).execute(context())
    assert_points_at_the_connection(caught.value, base_url)


def test_reschedule_mode_a_later_poke_keeps_waiting_it_had_an_answer_before(use):
    use(refused_url())
    earlier = datetime.now(timezone.utc) - timedelta(seconds=5)
    with pytest.raises(AirflowRescheduleException):
        sensor(mode="reschedule", poke_interval=60).execute(context(first_reschedule=earlier))


def test_deferrable_mode_fails_fast_in_the_trigger(use):
    base_url = use(refused_url())
    s = sensor(deferrable=True)
    with pytest.raises(TaskDeferred) as caught:
        s.execute(context())
    deferred = caught.value
    assert deferred.trigger.first_answer_by is not None

    async def run_trigger() -> dict[str, Any]:
        (event,) = [e.payload async for e in deferred.trigger.run()]
        return event

    event = asyncio.run(run_trigger())
    assert event["status"] == "failed"
    assert event["error_type"] == "PrimeConnectionError"
    with pytest.raises(PrimeConnectionError) as failed:
        s.execute_complete(context(), event)
    assert_points_at_the_connection(failed.value, base_url)


def test_a_wait_that_had_answers_waits_out_a_lost_api_and_its_timeout_names_the_error(
    prime_simulator_factory, prime_connect, logs
):
    sim = prime_simulator_factory(fixed_pod("p", "PROVISIONING"))
    prime_connect(sim)
    s = sensor(timeout=2.0, unreachable_timeout=0.1, poke_interval=0.1)
    s.poke(context())  # an answer: PROVISIONING
    sim.stop()  # the API is lost: the port now refuses
    with pytest.raises(AirflowSensorTimeout) as caught:
        keep_poking(s)
    message = str(caught.value)
    assert "p: pod is PROVISIONING; the last API call failed: " in message
    assert "refused" in message
