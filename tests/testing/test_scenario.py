"""Scenarios as data: timelines, the lifecycle builders, built-in scenarios, files and validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from airflow_provider_prime.models import PodStatus
from airflow_provider_prime.readiness import Outcome, Requirements, assess_pod
from airflow_provider_prime.testing import (
    BUILTIN_SCENARIOS,
    DEFAULT_INSTALLATION_FAILURE,
    CreateLifecycle,
    ManualClock,
    Phase,
    PodScript,
    Scenario,
    builtin_scenario,
    bulk_scenario,
    default_offers,
    failing_pod,
    fixed_pod,
    install_failure_pod,
    provisioned_pod,
    ready_pod,
    resolve_scenario,
    stopped_pod,
    vanishing_pod,
)
from airflow_provider_prime.testing.pod_book import PodBook

STRICT = Requirements(wait_for_installation=True, require_ssh=True)


def outcome(script: PodScript, t: float) -> Outcome:
    """What the provider's own readiness decision makes of the pod at pod time ``t``."""
    return assess_pod(PodStatus.model_validate(script.report(t)), STRICT).outcome


@pytest.mark.parametrize("nodes", [1, 2, 5])
@pytest.mark.parametrize("ready_at", [0.5, 6.0, 40.0])
def test_ready_pod_is_ready_exactly_from_ready_at(nodes: int, ready_at: float) -> None:
    pod = ready_pod("p", ready_at=ready_at, nodes=nodes)
    before = [ready_at * f for f in (0, 0.1, 0.3, 0.45, 0.55, 0.7, 0.95, 0.999)]
    assert all(outcome(pod, t) is Outcome.WAITING for t in before)
    assert outcome(pod, ready_at) is Outcome.READY
    assert outcome(pod, ready_at * 100) is Outcome.READY


def test_ready_pod_walks_the_documented_lifecycle() -> None:
    pod = ready_pod("p", ready_at=10.0)
    seen = [(r["status"], r["installationStatus"]) for r in (pod.report(t / 2) for t in range(21))]
    assert [pair for i, pair in enumerate(seen) if i == 0 or pair != seen[i - 1]] == [
        ("PROVISIONING", "PENDING"),
        ("PENDING", "PENDING"),
        ("ACTIVE", "PENDING"),
        ("ACTIVE", "ACTIVE"),
        ("ACTIVE", "FINISHED"),
    ]


def test_installation_progress_rises_and_never_claims_100_before_finished() -> None:
    pod = ready_pod("p", ready_at=20.0)
    progress = [pod.report(t / 10)["installationProgress"] for t in range(100, 200)]
    assert all(isinstance(p, int) for p in progress)
    assert progress == sorted(progress)
    assert progress[0] == 0
    assert 90 <= progress[-1] <= 99
    assert pod.report(20.0)["installationProgress"] == 100


def test_ssh_appears_after_active_and_node_by_node() -> None:
    pod = ready_pod("p", ready_at=10.0, nodes=3)
    became_active = pod.report(4.0)
    assert became_active["status"] == "ACTIVE"
    assert became_active["sshConnection"] == [None, None, None]
    assert became_active["ip"] == [pod.node_ip(0), pod.node_ip(1), pod.node_ip(2)]
    counts = [sum(s is not None for s in pod.report(t / 4)["sshConnection"]) for t in range(16, 41)]
    assert counts == sorted(counts)
    assert counts[0] == 0
    assert counts[-1] == 3
    assert set(counts) == {0, 1, 2, 3}  # one node at a time
    assert pod.report(10.0)["sshConnection"] == [f"root@{pod.node_ip(n)} -p 22" for n in range(3)]


def test_single_node_pod_reports_plain_strings() -> None:
    pod = ready_pod("p", ready_at=1.0, node_ips=("198.51.100.7",), ssh_port=2222, ssh_user="ubuntu")
    report = pod.report(1.0)
    assert report["ip"] == "198.51.100.7"
    assert report["sshConnection"] == "ubuntu@198.51.100.7 -p 2222"


def test_failing_pod_ends_in_error() -> None:
    pod = failing_pod("p", fail_at=8.0)
    assert outcome(pod, 7.9) is Outcome.WAITING
    assert pod.report(8.0)["status"] == "ERROR"
    assert outcome(pod, 8.0) is Outcome.FAILED


def test_install_failure_pod_reports_the_platform_reason() -> None:
    pod = install_failure_pod("p", fail_at=12.0, nodes=2)
    assert outcome(pod, 11.9) is Outcome.WAITING
    report = pod.report(12.0)
    assert (report["status"], report["installationStatus"]) == ("ACTIVE", "ERROR")
    assert report["installationFailure"] == DEFAULT_INSTALLATION_FAILURE
    assert report["installationProgress"] == 50
    verdict = assess_pod(PodStatus.model_validate(report), STRICT)
    assert verdict.outcome is Outcome.FAILED
    assert DEFAULT_INSTALLATION_FAILURE in verdict.detail


def test_stopped_pod_reports_a_null_per_node() -> None:
    assert stopped_pod("p").report(0.0)["sshConnection"] == [None]
    later = stopped_pod("q", stop_at=5.0, nodes=2)
    assert outcome(later, 4.0) is Outcome.READY
    assert later.report(5.0)["ip"] == [None, None]
    assert outcome(later, 5.0) is Outcome.FAILED


def test_vanishing_and_late_pods_are_listed_only_inside_their_window() -> None:
    gone = vanishing_pod("p", vanish_at=5.0)
    assert gone.visible_at(4.99)
    assert not gone.visible_at(5.0)
    late = fixed_pod("q", visible_from=3.0)
    assert not late.visible_at(2.9)
    assert late.visible_at(3.0)


def test_fixed_pod_in_another_state_has_no_addresses() -> None:
    report = fixed_pod("p", "UNKNOWN").report(100.0)
    assert report["status"] == "UNKNOWN"
    assert report["sshConnection"] is None
    assert report["ip"] is None


def test_explicit_connection_values_win_over_node_counts() -> None:
    phase = Phase(status="ACTIVE", ssh_nodes=2, ssh_connection="custom", ip=None, ip_nodes=2)
    report = PodScript(pod_id="p", nodes=2, timeline=(phase,)).report(0.0)
    assert report["sshConnection"] == "custom"
    assert report["ip"] is None


def test_extra_fields_of_pod_and_phase_are_merged() -> None:
    phase = Phase(status="ACTIVE", extra_fields={"primePortMapping": []})
    report = PodScript(pod_id="p", timeline=(phase,), extra_fields={"priceHr": 1.5}).report(0.0)
    assert report["priceHr"] == 1.5
    assert report["primePortMapping"] == []


def test_timeline_is_sorted_and_phases_before_the_first_use_it() -> None:
    pod = PodScript(pod_id="p", timeline=(Phase(at=5, status="ACTIVE"), Phase(at=2, status="PENDING")))
    assert [phase.at for phase in pod.timeline] == [2, 5]
    assert pod.report(0.0)["status"] == "PENDING"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"pod_id": "", "timeline": [{"status": "ACTIVE"}]}, "pod_id"),
        ({"pod_id": "p", "timeline": []}, "timeline"),
        ({"pod_id": "p", "timeline": [{"status": "ACTIVE", "sttus": "x"}]}, "sttus"),
        ({"pod_id": "p", "nodes": 2, "node_ips": ["1.2.3.4"], "timeline": [{"status": "A"}]}, "node_ips"),
        ({"pod_id": "p", "vanish_at": 1, "visible_from": 2, "timeline": [{"status": "A"}]}, "vanish_at"),
        (
            {"pod_id": "p", "timeline": [{"status": "A", "installation_progress": 101}]},
            "installation_progress",
        ),
    ],
)
def test_invalid_pod_scripts_are_rejected_with_the_culprit_named(
    data: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        PodScript.model_validate(data)


def test_scenario_rejects_duplicate_ids() -> None:
    with pytest.raises(ValidationError, match="appears twice"):
        Scenario.of([fixed_pod("p"), fixed_pod("p")])


@pytest.mark.parametrize("name", sorted(BUILTIN_SCENARIOS))
def test_scenarios_round_trip_through_plain_data_and_files(name: str, tmp_path: Path) -> None:
    scenario = builtin_scenario(name)
    again = Scenario.from_dict(json.loads(json.dumps(scenario.to_dict())))
    assert again == scenario
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario.to_dict()))
    loaded = resolve_scenario(str(path))
    assert [p.report(t) for p in loaded.pods for t in (0, 5, 50)] == [
        p.report(t) for p in scenario.pods for t in (0, 5, 50)
    ]


def test_demo_scenario_has_a_single_and_a_multi_node_pod_ready_within_20_to_40_seconds() -> None:
    demo = builtin_scenario("demo")
    assert sorted(pod.nodes for pod in demo.pods) == [1, 2]
    for pod in demo.pods:
        assert outcome(pod, 19.0) is Outcome.WAITING
        assert outcome(pod, 40.0) is Outcome.READY


def test_broken_scenario_fails_with_a_reason() -> None:
    reports = [
        assess_pod(PodStatus.model_validate(p.report(60.0)), STRICT) for p in builtin_scenario("broken").pods
    ]
    assert all(r.outcome is Outcome.FAILED for r in reports)
    assert any(DEFAULT_INSTALLATION_FAILURE in r.detail for r in reports)


def test_bulk_scenario_names_and_timing() -> None:
    bulk = resolve_scenario("bulk:12:3")
    assert bulk.pod_ids[:2] == ["pod-00000", "pod-00001"]
    assert len(bulk.pods) == 12
    assert outcome(bulk.pods[0], 2.9) is Outcome.WAITING
    assert outcome(bulk.pods[0], 3.0) is Outcome.READY
    assert bulk_scenario(3, prefix="x-").pod_ids == ["x-00000", "x-00001", "x-00002"]


@pytest.mark.parametrize("spec", ["nope", "bulk:x", "missing-file.json"])
def test_unknown_scenario_specs_fail_clearly(spec: str) -> None:
    with pytest.raises((ValueError, OSError)):
        resolve_scenario(spec)


def test_pod_book_answers_follow_the_clock_through_cached_spans() -> None:
    clock = ManualClock()
    book = PodBook(clock, time_scale=2.0)
    book.load(Scenario.of([ready_pod("p", ready_at=10.0), vanishing_pod("v", vanish_at=4.0)]))
    seen = []
    for _ in range(12):
        seen.append({pod["podId"]: pod for pod in book.report(["p", "v"])})
        clock.advance(0.5)  # 1 pod second per step
    assert [("v" in answer) for answer in seen] == [True] * 4 + [False] * 8
    progress = [answer["p"]["installationProgress"] for answer in seen[5:10]]
    assert progress == sorted(progress)
    assert len(set(progress)) == 5
    assert seen[10]["p"]["installationStatus"] == "FINISHED"


def test_pod_book_visibility_per_key_and_pinning() -> None:
    clock = ManualClock()
    book = PodBook(clock)
    book.load(Scenario.of([fixed_pod("mine", api_keys=("a",)), fixed_pod("nobody", api_keys=())]))
    assert [p["podId"] for p in book.report(["mine", "nobody"], "a")] == ["mine"]
    assert book.report(["mine", "nobody"], "b") == []
    assert len(book.report(["mine", "nobody"])) == 2  # no key: the control view sees everything
    book.pin("mine", Phase(at=7.0, status="ERROR"))
    clock.advance(1.0)
    assert book.report(["mine"], "a")[0]["status"] == "ERROR"
    with pytest.raises(KeyError):
        book.pin("unknown", Phase(status="ERROR"))


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"offers": [{"cloud_id": "a", "gpu_type": "H100", "gpu_count": 1}] * 2}, "appears twice"),
        ({"offers": [{"cloud_id": "a", "gpu_type": "H100", "gpu_count": 0}]}, "gpu_count"),
        ({"lifecycle": {"active_after": 5, "installed_after": 2}}, "installed_after"),
        ({"lifecycle": {"active_after": 5, "ssh_after": [1]}}, "ssh_after"),
        ({"deleted_pods": "vanish"}, "deleted_pods"),
    ],
)
def test_invalid_offers_and_lifecycles_are_rejected_with_the_culprit_named(
    data: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        Scenario.from_dict(data)


def test_a_scenario_sells_the_built_in_offers_unless_it_declares_its_own() -> None:
    assert [offer.cloud_id for offer in Scenario().offers] == [offer.cloud_id for offer in default_offers()]
    own = Scenario.from_dict({"offers": [{"cloud_id": "mine", "gpu_type": "L40S", "gpu_count": 2}]})
    assert [offer.cloud_id for offer in own.offers] == ["mine"]
    assert own.offer("mine") is not None
    assert Scenario.from_dict(own.to_dict()) == own


def test_a_provisioned_pod_follows_its_lifecycle() -> None:
    lifecycle = CreateLifecycle(active_after=10, installed_after=30, ssh_after=(20, 40))
    pod = provisioned_pod("p", lifecycle, nodes=2)
    assert pod.report(9.9)["status"] == "PROVISIONING"
    at_active = pod.report(10.0)
    assert (at_active["status"], at_active["installationProgress"], at_active["sshConnection"]) == (
        "ACTIVE",
        0,
        [None, None],
    )
    assert pod.report(20.0)["installationProgress"] == 50
    assert pod.report(20.0)["sshConnection"][1] is None
    finished = pod.report(30.0)
    assert (finished["installationStatus"], finished["installationProgress"]) == ("FINISHED", 100)
    assert finished["sshConnection"][1] is None  # the late node
    assert None not in pod.report(40.0)["sshConnection"]


def test_a_deleted_pod_reports_deleting_then_leaves_the_status_answers() -> None:
    clock = ManualClock()
    book = PodBook(clock)
    book.load(Scenario.of([fixed_pod("p", deleted_at=5.0, deleting_for=2.0, price_hr=3.6)]))
    clock.advance(5.0)
    assert book.report(["p"])[0]["status"] == "DELETING"
    clock.advance(2.0)
    assert book.report(["p"]) == []
    assert book.pod("p") is not None
    assert book.pod("p", terminated=False) is None
    (billed,) = book.billed()
    assert (billed.seconds, billed.cost, billed.billing, billed.deleted) == (
        7.0,
        pytest.approx(0.007),
        False,
        False,
    )
