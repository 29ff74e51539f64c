"""A wait that fails on a broken pod quotes the tail of the pod's own log: sensor and trigger.

The rules (``readiness.add_pod_logs``): only a pod in ``ERROR`` or whose installation failed is
read; at most ``POD_LOGS_QUOTED`` pods, ``POD_LOG_CHARS`` characters each (a trigger's event is
stored); the key never in it; a log that cannot be read is one clause and the failure stays the
failure; ``pod_log_tail=0`` reads nothing. Sensor and trigger run against the simulator over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from unittest import mock

import pytest

from airflow_provider_prime.exceptions import PrimeAuthError, PrimePodFailedError
from airflow_provider_prime.readiness import (
    POD_LOG_CHARS,
    POD_LOGS_QUOTED,
    Outcome,
    PodWait,
    Requirements,
    Step,
    aadd_pod_logs,
    add_pod_logs,
    by_id,
    log_section,
    pods_worth_a_log,
)
from airflow_provider_prime.sensors.pod_status import PodStatusSensor
from airflow_provider_prime.testing import (
    DEFAULT_INSTALLATION_FAILURE,
    Fault,
    ManualClock,
    failing_pod,
    install_failure_pod,
    ready_pod,
)
from airflow_provider_prime.testing.pod_logs import INSTALL_STEPS
from airflow_provider_prime.triggers.pod_status import PodStatusTrigger
from tests.statuses import pod

try:
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow 3.1
    from airflow.exceptions import TaskDeferred  # type: ignore[no-redef, attr-defined, unused-ignore]

KEY = "pk-tail-secret-abcdef0123"


def failed_step(*statuses: Any) -> Step:
    wait = PodWait([s.pod_id for s in statuses], Requirements(), mock.Mock(), deadline=time.time() + 60)
    return wait.answer(by_id(statuses), time.time())


# -- the rules, in memory ---------------------------------------------------------------------------


def test_only_error_and_failed_installs_are_read() -> None:
    step = failed_step(
        pod("err", status="ERROR"),
        pod("inst", installation="ERROR", installation_failure="pip failed"),
        pod("gone", status="TERMINATED"),
        pod("ok"),
    )
    assert step.outcome is Outcome.FAILED
    assert pods_worth_a_log(step) == ["err", "inst"]
    read: list[str] = []
    out = add_pod_logs(step, lambda pod_id: read.append(pod_id) or [f"{pod_id} said bye"])
    assert read == ["err", "inst"]
    assert type(out.error) is PrimePodFailedError
    message = str(out.error)
    assert message.startswith(str(step.error) + "\n")
    assert "The last line of pod err's log:\n  | err said bye" in message
    assert "The last line of pod inst's log:\n  | inst said bye" in message


def test_no_reader_or_no_failed_pod_changes_nothing() -> None:
    step = failed_step(pod("err", status="ERROR"))
    assert add_pod_logs(step, None) is step
    auth = Step(Outcome.FAILED, None, PrimeAuthError("401"))
    assert add_pod_logs(auth, lambda _pod: ["x"]) is auth


def test_a_log_that_cannot_be_read_is_one_clause_and_the_failure_stays() -> None:
    step = failed_step(pod("err", status="ERROR"))

    def broken(_pod: str) -> list[str]:
        raise PrimeAuthError("HTTP 403 while reading the log of pod err.\nThe key needs Instances → Read")

    message = str(add_pod_logs(step, broken).error)
    assert message == (
        "Pod wait failed: err: pod is ERROR\nThe log of pod err could not be read (HTTP 403 while "
        "reading the log of pod err. The key needs Instances → Read)."
    )
    assert "is empty" in str(add_pod_logs(step, lambda _pod: []).error)


def test_the_quote_is_bounded_in_pods_and_characters() -> None:
    step = failed_step(*(pod(f"p{n}", status="ERROR") for n in range(POD_LOGS_QUOTED + 2)))
    lines = [f"line {n} " + "y" * 90 for n in range(1000)]
    message = str(add_pod_logs(step, lambda _pod: lines).error)
    assert message.count("'s log (the ") == POD_LOGS_QUOTED
    assert "(2 more failed pods: their logs are not quoted here.)" in message
    assert len(message) < POD_LOGS_QUOTED * (POD_LOG_CHARS + 200) + len(str(step.error))
    assert lines[-1] in message  # the newest lines win
    section = log_section("p0", lines)
    assert section.startswith("The last ")
    assert "lines before them left out" in section


async def test_async_reads_concurrently_and_lets_a_cancel_through() -> None:
    step = failed_step(pod("a", status="ERROR"), pod("b", status="ERROR"))
    started: list[str] = []
    both = asyncio.Event()

    async def read(pod_id: str) -> list[str]:
        started.append(pod_id)
        if len(started) == 2:
            both.set()
        await both.wait()  # each read waits for the other: only concurrent reads finish
        return [pod_id]

    assert "pod b's log:\n  | b" in str((await aadd_pod_logs(step, read)).error)

    async def cancelled(_pod: str) -> list[str]:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await aadd_pod_logs(step, cancelled)


# -- the sensor, over HTTP ----------------------------------------------------------------------------


def sensor(pod_ids: Any, **kwargs: Any) -> PodStatusSensor:
    kwargs.setdefault("poke_interval", 0.01)
    kwargs.setdefault("timeout", 60)
    kwargs.setdefault("deferrable", False)
    return PodStatusSensor(task_id="wait_for_pods", pod_ids=pod_ids, **kwargs)


def context() -> dict[str, Any]:
    ti = mock.Mock()
    ti.get_first_reschedule_date.return_value = None
    return {"ti": ti}


@pytest.fixture
def broken(prime_simulator_factory, prime_connect):
    """``bad`` failed its installation, ``good`` is ready; the key is KEY."""
    clock = ManualClock()
    sim = prime_simulator_factory(
        ready_pod("good", ready_at=2), install_failure_pod("bad", fail_at=4), clock=clock, api_keys=(KEY,)
    )
    clock.advance(10)
    prime_connect(sim)
    return sim


def log_path(pod_id: str) -> str:
    return f"/api/v1/pods/{pod_id}/log"


def test_sensor_failure_quotes_the_tail_of_the_failed_pods_log(broken, logs) -> None:
    with pytest.raises(PrimePodFailedError) as caught:
        sensor(["good", "bad"], pod_log_tail=4).execute(context())
    message = str(caught.value)
    assert f"bad: pod is ACTIVE, installation ERROR: {DEFAULT_INSTALLATION_FAILURE}" in message
    assert "The last 4 lines of pod bad's log:\n" in message
    assert message.rstrip().endswith(f"ERROR: {DEFAULT_INSTALLATION_FAILURE}")
    assert INSTALL_STEPS[-1] in message
    assert (broken.stats.by_path[log_path("bad")], broken.stats.by_path[log_path("good")]) == (1, 0)
    assert KEY not in message + json.dumps(logs, default=str)


def test_sensor_default_tail_is_50_and_zero_reads_nothing(broken) -> None:
    assert sensor("bad").pod_log_tail == 50
    with pytest.raises(PrimePodFailedError) as caught:
        sensor("bad", pod_log_tail=0).execute(context())
    assert "\n" not in str(caught.value)  # the failure alone
    assert broken.stats.by_path[log_path("bad")] == 0


def test_sensor_scrubs_the_key_the_log_printed(broken) -> None:
    broken.inject(Fault.raw(f"export PRIME_API_KEY={KEY}\ninstall failed\n", path=log_path("bad")))
    with pytest.raises(PrimePodFailedError) as caught:
        sensor("bad").execute(context())
    assert "  | export PRIME_API_KEY=***\n  | install failed" in str(caught.value)
    assert KEY not in str(caught.value)


def test_sensor_failure_stays_the_failure_when_the_log_cannot_be_read(broken) -> None:
    broken.inject(Fault.server_error(503, times=None, path=log_path("bad")))
    with pytest.raises(PrimePodFailedError) as caught:
        sensor("bad").execute(context())
    first, second = str(caught.value).split("\n")
    assert first.startswith("Pod wait failed: bad: pod is ACTIVE, installation ERROR")
    assert second.startswith("The log of pod bad could not be read (Gave up after")
    assert "HTTP 503" in second


@pytest.mark.parametrize("tail", [-1, 2.5, True])
def test_sensor_refuses_a_bad_tail(tail: Any) -> None:
    with pytest.raises(Exception, match="pod_log_tail must be a whole number"):
        sensor("bad", pod_log_tail=tail)


def test_sensor_hands_its_tail_to_the_trigger() -> None:
    made = sensor("bad", pod_log_tail=7)
    made._wait = PodWait(["bad"], Requirements(), mock.Mock(), deadline=time.time() + 60)
    with pytest.raises(TaskDeferred) as deferred:
        made._defer(made._wait)
    trigger = deferred.value.trigger
    assert trigger.pod_log_tail == 7
    assert trigger.serialize()[1]["pod_log_tail"] == 7


# -- the trigger, over HTTP ---------------------------------------------------------------------------


def trigger(pod_ids: list[str], **kwargs: Any) -> PodStatusTrigger:
    return PodStatusTrigger(pod_ids=pod_ids, deadline=time.time() + 10, poll_interval=0.05, **kwargs)


async def the_event(t: PodStatusTrigger) -> dict[str, Any]:
    (event,) = [event.payload async for event in t.run()]
    return dict(event)


async def test_trigger_event_carries_the_tail_bounded(broken, logs) -> None:
    event = await the_event(trigger(["good", "bad"]))
    assert event["status"] == "failed"
    assert event["error_type"] == "PrimePodFailedError"
    message = event["message"]
    assert "The last " in message
    assert "of pod bad's log:\n" in message
    assert message.rstrip().endswith(f"ERROR: {DEFAULT_INSTALLATION_FAILURE}")
    assert any(e["event"] == message for e in logs)  # the task log (the trigger's) has it too
    assert KEY not in json.dumps(event) + json.dumps(logs, default=str)

    huge = "\n".join(f"{n} " + "z" * 400 for n in range(1000))
    broken.inject(Fault.raw(huge, path=log_path("bad")))
    bounded = await the_event(trigger(["bad"], pod_log_tail=1000))
    assert len(json.dumps(bounded)) < POD_LOG_CHARS + 1000


async def test_trigger_pod_in_error_and_tail_zero(prime_simulator_factory, prime_connect) -> None:
    clock = ManualClock()
    sim = prime_simulator_factory(failing_pod("doomed", fail_at=2), clock=clock)
    clock.advance(5)
    prime_connect(sim)
    event = await the_event(trigger(["doomed"]))
    assert "doomed: pod is ERROR" in event["message"]
    assert "ERROR: the machine stopped responding" in event["message"]
    quiet = await the_event(trigger(["doomed"], pod_log_tail=0))
    assert "\n" not in quiet["message"]
    assert sim.stats.by_path[log_path("doomed")] == 1


def test_trigger_serializes_its_tail_only_when_not_the_default() -> None:
    assert "pod_log_tail" not in trigger(["a"]).serialize()[1]
    _, kwargs = trigger(["a"], pod_log_tail=0).serialize()
    assert PodStatusTrigger(**kwargs).pod_log_tail == 0
