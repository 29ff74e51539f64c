"""The readiness decision, rule by rule (the sensor and the trigger both rely on exactly this)."""

from __future__ import annotations

import json

import pytest

from airflow_provider_prime.exceptions import (
    PrimeAuthError,
    PrimeConnectionError,
    PrimeNotFoundError,
    PrimePodFailedError,
    PrimeResponseError,
    PrimeTransientError,
)
from airflow_provider_prime.readiness import (
    DEFAULT_MISSING_GRACE,
    Outcome,
    PodWait,
    Requirements,
    assess,
    describe_api,
    got_no_answer,
    handover_entry,
    track_missing,
    trouble_grace,
)
from tests.statuses import SSH, pod

STRICT = Requirements()


def one(status, requirements: Requirements = STRICT):
    verdict = assess([status.pod_id], [status], requirements)
    (report,) = verdict.pods
    return verdict, report


class TestReady:
    def test_active_installed_with_ssh_is_ready(self):
        verdict, report = one(pod())
        assert verdict.ready
        assert report.outcome is Outcome.READY

    def test_every_pod_must_be_ready(self):
        verdict = assess(["a", "b"], [pod("a"), pod("b", status="PENDING")], STRICT)
        assert verdict.outcome is Outcome.WAITING
        assert [p.outcome for p in verdict.pods] == [Outcome.READY, Outcome.WAITING]

    def test_all_ready_is_ready(self):
        verdict = assess(["a", "b"], [pod("b"), pod("a")], STRICT)
        assert verdict.ready
        assert [p.pod_id for p in verdict.pods] == ["a", "b"]  # requested order, not the API's

    def test_no_pods_requested_is_never_ready(self):
        assert assess([], [pod()], STRICT).outcome is Outcome.WAITING

    def test_statuses_of_pods_not_requested_are_ignored(self):
        verdict = assess(["a"], [pod("a"), pod("zz", status="ERROR")], STRICT)
        assert verdict.ready
        assert [p.pod_id for p in verdict.pods] == ["a"]

    def test_duplicate_ids_are_judged_once(self):
        verdict = assess(["a", "a"], [pod("a")], STRICT)
        assert len(verdict.pods) == 1
        assert verdict.ready


class TestInstallation:
    @pytest.mark.parametrize("installation", [None, "PENDING", "ACTIVE"])
    def test_active_but_not_installed_waits(self, installation):
        verdict, report = one(pod(installation=installation, installation_progress=40))
        assert verdict.outcome is Outcome.WAITING
        assert "installation" in report.detail

    def test_progress_is_reported(self):
        _, report = one(pod(installation="ACTIVE", installation_progress=42))
        assert "42%" in report.detail

    def test_not_waiting_for_installation_means_active_is_enough(self):
        verdict, _ = one(pod(installation="PENDING"), Requirements(wait_for_installation=False))
        assert verdict.ready

    @pytest.mark.parametrize("installation", ["ERROR", "TERMINATED"])
    def test_failed_installation_fails(self, installation):
        verdict, report = one(pod(installation=installation))
        assert verdict.failed
        assert installation in report.detail
        assert "pod-1" in verdict.reason

    def test_installation_failure_text_fails_and_is_quoted(self):
        text = "pip could not build flash-attn"
        verdict, _report = one(pod(installation="ACTIVE", installation_failure=text))
        assert verdict.failed
        assert text in verdict.reason
        assert "ACTIVE" in verdict.reason

    def test_blank_installation_failure_is_not_a_failure(self):
        verdict, _ = one(pod(installation_failure="   "))
        assert verdict.ready

    def test_installation_failure_ignored_when_not_waiting_for_installation(self):
        requirements = Requirements(wait_for_installation=False)
        verdict, _ = one(pod(installation="ERROR", installation_failure="boom"), requirements)
        assert verdict.ready


class TestSsh:
    @pytest.mark.parametrize("ssh", [None, [], [None], "", [""], ["  "]])
    def test_missing_ssh_waits(self, ssh):
        verdict, report = one(pod(ssh=ssh))
        assert verdict.outcome is Outcome.WAITING
        assert "SSH" in report.detail

    def test_each_node_needs_ssh(self):
        verdict, report = one(pod(ssh=[SSH, None, SSH]))
        assert verdict.outcome is Outcome.WAITING
        assert "node 2 of 3" in report.detail

    def test_multi_node_with_ssh_everywhere_is_ready(self):
        verdict, _ = one(pod(ssh=[SSH, "root@10.0.0.2 -p 22"]))
        assert verdict.ready

    def test_ssh_not_required(self):
        verdict, _ = one(pod(ssh=None), Requirements(require_ssh=False))
        assert verdict.ready


class TestPodStates:
    @pytest.mark.parametrize("state", ["ERROR", "TERMINATED", "DELETING", "STOPPED"])
    def test_terminal_states_fail_and_are_named(self, state):
        verdict, report = one(pod(status=state, ssh=[None]))
        assert verdict.failed
        assert report.outcome is Outcome.FAILED
        assert verdict.reason == f"pod-1: pod is {state}"

    def test_terminal_state_quotes_installation_failure(self):
        verdict, _ = one(pod(status="ERROR", installation="ERROR", installation_failure="disk full"))
        assert "pod is ERROR" in verdict.reason
        assert "disk full" in verdict.reason

    @pytest.mark.parametrize("state", ["UNKNOWN", "PROVISIONING", "PENDING", "HIBERNATING", ""])
    def test_unknown_and_transitional_states_wait(self, state):
        verdict, report = one(pod(status=state))
        assert verdict.outcome is Outcome.WAITING
        assert state in report.detail

    def test_terminal_states_fail_even_without_waiting_for_anything(self):
        requirements = Requirements(wait_for_installation=False, require_ssh=False)
        verdict, _ = one(pod(status="STOPPED"), requirements)
        assert verdict.failed

    def test_one_failed_pod_fails_the_whole_wait(self):
        verdict = assess(["a", "b"], [pod("a"), pod("b", status="ERROR")], STRICT)
        assert verdict.failed
        assert verdict.reason == "b: pod is ERROR"


class TestMissing:
    def test_missing_within_grace_waits(self):
        verdict = assess(["a"], [], STRICT, missing_since={"a": 100.0}, now=130.0)
        assert verdict.outcome is Outcome.WAITING
        assert "not in the API's answer" in verdict.pods[0].detail

    def test_missing_past_grace_fails(self):
        verdict = assess(["a"], [], STRICT, missing_since={"a": 100.0}, now=100.0 + DEFAULT_MISSING_GRACE)
        assert verdict.failed
        assert "not found or not visible to this API key" in verdict.reason
        assert verdict.reason.startswith("a: ")

    def test_zero_grace_fails_at_first_sight(self):
        verdict = assess(["a"], [], Requirements(missing_grace=0), missing_since={"a": 5.0}, now=5.0)
        assert verdict.failed

    def test_missing_without_clock_waits(self):
        assert assess(["a"], [], STRICT).outcome is Outcome.WAITING

    def test_track_missing_starts_keeps_and_forgets(self):
        since = track_missing({}, ["a", "b"], [pod("b")], now=10.0)
        assert since == {"a": 10.0}
        since = track_missing(since, ["a", "b"], [], now=20.0)
        assert since == {"a": 10.0, "b": 20.0}  # a keeps its first sighting
        assert track_missing(since, ["a", "b"], [pod("a")], now=30.0) == {"b": 20.0}

    def test_track_missing_drops_ids_no_longer_requested(self):
        assert track_missing({"gone": 1.0}, ["a"], [pod("a")], now=2.0) == {}


class TestReporting:
    def test_handover_is_json_and_lists_every_node(self):
        status = pod(ssh=[SSH, "root@10.0.0.2 -p 22"], ip=["10.0.0.1", "10.0.0.2"], provider_type="nebius")
        verdict = assess(["pod-1"], [status], STRICT)
        handover = json.loads(json.dumps(verdict.handover()))
        assert handover == {
            "pod-1": {
                "status": "ACTIVE",
                "installation_status": "FINISHED",
                "provider_type": "nebius",
                "ssh_connections": [SSH, "root@10.0.0.2 -p 22"],
                "ips": ["10.0.0.1", "10.0.0.2"],
                "nodes": [
                    {"ssh_connection": SSH, "ip": "10.0.0.1", "user": "root", "host": "10.0.0.1", "port": 22},
                    {
                        "ssh_connection": "root@10.0.0.2 -p 22",
                        "ip": "10.0.0.2",
                        "user": "root",
                        "host": "10.0.0.2",
                        "port": 22,
                    },
                ],
            }
        }

    def test_handover_entry_keeps_null_nodes_visible(self):
        entry = handover_entry(pod(status="STOPPED", ssh=[None], ip=[None]))
        assert entry["ssh_connections"] == [None]
        assert entry["ips"] == [None]
        assert entry["nodes"] == [
            {"ssh_connection": None, "ip": None, "user": None, "host": None, "port": None}
        ]

    def test_null_ssh_and_ip_give_one_entry_for_a_one_node_pod(self):
        entry = handover_entry(pod(ssh=None, ip=None))
        assert entry["ssh_connections"] == [None]
        assert entry["ips"] == [None]
        assert len(entry["nodes"]) == 1

    def test_lists_of_different_lengths_are_padded_to_the_node_count(self):
        entry = handover_entry(pod(ssh=[SSH, None], ip="10.0.0.1"))
        assert entry["ssh_connections"] == [SSH, None]
        assert entry["ips"] == ["10.0.0.1", None]
        assert [node["host"] for node in entry["nodes"]] == ["10.0.0.1", None]

    def test_handover_leaves_out_pods_without_status(self):
        verdict = assess(["a", "b"], [pod("a")], STRICT, missing_since={"b": 0.0}, now=1.0)
        assert list(verdict.handover()) == ["a"]

    def test_summary_counts_and_describes_pending_pods(self):
        verdict = assess(
            ["a", "b"], [pod("a"), pod("b", installation="ACTIVE", installation_progress=7)], STRICT
        )
        assert verdict.summary() == "1/2 pods ready; b: ACTIVE, installation ACTIVE 7%"

    def test_summary_when_all_ready(self):
        assert assess(["a"], [pod("a")], STRICT).summary() == "1/1 pods ready"

    def test_summary_is_bounded_and_puts_failures_first(self):
        ids = [f"p{i}" for i in range(30)]
        statuses = [pod(pid, status="PENDING") for pid in ids[:-1]] + [pod(ids[-1], status="ERROR")]
        summary = assess(ids, statuses, STRICT).summary(limit=3)
        assert summary.startswith("0/30 pods ready; p29: pod is ERROR; p0: pod is PENDING")
        assert summary.endswith("and 27 more not ready")
        assert "p5:" not in summary

    def test_reason_is_empty_when_nothing_failed(self):
        assert assess(["a"], [pod("a", status="PENDING")], STRICT).reason == ""

    def test_requirements_round_trip_as_plain_kwargs(self):
        requirements = Requirements(wait_for_installation=False, require_ssh=False, missing_grace=3.5)
        kwargs = requirements.to_kwargs()
        assert json.loads(json.dumps(kwargs)) == kwargs
        assert Requirements(**kwargs) == requirements


class Lines:
    """A logger that keeps (level, formatted line) pairs."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def _add(self, level: str, msg: str, *args: object) -> None:
        self.lines.append((level, msg % args if args else msg))

    def debug(self, msg: str, *args: object) -> None:
        self._add("debug", msg, *args)

    def info(self, msg: str, *args: object) -> None:
        self._add("info", msg, *args)

    def warning(self, msg: str, *args: object) -> None:
        self._add("warning", msg, *args)


def pod_wait(pod_ids=("a",), **kwargs) -> tuple[PodWait, Lines]:
    log = Lines()
    kwargs.setdefault("deadline", 1_000_000.0)
    return PodWait(list(pod_ids), kwargs.pop("requirements", STRICT), log, **kwargs), log


def answer(*statuses):
    return {s.pod_id: s for s in statuses}


REFUSED = PrimeConnectionError("Connection failed: ConnectError ([Errno 111] Connection refused)")


class TestPodWait:
    def test_ready_hands_over_and_says_so(self):
        wait, log = pod_wait()
        step = wait.answer(answer(pod("a")), now=1)
        assert step.outcome is Outcome.READY
        assert step.handover["a"]["status"] == "ACTIVE"
        assert log.lines == [("info", "All pods ready: 1/1 pods ready")]

    def test_the_trigger_says_ready_at_debug(self):
        wait, log = pod_wait(log_ready=False)
        wait.answer(answer(pod("a")), now=1)
        assert log.lines == [("debug", "All pods ready: 1/1 pods ready")]

    def test_a_failed_pod_fails_with_its_reason(self):
        wait, _ = pod_wait(["a", "b"])
        step = wait.answer(answer(pod("a"), pod("b", status="ERROR")), now=1)
        assert step.outcome is Outcome.FAILED
        assert isinstance(step.error, PrimePodFailedError)
        assert str(step.error) == "Pod wait failed: b: pod is ERROR"
        assert set(step.handover) == {"a", "b"}

    def test_waiting_logs_progress_when_it_changes(self):
        wait, log = pod_wait()
        for now, progress in enumerate([10, 10, 20]):
            step = wait.answer(answer(pod("a", installation="ACTIVE", installation_progress=progress)), now)
            assert step.outcome is Outcome.WAITING
        assert [line for _, line in log.lines] == [
            "Waiting for pods: 0/1 pods ready; a: ACTIVE, installation ACTIVE 10%",
            "Waiting for pods: 0/1 pods ready; a: ACTIVE, installation ACTIVE 20%",
        ]

    def test_no_news_keeps_the_verdict_but_a_missing_pod_still_runs_out_of_grace(self):
        wait, _ = pod_wait(["a", "ghost"], requirements=Requirements(missing_grace=60))
        statuses = answer(pod("a"))
        assert wait.answer(statuses, now=0).outcome is Outcome.WAITING
        assert wait.answer(statuses, now=30, news=False).outcome is Outcome.WAITING
        step = wait.answer(statuses, now=61, news=False)
        assert step.outcome is Outcome.FAILED
        assert "ghost: not found or not visible to this API key (missing for 61s)" in str(step.error)

    def test_an_error_no_wait_can_fix_fails_with_that_error(self):
        wait, _ = pod_wait()
        error = PrimeAuthError("401")
        step = wait.trouble(error, now=1)
        assert step.outcome is Outcome.FAILED
        assert step.error is error

    def test_transient_trouble_is_waited_out_and_logged_once(self):
        wait, log = pod_wait()
        for now in range(3):
            assert wait.trouble(PrimeTransientError("HTTP 503"), now).outcome is Outcome.WAITING
        wait.answer(answer(pod("a", status="PENDING")), now=3)
        assert [level for level, _ in log.lines] == ["warning", "info", "info"]
        assert log.lines[1] == ("info", "Prime API reachable again after 3 failed attempts over 3 s")

    def test_never_an_answer_fails_at_the_bound_with_a_message_about_the_connection(self):
        wait, _ = pod_wait(api=describe_api("https://nowhere.invalid", "prime_gpu"), first_answer_by=300)
        assert wait.trouble(REFUSED, now=299).outcome is Outcome.WAITING
        step = wait.trouble(REFUSED, now=300)
        assert step.outcome is Outcome.FAILED
        assert isinstance(step.error, PrimeConnectionError)
        message = str(step.error)
        assert "The Prime API at https://nowhere.invalid (connection 'prime_gpu') has not answered" in message
        for hint in ("host and port", "DNS", "TLS", "HTTPS_PROXY", "Connection refused"):
            assert hint in message

    def test_giving_up_after_retries_of_no_answer_is_still_no_answer(self):
        wait, _ = pod_wait(first_answer_by=10)
        try:
            raise PrimeTransientError("Gave up after 3 attempts") from REFUSED
        except PrimeTransientError as exc:
            gave_up = exc
        assert wait.trouble(gave_up, now=11).outcome is Outcome.FAILED

    @pytest.mark.parametrize("first", ["answer", "503"])
    def test_a_wait_that_had_an_answer_keeps_waiting_when_the_api_is_lost(self, first):
        wait, _ = pod_wait(first_answer_by=10)
        if first == "answer":
            wait.answer(answer(pod("a", status="PENDING")), now=1)
        else:
            wait.trouble(PrimeTransientError("HTTP 503"), now=1)  # something answered
        assert wait.first_answer_by is None
        assert wait.trouble(REFUSED, now=1000).outcome is Outcome.WAITING

    def test_timeout_message_says_what_is_missing_and_the_last_error_only_if_the_last_call_failed(self):
        wait, _ = pod_wait(deadline=0)
        assert wait.timeout_message().endswith("last known: no answer from the API yet")
        wait.answer(answer(pod("a", status="PENDING")), now=1)
        assert wait.timeout_message() == (
            "Pods not ready by the deadline 1970-01-01T00:00:00+00:00; "
            "last known: 0/1 pods ready; a: pod is PENDING"
        )
        wait.trouble(PrimeTransientError("HTTP 503"), now=2)
        assert wait.timeout_message().endswith("a: pod is PENDING; the last API call failed: HTTP 503")
        wait.answer(answer(pod("a", status="PENDING")), now=3)
        assert wait.timeout_message().endswith("a: pod is PENDING")


#: Whole-request errors that waiting does not fix, as one status request of a poller gets them.
BAD_ANSWERS = [
    PrimeResponseError("The Prime API sent a response that is not valid JSON (HTTP 200)", http_status=200),
    PrimeAuthError("HTTP 401: the API key was rejected", http_status=401),
    PrimeNotFoundError("HTTP 404: Not Found", http_status=404),
]


class TestTroubleAfterAnswers:
    """A failed request is not a verdict on each pod: after good answers it is ridden out for a grace."""

    @pytest.mark.parametrize("interval", [0.05, 5, 15, 20])
    def test_the_grace_is_three_intervals_or_a_minute_whichever_is_longer(self, interval):
        assert trouble_grace(interval) == max(3 * interval, 60)
        assert trouble_grace(None) == 60
        assert pod_wait(poll_interval=interval)[0].trouble_grace == max(3 * interval, 60)

    @pytest.mark.parametrize("error", BAD_ANSWERS, ids=lambda e: type(e).__name__)
    def test_one_bad_answer_after_good_ones_fails_nothing(self, error):
        wait, log = pod_wait()
        wait.answer(answer(pod("a", status="PENDING")), now=0)
        assert wait.trouble(error, now=15).outcome is Outcome.WAITING
        assert wait.refusing
        assert wait.answer(answer(pod("a")), now=30).outcome is Outcome.READY
        assert not wait.refusing
        assert log.lines[1] == ("warning", f"Cannot reach the Prime API, will keep trying: {error}")

    @pytest.mark.parametrize("error", BAD_ANSWERS, ids=lambda e: type(e).__name__)
    def test_bad_answers_that_persist_past_the_grace_fail_with_the_error(self, error):
        wait, log = pod_wait(poll_interval=15)
        wait.answer(answer(pod("a", status="PENDING")), now=0)
        for now in (15, 30, 45, 60, 74):
            assert wait.trouble(error, now).outcome is Outcome.WAITING
        step = wait.trouble(error, now=75)  # 60 s after the first: the grace is over
        assert step.outcome is Outcome.FAILED
        assert step.error is error
        assert step.handover["a"]["status"] == "PENDING"
        assert "refused or garbled every request for 60 s" in log.lines[-1][1]

    def test_transient_errors_in_between_do_not_restart_the_grace(self):
        wait, _ = pod_wait()
        wait.answer(answer(pod("a", status="PENDING")), now=0)
        assert wait.trouble(BAD_ANSWERS[1], now=10).outcome is Outcome.WAITING
        assert wait.trouble(PrimeTransientError("HTTP 503"), now=40).outcome is Outcome.WAITING
        assert wait.trouble(BAD_ANSWERS[1], now=70).outcome is Outcome.FAILED

    def test_a_good_answer_in_between_restarts_the_grace(self):
        wait, _ = pod_wait()
        wait.answer(answer(pod("a", status="PENDING")), now=0)
        assert wait.trouble(BAD_ANSWERS[0], now=10).outcome is Outcome.WAITING
        wait.answer(answer(pod("a", status="PENDING")), now=69)
        assert wait.trouble(BAD_ANSWERS[0], now=70).outcome is Outcome.WAITING
        assert wait.trouble(BAD_ANSWERS[0], now=129).outcome is Outcome.WAITING
        assert wait.trouble(BAD_ANSWERS[0], now=130).outcome is Outcome.FAILED

    @pytest.mark.parametrize("error", BAD_ANSWERS, ids=lambda e: type(e).__name__)
    def test_before_any_answer_they_fail_at_once_as_a_wrong_key_or_url_does(self, error):
        wait, _ = pod_wait()
        step = wait.trouble(error, now=1)
        assert step.outcome is Outcome.FAILED
        assert step.error is error

    def test_a_wait_answered_before_it_was_handed_over_has_the_grace_from_the_start(self):
        wait, _ = pod_wait(answered=True)  # e.g. a trigger after the sensor's first check
        assert wait.trouble(BAD_ANSWERS[1], now=1).outcome is Outcome.WAITING
        assert wait.trouble(BAD_ANSWERS[1], now=61).outcome is Outcome.FAILED


class TestNoAnswer:
    def test_a_connection_error_is_no_answer(self):
        assert got_no_answer(REFUSED)

    @pytest.mark.parametrize(
        "error", [PrimeTransientError("HTTP 503"), PrimeAuthError("401"), RuntimeError()]
    )
    def test_anything_else_is_an_answer_of_some_kind(self, error):
        assert not got_no_answer(error)
