"""The readiness decision, rule by rule (the sensor and the trigger both rely on exactly this)."""

from __future__ import annotations

import json

import pytest

from airflow_provider_prime.exceptions import PrimeConfigError
from airflow_provider_prime.pod_ids import unique_ids, validate_pod_ids
from airflow_provider_prime.readiness import (
    DEFAULT_MISSING_GRACE,
    Outcome,
    Requirements,
    assess,
    handover_entry,
    track_missing,
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
            }
        }

    def test_handover_entry_keeps_null_nodes_visible(self):
        entry = handover_entry(pod(status="STOPPED", ssh=[None], ip=[None]))
        assert entry["ssh_connections"] == [None]
        assert entry["ips"] == [None]

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


class TestRequestedPodIds:
    def test_one_id(self):
        assert validate_pod_ids("abc") == ["abc"]

    def test_list_is_deduplicated_in_order_and_trimmed(self):
        assert validate_pod_ids(["b", " a\n", "b", "a"]) == ["b", "a"]

    @pytest.mark.parametrize("text", ["['a', 'b', 'a']", '["a", "b"]', "  ['a', 'b']\n"])
    def test_list_rendered_as_text_is_read_back(self, text):
        assert validate_pod_ids(text) == ["a", "b"]

    def test_tuple_is_accepted(self):
        assert validate_pod_ids(("a", "b")) == ["a", "b"]

    @pytest.mark.parametrize(
        ("value", "words"),
        [
            ([], "empty"),
            ("", "blank"),
            ("   ", "blank"),
            (["a", " "], "pod_ids[1] is blank"),
            (["a", 7], "pod_ids[1] must be a string, not int"),
            ([None], "pod_ids[0] must be a string, not NoneType"),
            (None, "not NoneType"),
            (42, "not int"),
            ({"a": 1}, "not dict"),
            ("[a, b]", "render_template_as_native_obj"),
            ("[1, 2]", "pod_ids[0] must be a string, not int"),
            ("[]", "empty"),
            ("['a', '']", "pod_ids[1] is blank"),
            ("a,b", "not a pod id"),
            (["a b"], "pod_ids[0] is not a pod id"),
        ],
    )
    def test_bad_values_are_clear_errors(self, value, words):
        with pytest.raises(PrimeConfigError, match="pod_ids") as caught:
            validate_pod_ids(value)
        assert words in str(caught.value)

    def test_unique_ids_keeps_first_seen_order(self):
        assert unique_ids(["c", "a", "c", "b", "a"]) == ["c", "a", "b"]
