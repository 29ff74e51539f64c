"""PodStatusSensor with the hook mocked: every rule of the wait, in poke, reschedule and deferrable mode."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any
from unittest import mock

import pytest

from airflow_provider_prime.exceptions import (
    PrimeAuthError,
    PrimeConfigError,
    PrimeError,
    PrimePodFailedError,
    PrimeRequestError,
    PrimeTransientError,
)
from airflow_provider_prime.sensors import pod_status
from airflow_provider_prime.sensors.pod_status import PodStatusSensor
from airflow_provider_prime.ssh import node_entry
from airflow_provider_prime.triggers.pod_status import PodStatusTrigger
from airflow_provider_prime.waiting import (
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
    DEFAULT_UNREACHABLE_TIMEOUT,
    DEFERRAL_MARGIN,
    LAST_CHECK_TIME,
    SETTLE_AFTER_DEFERRAL,
)
from tests.clocks import FakeClock
from tests.statuses import SSH, pod

try:
    from airflow.sdk.exceptions import (
        AirflowFailException,
        AirflowRescheduleException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferred,
    )
except ImportError:  # Airflow 3.1
    from airflow.exceptions import (
        AirflowFailException,
        AirflowRescheduleException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferred,
    )


class Api:
    """Stands in for PrimeHook.get_pods_status: answers (lists of statuses or errors) in turn.

    With a ``clock``, each call takes ``took`` seconds of it (and records its request deadline).
    """

    def __init__(self, *answers: Any, clock: FakeClock | None = None, took: float = 0.0) -> None:
        self.answers = list(answers)
        self.calls: list[list[str]] = []
        self.deadlines: list[float] = []
        self.clock, self.took = clock, took
        self.pod_logs: dict[str, list[str]] = {}

    def __call__(self, pod_ids, deadline=None):
        self.calls.append(list(pod_ids))
        self.deadlines.append(deadline)
        if self.clock is not None:
            self.clock.advance(self.took)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch):
    def install(*answers: Any, clock: FakeClock | None = None, took: float = 0.0) -> Api:
        fake = Api(*answers, clock=clock, took=took)
        monkeypatch.setenv("PRIME_API_KEY", "pk-sensor-test")  # settings resolve; no request is made
        monkeypatch.setattr(
            pod_status.PrimeHook, "get_pods_status", lambda self, ids, deadline: fake(ids, deadline)
        )
        # A failed pod's log (empty unless a test puts lines in fake.pod_logs): no request is made.
        monkeypatch.setattr(
            pod_status.PrimeHook,
            "get_pod_log",
            lambda self, pod_id, tail=50, *, deadline=None, secrets=(): list(fake.pod_logs.get(pod_id, []))[
                -tail:
            ],
        )
        return fake

    return install


def sensor(pod_ids: Any = "a", clock: FakeClock | None = None, **kwargs: Any) -> PodStatusSensor:
    kwargs.setdefault("poke_interval", 0)
    kwargs.setdefault("deferrable", False)
    made = PodStatusSensor(task_id="wait_for_pods", pod_ids=pod_ids, **kwargs)
    if clock is not None:
        made.clock = clock
    return made


def fake_clock() -> FakeClock:
    """A hand-moved clock that starts now (reschedule dates are real datetimes)."""
    return FakeClock(time.time())


def context(first_reschedule: datetime | None = None) -> dict[str, Any]:
    ti = mock.Mock()
    ti.get_first_reschedule_date.return_value = first_reschedule
    return {"ti": ti}


PENDING = [pod("a", status="PENDING")]
READY = [pod("a")]


class TestArguments:
    def test_defaults_fit_gpu_provisioning(self):
        s = PodStatusSensor(task_id="w", pod_ids="a")
        assert s.poke_interval == DEFAULT_POLL_INTERVAL == 15
        assert s.timeout == DEFAULT_TIMEOUT == 45 * 60
        assert s.mode == "poke"
        assert s.prime_conn_id == "prime_default"
        assert s.requirements.wait_for_installation
        assert s.requirements.require_ssh
        assert s.unreachable_timeout == DEFAULT_UNREACHABLE_TIMEOUT == 300

    @pytest.mark.parametrize(("value", "expected"), [("true", True), ("false", False)])
    def test_deferrable_follows_airflow_default(self, monkeypatch, value, expected):
        monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", value)
        assert PodStatusSensor(task_id="w", pod_ids="a").deferrable is expected

    def test_timedelta_arguments(self):
        s = sensor(poke_interval=timedelta(seconds=5), timeout=timedelta(minutes=10))
        assert (s.poke_interval, s.timeout) == (5, 600)

    @pytest.mark.parametrize(
        "bad", [[], "", "  ", ["a", ""], ["a", 3], None, "None", "null", "[]", ["a", None], "[a, b]", "a,b"]
    )
    def test_bad_rendered_ids_fail_before_any_request(self, api, bad):
        fake = api(READY)
        with pytest.raises(PrimeConfigError, match="pod_ids"):
            sensor(bad).execute(context())
        assert fake.calls == []


class TestPoke:
    def test_ready_returns_the_handover_as_xcom(self, api):
        api([pod("a", ssh=[SSH, "root@10.0.0.2 -p 22"], ip=["10.0.0.1", "10.0.0.2"])])
        result = sensor(["a", "a"]).poke(context())
        assert result.is_done
        assert result.xcom_value == {
            "a": {
                "status": "ACTIVE",
                "installation_status": "FINISHED",
                "provider_type": "runpod",
                "ssh_connections": [SSH, "root@10.0.0.2 -p 22"],
                "ips": ["10.0.0.1", "10.0.0.2"],
                "nodes": [node_entry(SSH, "10.0.0.1"), node_entry("root@10.0.0.2 -p 22", "10.0.0.2")],
            }
        }

    def test_one_request_for_all_pods_deduplicated(self, api):
        fake = api([pod("a"), pod("b")])
        sensor(["a", "b", "a"]).poke(context())
        assert fake.calls == [["a", "b"]]

    def test_waiting_returns_false(self, api):
        api(PENDING)
        assert sensor().poke(context()) is False

    def test_options_change_what_ready_means(self, api):
        api([pod("a", installation="ACTIVE", ssh=None)])
        assert sensor().poke(context()) is False
        assert sensor(wait_for_installation=False, require_ssh=False).poke(context()).is_done

    def test_failed_pod_fails_without_retry_and_names_the_reason(self, api):
        api([pod("a"), pod("b", installation="ERROR", installation_failure="CUDA toolkit not found")])
        with pytest.raises(PrimePodFailedError) as caught:
            sensor(["a", "b"]).poke(context())
        assert isinstance(caught.value, AirflowFailException)  # Airflow skips the retries
        assert "b: pod is ACTIVE, installation ERROR: CUDA toolkit not found" in str(caught.value)

    @pytest.mark.parametrize("state", ["ERROR", "TERMINATED", "DELETING", "STOPPED"])
    def test_terminal_states_fail(self, api, state):
        api([pod("a", status=state)])
        with pytest.raises(PrimePodFailedError, match=f"a: pod is {state}"):
            sensor().poke(context())

    def test_unknown_state_keeps_waiting(self, api):
        api([pod("a", status="HIBERNATING")])
        assert sensor().poke(context()) is False

    def test_transient_api_error_keeps_waiting_and_is_logged_once_then_its_end(self, api, logs):
        error = PrimeTransientError("503 Service Unavailable after 3 retries", http_status=503)
        api(error, error, error, PENDING)
        s = sensor()
        for _ in range(4):
            assert s.poke(context()) is False
        trouble = [(e["log_level"], e["event"]) for e in logs if "Prime API" in e["event"]]
        assert trouble == [
            (
                "warning",
                "Cannot reach the Prime API, will keep trying: 503 Service Unavailable after 3 retries",
            ),
            ("info", "Prime API reachable again after 3 failed attempts over 0 s"),
        ]

    @pytest.mark.parametrize(
        "error", [PrimeAuthError("401: check the API key"), PrimeRequestError("422: bad request")]
    )
    def test_errors_no_wait_can_fix_fail_at_once(self, api, error):
        api(error)
        with pytest.raises(type(error)):
            sensor().poke(context())

    def test_missing_pod_waits_then_fails_after_grace(self, api):
        api([])
        clock = fake_clock()
        s = sensor(missing_grace=60, clock=clock)
        assert s.poke(context()) is False
        clock.advance(59)
        assert s.poke(context()) is False
        clock.advance(1)
        with pytest.raises(PrimePodFailedError, match="a: not found or not visible to this API key"):
            s.poke(context())

    def test_progress_is_logged_only_when_it_changes(self, api, logs):
        api(PENDING, PENDING, PENDING, [pod("a", installation="ACTIVE", installation_progress=30)])
        s = sensor()
        for _ in range(4):
            s.poke(context())
        progress = [e["event"] for e in logs if e["event"].startswith("Waiting for pods")]
        assert progress == [
            "Waiting for pods: 0/1 pods ready; a: pod is PENDING",
            "Waiting for pods: 0/1 pods ready; a: ACTIVE, installation ACTIVE 30%",
        ]


class TestRescheduleMode:
    def test_missing_clock_starts_when_the_wait_began(self, api):
        api([])
        began = datetime.now(timezone.utc) - timedelta(seconds=120)
        with pytest.raises(PrimePodFailedError, match="not found"):
            sensor(mode="reschedule", missing_grace=60).poke(context(first_reschedule=began))

    def test_first_poke_of_the_wait_starts_the_clock_now(self, api):
        api([])
        assert sensor(mode="reschedule", missing_grace=60).poke(context(first_reschedule=None)) is False

    def test_not_ready_reschedules(self, api):
        api(PENDING)
        with pytest.raises(AirflowRescheduleException):
            sensor(mode="reschedule", poke_interval=30).execute(context())

    def test_ready_returns_the_mapping(self, api):
        api(READY)
        assert set(sensor(mode="reschedule").execute(context())) == {"a"}


class TestPokeModeExecute:
    def test_waits_until_ready(self, api):
        fake = api(PENDING, PENDING, READY)
        assert set(sensor().execute(context())) == {"a"}
        assert len(fake.calls) == 3

    def test_failed_pod_fails_the_task(self, api):
        api(PENDING, [pod("a", status="ERROR")])
        with pytest.raises(PrimePodFailedError):
            sensor().execute(context())

    def test_failed_pod_with_soft_fail_skips_and_logs_the_failure(self, api, logs):
        api([pod("a", status="ERROR")])
        with pytest.raises(AirflowSkipException):
            sensor(soft_fail=True).execute(context())
        skips = [e["event"] for e in logs if "Skipping the task" in e["event"]]
        assert skips == [
            "Skipping the task (soft_fail is set) instead of failing it: Pod wait failed: a: pod is ERROR\n"
            "The log of pod a is empty."
        ]

    def test_soft_fail_does_not_skip_a_rejected_key_nor_says_it_would(self, api, logs):
        api(PrimeAuthError("401: check the API key"))
        with pytest.raises(PrimeAuthError):
            sensor(soft_fail=True).execute(context())
        assert not [e for e in logs if "Skipping the task" in e["event"]]

    def test_timeout_says_what_each_pod_still_lacked(self, api):
        clock = fake_clock()
        api(
            [pod("a", status="PENDING"), pod("b", installation="ACTIVE", installation_progress=40)],
            clock=clock,
            took=20,
        )
        with pytest.raises(AirflowSensorTimeout) as caught:
            sensor(["a", "b"], timeout=50, clock=clock).execute(context())
        message = str(caught.value)
        assert "not ready by the deadline" in message
        assert "a: pod is PENDING; b: ACTIVE, installation ACTIVE 40%" in message

    def test_timeout_names_the_last_api_error(self, api):
        clock = fake_clock()
        error = PrimeTransientError("HTTP 503 while reading the status of pod a", http_status=503)
        api(PENDING, error, clock=clock, took=20)
        with pytest.raises(AirflowSensorTimeout) as caught:
            sensor(timeout=30, clock=clock).execute(context())
        assert "a: pod is PENDING; the last API call failed: HTTP 503" in str(caught.value)

    def test_the_wait_ends_at_the_deadline_not_a_whole_interval_after(self, api):
        clock = fake_clock()
        fake = api(PENDING, clock=clock, took=299.9)
        s = sensor(timeout=300, poke_interval=600, clock=clock)
        told: list[float] = []
        airflows = s._get_next_poke_interval
        s._get_next_poke_interval = lambda *args: told.append(airflows(*args)) or told[-1]  # type: ignore[method-assign]
        with pytest.raises(AirflowSensorTimeout, match="a: pod is PENDING"):
            s.execute(context())
        assert told == [pytest.approx(0.1)]  # Airflow slept to the deadline, not one more interval
        assert len(fake.calls) == 2  # the first check, and a last one at the deadline
        # The last check got one request's time, not the deadline it was already at.
        assert fake.deadlines == [clock.start + 300, pytest.approx(clock.start + 299.9 + LAST_CHECK_TIME)]

    def test_the_hook_is_given_the_deadline(self, api, monkeypatch):
        api(READY)  # defines the key; the call itself is replaced below
        seen: list[float | None] = []
        monkeypatch.setattr(
            pod_status.PrimeHook,
            "get_pods_status",
            lambda self, ids, deadline: seen.append(deadline) or READY,
        )
        before = time.time()
        sensor(timeout=600).execute(context())
        (deadline,) = seen
        assert deadline is not None
        assert before + 600 <= deadline <= time.time() + 600  # the wait's, not a later one

    def test_timeout_with_soft_fail_skips_and_logs_why(self, api, logs):
        clock = fake_clock()
        api(PENDING, clock=clock, took=20)
        with pytest.raises(AirflowSkipException):
            sensor(timeout=30, soft_fail=True, clock=clock).execute(context())
        (skip,) = [e["event"] for e in logs if "Skipping the task" in e["event"]]
        assert "soft_fail" in skip
        assert "Pods not ready by the deadline" in skip
        assert "a: pod is PENDING" in skip


class TestDeferrable:
    def test_defers_to_the_trigger_with_deadline_and_timeout(self, api):
        api([pod("a", status="PENDING")])
        s = sensor(
            ["a", "b"],
            deferrable=True,
            prime_conn_id="prime_gpu",
            poke_interval=7,
            timeout=600,
            wait_for_installation=False,
            missing_grace=30,
        )
        before = time.time()
        with pytest.raises(TaskDeferred) as caught:
            s.execute(context())
        deferred = caught.value
        assert deferred.method_name == "execute_complete"
        # Airflow's own timeout only backs the trigger's up: the trigger's says what was missing.
        assert timedelta(seconds=600) < deferred.timeout <= timedelta(seconds=600 + DEFERRAL_MARGIN)
        trigger = deferred.trigger
        assert isinstance(trigger, PodStatusTrigger)
        _, kwargs = trigger.serialize()
        assert before + 600 <= kwargs["deadline"] <= time.time() + 600
        assert kwargs["pod_ids"] == ["a", "b"]
        assert kwargs["prime_conn_id"] == "prime_gpu"
        assert kwargs["poll_interval"] == 7
        assert (kwargs["wait_for_installation"], kwargs["require_ssh"], kwargs["missing_grace"]) == (
            False,
            True,
            30,
        )
        assert list(kwargs["missing_since"]) == ["b"]  # b was missing at the first check
        assert before + 7 <= kwargs["not_before"] <= time.time() + 7  # the next poke is due then

    def test_a_short_poke_interval_still_lets_the_scheduler_note_the_deferral_first(self, api):
        api([pod("a", status="PENDING")])
        before = time.time()
        with pytest.raises(TaskDeferred) as caught:
            sensor(["a"], deferrable=True, poke_interval=1).execute(context())
        _, kwargs = caught.value.trigger.serialize()
        assert before + SETTLE_AFTER_DEFERRAL <= kwargs["not_before"] <= time.time() + SETTLE_AFTER_DEFERRAL

    def test_ready_at_the_first_check_returns_without_deferring(self, api):
        api(READY)
        assert set(sensor(deferrable=True).execute(context())) == {"a"}

    def test_failed_at_the_first_check_fails_without_deferring(self, api):
        api([pod("a", status="TERMINATED")])
        with pytest.raises(PrimePodFailedError):
            sensor(deferrable=True).execute(context())

    def test_failed_at_the_first_check_with_soft_fail_skips_and_logs_why(self, api, logs):
        api([pod("a", status="TERMINATED")])
        with pytest.raises(AirflowSkipException):
            sensor(deferrable=True, soft_fail=True).execute(context())
        assert any("a: pod is TERMINATED" in e["event"] for e in logs if "Skipping the task" in e["event"])

    def test_transient_error_at_the_first_check_still_defers(self, api):
        api(PrimeTransientError("429"))
        with pytest.raises(TaskDeferred):
            sensor(deferrable=True).execute(context())


class TestExecuteComplete:
    def test_success_returns_the_pods(self):
        pods = {"a": {"status": "ACTIVE", "ssh_connections": [SSH]}}
        event = {"status": "success", "pods": pods, "message": "1/1 pods ready"}
        assert sensor().execute_complete(context(), event) == pods

    @pytest.mark.parametrize(
        ("error_type", "expected"),
        [
            ("PrimePodFailedError", PrimePodFailedError),
            ("PrimeAuthError", PrimeAuthError),
            ("PrimeConfigError", PrimeConfigError),
            ("PrimeError", PrimeError),
            ("SystemExit", PrimeError),  # never a class outside the provider's hierarchy
        ],
    )
    def test_failure_raises_the_same_error_class(self, error_type, expected):
        event = {"status": "failed", "error_type": error_type, "message": "b: pod is ERROR", "pods": {}}
        with pytest.raises(PrimeError, match="b: pod is ERROR") as caught:
            sensor().execute_complete(context(), event)
        assert type(caught.value) is expected

    def test_timeout_raises_sensor_timeout(self):
        with pytest.raises(AirflowSensorTimeout, match="deadline"):
            sensor().execute_complete(
                context(), {"status": "timeout", "message": "not ready by the deadline"}
            )

    @pytest.mark.parametrize(
        "event",
        [None, {}, {"status": "weird"}, "success", {"status": "failed", "message": "no error_type"}],
    )
    def test_unexpected_event_is_a_clear_error(self, event):
        with pytest.raises(PrimeError, match="does not understand"):
            sensor().execute_complete(context(), event)

    @pytest.mark.parametrize(
        "event",
        [
            {"status": "timeout", "message": "late"},
            {"status": "failed", "error_type": "PrimePodFailedError", "message": "a: pod is ERROR"},
        ],
    )
    def test_soft_fail_skips_on_resume_and_logs_why(self, event, logs):
        with pytest.raises(AirflowSkipException):
            sensor(soft_fail=True).resume_execution("execute_complete", {"event": event}, context())
        skips = [e["event"] for e in logs if "Skipping the task" in e["event"]]
        assert len(skips) == 1
        assert skips[0].endswith(event["message"])

    def test_resume_without_soft_fail_fails(self):
        event = {"status": "failed", "error_type": "PrimePodFailedError", "message": "a: pod is ERROR"}
        with pytest.raises(PrimePodFailedError):
            sensor().resume_execution("execute_complete", {"event": event}, context())


class TestRefusalsAfterAnswers:
    """A refused or garbled status request after good answers is ridden out in every mode (finding 4)."""

    REFUSED = PrimeAuthError("401: the API key was rejected", http_status=401)

    def test_poke_mode_rides_out_a_lone_refusal(self, api):
        fake = api(PENDING, self.REFUSED, READY)
        assert set(sensor().execute(context())) == {"a"}
        assert len(fake.calls) == 3

    def test_poke_mode_fails_when_refusals_outlast_the_grace(self, api):
        clock = fake_clock()
        fake = api(PENDING, self.REFUSED, clock=clock, took=20)
        with pytest.raises(PrimeAuthError):
            sensor(clock=clock).execute(context())
        assert len(fake.calls) == 5  # refused at 40, 60, 80 and 100 s: 60 s of refusals, the grace

    def test_a_rescheduled_poke_holds_through_a_refusal_and_hands_over(self, api):
        fake = api(self.REFUSED, READY)  # earlier pokes had answers
        first = datetime.now(timezone.utc) - timedelta(minutes=5)
        result = sensor(mode="reschedule").poke(context(first_reschedule=first))
        assert result.is_done
        assert len(fake.calls) == 2

    def test_a_rescheduled_poke_fails_when_refusals_outlast_the_grace(self, api):
        clock = fake_clock()
        fake = api(self.REFUSED, clock=clock, took=20)
        first = datetime.now(timezone.utc) - timedelta(minutes=5)
        with pytest.raises(PrimeAuthError):
            sensor(mode="reschedule", clock=clock).poke(context(first_reschedule=first))
        assert len(fake.calls) == 4  # held on through 60 s of refusals (20, 40, 60, 80 s)

    def test_the_first_check_refused_fails_at_once_as_a_wrong_key_does(self, api):
        fake = api(self.REFUSED, READY)
        with pytest.raises(PrimeAuthError):
            sensor(mode="reschedule").execute(context())
        assert len(fake.calls) == 1

    @pytest.mark.parametrize(("first", "answered"), [(PENDING, True), (PrimeTransientError("429"), False)])
    def test_the_trigger_knows_whether_the_first_check_had_an_answer(self, api, first, answered):
        api(first)
        with pytest.raises(TaskDeferred) as caught:
            sensor(deferrable=True).execute(context())
        assert caught.value.trigger.answered is answered
