"""PodStatusTrigger: serialization, and run() with an in-memory API (the rules, one by one)."""

from __future__ import annotations

import asyncio
import importlib
import json
import time
from typing import Any
from unittest import mock

import pytest

from airflow_provider_prime import events as events_module
from airflow_provider_prime.exceptions import (
    PrimeAuthError,
    PrimeConfigError,
    PrimeRequestError,
    PrimeTransientError,
)
from airflow_provider_prime.hooks._settings import PrimeApiSettings
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.triggers import polling
from airflow_provider_prime.triggers.pod_status import PodStatusTrigger
from airflow_provider_prime.triggers.polling import active_pollers
from tests.clocks import FakeClock
from tests.simulated import until
from tests.statuses import SSH, pod
from tests.triggers.fakes import FakeApi

KEY = "pk-SECRET-never-serialized-7c1e"
SETTINGS = PrimeApiSettings(base_url="http://127.0.0.1:9", api_key=KEY)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    """The API the trigger talks to; the hook's settings lookup is replaced by a mock."""
    fake = FakeApi()
    monkeypatch.setattr(PrimeHook, "async_status_client", fake.client)
    monkeypatch.setattr(PrimeHook, "aget_settings", mock.AsyncMock(return_value=SETTINGS))
    return fake


def trigger(
    pod_ids=("a",), timeout: float = 5.0, clock: FakeClock | None = None, **kwargs: Any
) -> PodStatusTrigger:
    kwargs.setdefault("poll_interval", 0.05)
    now = time.time() if clock is None else clock.time()
    made = PodStatusTrigger(pod_ids=list(pod_ids), deadline=now + timeout, **kwargs)
    if clock is not None:
        made.clock = clock
    return made


async def events(t: PodStatusTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in t.run()]


async def the_event(t: PodStatusTrigger) -> dict[str, Any]:
    (event,) = await events(t)  # exactly one event, then run() returns
    return event


class TestSerialization:
    def test_round_trip(self):
        original = PodStatusTrigger(
            pod_ids=["a", "b"],
            deadline=1_900_000_000.5,
            prime_conn_id="prime_gpu",
            poll_interval=7,
            wait_for_installation=False,
            require_ssh=False,
            missing_grace=12,
            missing_since={"b": 1_899_999_999.0},
            first_answer_by=1_899_999_995.0,
            not_before=1_899_999_990.0,
            answered=True,
        )
        classpath, kwargs = original.serialize()
        module, _, name = classpath.rpartition(".")
        rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
        assert rebuilt.serialize() == (classpath, kwargs)
        assert kwargs == {
            "pod_ids": ["a", "b"],
            "deadline": 1_900_000_000.5,
            "prime_conn_id": "prime_gpu",
            "poll_interval": 7.0,
            "wait_for_installation": False,
            "require_ssh": False,
            "missing_grace": 12.0,
            "missing_since": {"b": 1_899_999_999.0},
            "first_answer_by": 1_899_999_995.0,
            "not_before": 1_899_999_990.0,
            "answered": True,
        }

    def test_a_trigger_serialized_before_answered_existed_still_loads(self):
        _, kwargs = trigger(["a"]).serialize()
        del kwargs["answered"]
        assert PodStatusTrigger(**kwargs).answered is False

    def test_kwargs_are_plain_json_values(self):
        _, kwargs = trigger(["a"]).serialize()
        assert json.loads(json.dumps(kwargs)) == kwargs

    def test_airflow_serializer_round_trip(self):
        from airflow.serialization.serialized_objects import BaseSerialization

        _, kwargs = trigger(["a", "b"]).serialize()
        assert BaseSerialization.deserialize(BaseSerialization.serialize(kwargs)) == kwargs

    async def test_the_key_is_never_in_kwargs_or_repr(self, api):
        api.set(pod("a"))
        t = trigger(["a"])
        await the_event(t)  # after a run, when the key has been looked up
        _, kwargs = t.serialize()
        assert KEY not in json.dumps(kwargs)
        assert KEY not in repr(t)

    def test_ids_are_validated_and_deduplicated(self):
        assert trigger(["a", "a", "b"]).pod_ids == ["a", "b"]
        with pytest.raises(PrimeConfigError, match="empty"):
            trigger([])

    def test_a_bare_string_is_one_pod_id(self):
        # Regression: the trigger used to iterate it, waiting on ['p', 'o', 'd', '-', 'a', 'b', 'c'].
        t = PodStatusTrigger(pod_ids="pod-abc", deadline=time.time() + 5)
        assert t.pod_ids == ["pod-abc"]
        assert t.serialize()[1]["pod_ids"] == ["pod-abc"]

    @pytest.mark.parametrize("bad", ["", "a,b", ["a", 3], None])
    def test_bad_ids_get_the_sensors_message(self, bad):
        from airflow_provider_prime.pod_ids import validate_pod_ids

        with pytest.raises(PrimeConfigError) as expected:
            validate_pod_ids(bad)
        with pytest.raises(PrimeConfigError) as caught:
            PodStatusTrigger(pod_ids=bad, deadline=time.time() + 5)
        assert str(caught.value) == str(expected.value)


class TestRun:
    async def test_ready_pods_give_success_with_the_handover(self, api):
        api.set(pod("a"), pod("b", ssh=[SSH, None]))
        t = trigger(["a", "b"])
        waiting = asyncio.create_task(the_event(t))
        await until(lambda: len(api.calls) >= 2)
        assert not waiting.done()  # node 2 of b has no SSH yet
        api.set(pod("b", ssh=[SSH, "root@10.0.0.2 -p 22"]))
        event = await waiting
        assert event["status"] == "success"
        assert event["pods"]["b"]["ssh_connections"] == [SSH, "root@10.0.0.2 -p 22"]
        assert set(event["pods"]) == {"a", "b"}
        assert event["message"] == "2/2 pods ready"

    async def test_failed_pod_gives_failed_with_the_platform_reason(self, api):
        api.set(pod("a"), pod("b", installation="ERROR", installation_failure="CUDA toolkit not found"))
        event = await the_event(trigger(["a", "b"]))
        assert event["status"] == "failed"
        assert event["error_type"] == "PrimePodFailedError"
        assert "b: pod is ACTIVE, installation ERROR: CUDA toolkit not found" in event["message"]
        assert set(event["pods"]) == {"a", "b"}

    async def test_no_request_before_not_before(self, api):
        api.set(pod("a"))
        requests_by_then: list[int] = []
        clock = FakeClock(on_pause=lambda _: requests_by_then.append(len(api.calls)))
        event = await the_event(trigger(["a"], timeout=60, clock=clock, not_before=clock.time() + 7))
        assert clock.pauses == [7]
        assert requests_by_then == [0]  # the sensor has just checked: the trigger's first look waits
        assert event["status"] == "success"
        assert len(api.calls) == 1

    async def test_not_before_past_the_deadline_still_times_out_on_time(self, api):
        api.set(pod("a", status="PROVISIONING"))
        clock = FakeClock()
        event = await the_event(trigger(["a"], timeout=30, clock=clock, not_before=clock.time() + 60))
        assert event["status"] == "timeout"
        assert clock.pauses == [30]  # to the deadline, not to not_before

    async def test_triggers_starting_together_share_one_connection_lookup(self, api):
        api.set(pod("a"))
        events = await asyncio.gather(*(the_event(trigger(["a"])) for _ in range(50)))
        assert {event["status"] for event in events} == {"success"}
        assert PrimeHook.aget_settings.await_count == 1

    async def test_a_failed_lookup_is_not_kept(self, api):
        api.set(pod("a"))
        good = PrimeHook.aget_settings.return_value
        PrimeHook.aget_settings.side_effect = [PrimeConfigError("no key"), good]
        assert (await the_event(trigger(["a"])))["status"] == "failed"
        assert (await the_event(trigger(["a"])))["status"] == "success"
        assert PrimeHook.aget_settings.await_count == 2

    async def test_settings_are_looked_up_again_after_the_ttl(self, api, monkeypatch):
        api.set(pod("a"))
        monkeypatch.setattr(polling, "SETTINGS_TTL", -1.0)  # every lookup is past it
        await the_event(trigger(["a"]))
        await the_event(trigger(["a"]))
        assert PrimeHook.aget_settings.await_count == 2

    async def test_requirements_are_honoured(self, api):
        api.set(pod("a", installation="ACTIVE", ssh=None))
        event = await the_event(trigger(["a"], wait_for_installation=False, require_ssh=False))
        assert event["status"] == "success"

    async def test_deadline_gives_timeout_with_last_progress(self, api):
        api.set(pod("a", status="PROVISIONING"))
        api.clock, api.took = FakeClock(), 20.0
        event = await the_event(trigger(["a"], timeout=50, clock=api.clock))
        assert event["status"] == "timeout"
        assert len(api.calls) == 3  # answers at 20 and 40 s; the one at 60 s is past the deadline
        assert "not ready by the deadline" in event["message"]
        assert "a: pod is PROVISIONING" in event["message"]

    async def test_deadline_already_past_gives_timeout_at_once(self, api):
        event = await the_event(trigger(["a"], timeout=-1))
        assert event["status"] == "timeout"
        assert "before the trigger started" in event["message"]
        PrimeHook.aget_settings.assert_not_awaited()
        assert api.clients == []

    async def test_transient_errors_are_waited_out(self, api, logs):
        api.set(pod("a"))
        api.errors += [PrimeTransientError("429 Too Many Requests", http_status=429)] * 2
        event = await the_event(trigger(["a"]))
        assert event["status"] == "success"
        assert len(api.calls) == 3
        warnings = [entry["event"] for entry in logs if entry["log_level"] == "warning"]
        assert warnings == ["Cannot reach the Prime API, will keep trying: 429 Too Many Requests"]
        recovered = [entry["event"] for entry in logs if entry["event"].startswith("Prime API reachable")]
        assert recovered == ["Prime API reachable again after 2 failed attempts over 0 s"]

    async def test_a_timeout_after_api_errors_names_the_last_one(self, api):
        api.set(pod("a", status="PROVISIONING"))
        t = trigger(["a"], timeout=0.6)
        waiting = asyncio.create_task(the_event(t))
        await until(lambda: len(api.calls) >= 2)
        api.errors += [PrimeTransientError("503 Service Unavailable", http_status=503)] * 100
        event = await waiting
        assert event["status"] == "timeout"
        assert "a: pod is PROVISIONING" in event["message"]
        assert "the last API call failed: 503 Service Unavailable" in event["message"]

    @pytest.mark.parametrize(
        "error",
        [
            PrimeAuthError("401: check the API key and its Instances → Read permission", http_status=401),
            PrimeRequestError("422: invalid pod_ids", http_status=422),
        ],
    )
    async def test_errors_no_wait_can_fix_fail_at_once(self, api, error):
        api.errors.append(error)
        event = await the_event(trigger(["a"]))
        assert event == events_module.build_failed(error)
        assert (event["status"], event["error_type"], event["message"]) == (
            "failed",
            type(error).__name__,
            str(error),
        )
        assert len(api.calls) == 1

    async def test_a_lone_refusal_after_answers_fails_no_wait(self, api, logs):
        api.set(pod("a", status="PROVISIONING"))
        waiting = asyncio.create_task(the_event(trigger(["a"])))
        # The wait has judged its first answer (not only sent the request, which the error could reach).
        await until(lambda: any(e["event"].startswith("Waiting for pods") for e in logs))
        api.errors.append(PrimeAuthError("401: the API key was rejected", http_status=401))
        await until(lambda: len(api.calls) >= 3)
        api.set(pod("a"))
        assert (await waiting)["status"] == "success"

    @pytest.mark.parametrize("answered", [True, False])
    async def test_refusals_that_persist_past_the_grace_fail_the_wait(self, api, answered):
        error = PrimeAuthError("401: the API key was revoked", http_status=401)
        api.errors += [error] * 1000
        api.clock, api.took = FakeClock(), 20.0
        event = await the_event(trigger(["a"], timeout=3600, clock=api.clock, answered=answered))
        assert (event["status"], event["error_type"]) == ("failed", "PrimeAuthError")
        if answered:  # handed over after good answers: ridden out for the 60 s grace, then failed
            assert len(api.calls) == 4  # refused at 20, 40, 60 and 80 s
        else:  # never an answer: a wrong key, failed at the first refusal
            assert len(api.calls) == 1

    async def test_unusable_connection_fails_with_its_message(self, api):
        problem = PrimeConfigError("Connection 'prime_default' has no API key")
        PrimeHook.aget_settings.side_effect = problem
        event = await the_event(trigger(["a"]))
        assert event["error_type"] == "PrimeConfigError"
        assert event["message"] == str(problem)

    async def test_unexpected_error_fails_and_names_it(self, api):
        api.errors.append(RuntimeError("boom"))
        event = await the_event(trigger(["a"]))
        assert event["error_type"] == "PrimeError"
        assert "RuntimeError: boom" in event["message"]

    async def test_missing_pod_fails_after_the_grace_period(self, api):
        api.set(pod("a"))
        event = await the_event(trigger(["a", "ghost"], missing_grace=0))
        assert event["status"] == "failed"
        assert "ghost: not found or not visible to this API key" in event["message"]

    async def test_missing_clock_carries_over_from_the_sensor(self, api):
        api.set(pod("a"))
        since = {"ghost": time.time() - 100}
        event = await the_event(trigger(["a", "ghost"], missing_grace=60, missing_since=since))
        assert event["status"] == "failed"
        assert len(api.calls) == 1

    async def test_missing_pod_that_appears_within_grace_is_fine(self, api):
        t = trigger(["a"], missing_grace=60)
        waiting = asyncio.create_task(the_event(t))
        await until(lambda: len(api.calls) >= 2)
        api.set(pod("a"))
        assert (await waiting)["status"] == "success"

    async def test_progress_is_logged_when_it_changes_not_every_poll(self, api, logs):
        api.set(pod("a", status="PENDING"))
        waiting = asyncio.create_task(the_event(trigger(["a"])))
        await until(lambda: len(api.calls) >= 4)
        api.set(pod("a", installation="ACTIVE", installation_progress=50))
        await until(lambda: len(api.calls) >= 8)
        api.set(pod("a"))
        await waiting
        progress = [entry["event"] for entry in logs if entry["event"].startswith("Waiting for pods")]
        assert progress == [
            "Waiting for pods: 0/1 pods ready; a: pod is PENDING",
            "Waiting for pods: 0/1 pods ready; a: ACTIVE, installation ACTIVE 50%",
        ]

    async def test_two_triggers_for_the_same_pods_share_requests_and_both_fire(self, api):
        api.set(pod("a", status="PENDING"))
        first = asyncio.create_task(the_event(trigger(["a"])))
        second = asyncio.create_task(the_event(trigger(["a"])))
        await until(lambda: len(api.calls) >= 2)
        assert len(active_pollers()) == 1
        api.set(pod("a"))
        assert (await first)["status"] == (await second)["status"] == "success"
        assert len(api.clients) == 1

    async def test_cancelled_mid_request_leaves_nothing_behind(self, api):
        api.stall = asyncio.Event()
        task = asyncio.create_task(the_event(trigger(["a"])))
        await until(lambda: bool(api.calls))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert api.clients[0].cancelled == 1
        assert api.clients[0].closed
        assert active_pollers() == []
        assert asyncio.all_tasks() == {asyncio.current_task()}
