"""The simulated endpoints over real HTTP: shapes, ids, auth, validation, routing, live changes."""

from __future__ import annotations

import httpx
import pytest

from airflow_provider_prime.testing import (
    STATUS_PATH,
    WHOAMI_PATH,
    ManualClock,
    PrimeSimulator,
    fixed_pod,
    ready_pod,
    stopped_pod,
)
from tests.testing.http import Factory, get_status, pods_of


def test_status_answers_the_documented_envelope(sim: PrimeSimulator, http: httpx.Client) -> None:
    sim.add_pod(fixed_pod("pod-a", nodes=2))
    response = get_status(http, "pod-a")
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["status"] == "ok"
    assert body["data"] == [sim.pod_status("pod-a")]
    pod = body["data"][0]
    assert set(pod) >= {
        "podId", "providerType", "status", "sshConnection", "ip",
        "installationStatus", "installationFailure", "installationProgress",
    }  # fmt: skip
    assert pod["status"] == "ACTIVE"
    assert len(pod["sshConnection"]) == 2


def test_repeated_ids_are_answered_once_each_in_order_and_unknown_ones_left_out(
    sim: PrimeSimulator, http: httpx.Client
) -> None:
    sim.add_pod(fixed_pod("a"), fixed_pod("b"), fixed_pod("c"))
    response = get_status(http, "c", "nope", "a", "c", "b")
    assert [pod["podId"] for pod in response.json()["data"]] == ["c", "a", "b"]


def test_comma_joined_ids_are_one_unknown_id(sim: PrimeSimulator, http: httpx.Client) -> None:
    sim.add_pod(fixed_pod("a"), fixed_pod("b"))
    assert get_status(http, "a,b").json()["data"] == []


def test_no_ids_gives_an_empty_list(http: httpx.Client) -> None:
    assert http.get(STATUS_PATH).json() == {"data": [], "status": "ok"}


def test_pods_are_visible_only_to_their_keys(prime_simulator_factory: Factory, clock: ManualClock) -> None:
    sim = prime_simulator_factory(api_keys=("key-a", "key-b"), clock=clock)
    sim.add_pod(fixed_pod("shared"), fixed_pod("only-b", api_keys=("key-b",)))
    for key, expected in (("key-a", ["shared"]), ("key-b", ["shared", "only-b"])):
        with httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {key}"}) as client:
            assert list(pods_of(get_status(client, "shared", "only-b"))) == expected


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "Not authenticated"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "Not authenticated"),
        ({"Authorization": "Bearer"}, "Not authenticated"),
        ({"Authorization": "Bearer wrong-key"}, "Authorization failed"),
    ],
)
@pytest.mark.parametrize("path", [STATUS_PATH, WHOAMI_PATH])
def test_missing_or_wrong_keys_get_401(
    sim: PrimeSimulator, headers: dict[str, str], detail: str, path: str
) -> None:
    sim.add_pod(fixed_pod("a"))
    response = httpx.get(sim.base_url + path, params={"pod_ids": "a"}, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": detail}
    assert response.headers["www-authenticate"] == "Bearer"


def test_bearer_scheme_is_case_insensitive(sim: PrimeSimulator) -> None:
    response = httpx.get(sim.base_url + WHOAMI_PATH, headers={"Authorization": f"bearer {sim.api_key}"})
    assert response.status_code == 200


def test_whoami_describes_a_user_without_echoing_the_key(prime_simulator_factory: Factory) -> None:
    sim = prime_simulator_factory(api_keys=("first-secret", "second-secret"))
    answers = []
    for key in sim.api_keys:
        response = httpx.get(sim.base_url + WHOAMI_PATH, headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200
        assert key not in response.text
        answers.append(response.json()["data"])
    assert answers[0]["id"] != answers[1]["id"]
    assert {"id", "name", "email"} <= set(answers[0])


@pytest.mark.parametrize(
    ("pod_ids", "details"),
    [
        ([""], ["pod ids must not be empty"]),
        (["ok", "   "], ["pod ids must not be empty"]),
        (["x" * 257], ["pod ids must be at most 256 characters"]),
        ([f"p{i}" for i in range(101)], ["at most 100 pod ids per request, got 101"]),
        (
            ["", *(f"p{i}" for i in range(100))],
            ["at most 100 pod ids per request, got 101", "pod ids must not be empty"],
        ),
    ],
)
def test_malformed_ids_get_422_with_the_documented_body(
    http: httpx.Client, pod_ids: list[str], details: list[str]
) -> None:
    response = get_status(http, *pod_ids)
    assert response.status_code == 422
    assert response.json() == {"errors": [{"param": "pod_ids", "details": d} for d in details]}


def test_exactly_100_ids_are_accepted_and_the_limit_is_configurable(prime_simulator_factory: Factory) -> None:
    ids = [f"p{i}" for i in range(100)]
    sim = prime_simulator_factory()
    with httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.api_key}"}) as client:
        assert get_status(client, *ids).status_code == 200
    unlimited = prime_simulator_factory(max_pod_ids=None)
    with httpx.Client(
        base_url=unlimited.base_url, headers={"Authorization": f"Bearer {sim.api_key}"}
    ) as client:
        assert get_status(client, *ids, *ids, "more").status_code == 200


def test_auth_is_checked_before_validation(sim: PrimeSimulator) -> None:
    response = httpx.get(sim.base_url + STATUS_PATH, params={"pod_ids": ""})
    assert response.status_code == 401


def test_trailing_slash_redirects_to_the_canonical_path(sim: PrimeSimulator, http: httpx.Client) -> None:
    sim.add_pod(fixed_pod("a"))
    response = http.get(STATUS_PATH + "/", params={"pod_ids": "a"})
    assert response.status_code == 307
    assert response.headers["location"] == f"{sim.base_url}{STATUS_PATH}?pod_ids=a"
    followed = http.get(STATUS_PATH + "/", params={"pod_ids": "a"}, follow_redirects=True)
    assert list(pods_of(followed)) == ["a"]


def test_unknown_paths_get_404_json_and_other_methods_405(http: httpx.Client) -> None:
    missing = http.get("/api/v1/nope")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})
    wrong_method = http.post(STATUS_PATH)
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "GET"


def test_percent_encoded_ids_are_decoded(sim: PrimeSimulator, http: httpx.Client) -> None:
    sim.add_pod(fixed_pod("pod with space/é"))
    assert list(pods_of(get_status(http, "pod with space/é"))) == ["pod with space/é"]


def test_lifecycle_unfolds_on_the_simulator_clock(
    sim: PrimeSimulator, http: httpx.Client, clock: ManualClock
) -> None:
    sim.add_pod(ready_pod("p", ready_at=10.0, nodes=2))
    states = []
    for _ in range(11):
        pod = pods_of(get_status(http, "p"))["p"]
        states.append(
            (
                pod["status"],
                pod["installationStatus"],
                pod["sshConnection"].count(None) if pod["sshConnection"] else None,
            )
        )
        clock.advance(1.0)
    assert states[0] == ("PROVISIONING", "PENDING", None)
    assert states[4] == ("ACTIVE", "PENDING", 2)
    assert states[10] == ("ACTIVE", "FINISHED", 0)


def test_time_scale_speeds_timelines_up(prime_simulator_factory: Factory, clock: ManualClock) -> None:
    sim = prime_simulator_factory("demo", time_scale=20.0, clock=clock)
    clock.advance(35.0 / 20.0)
    statuses = [sim.pod_status(pid) or {} for pid in sim.scenario.pod_ids]
    assert [status.get("installationStatus") for status in statuses] == ["FINISHED", "FINISHED"]


def test_pods_can_be_added_changed_and_removed_while_serving(
    sim: PrimeSimulator, http: httpx.Client, clock: ManualClock
) -> None:
    sim.add_pod(ready_pod("p", ready_at=10.0))
    clock.advance(6.0)
    assert pods_of(get_status(http, "p"))["p"]["installationStatus"] == "ACTIVE"
    pinned = sim.set_pod_state("p", installation_status="ERROR", installation_failure="disk full")
    clock.advance(100.0)
    pod = pods_of(get_status(http, "p"))["p"]
    assert (pod["status"], pod["installationStatus"], pod["installationFailure"]) == (
        "ACTIVE",
        "ERROR",
        "disk full",
    )
    assert pod["installationProgress"] == pinned.installation_progress  # kept from the moment it was pinned
    assert pod["sshConnection"] is not None  # unchanged fields keep their values
    sim.set_pod_state("p", "STOPPED", ssh_connection=[None], ip=[None])
    assert pods_of(get_status(http, "p"))["p"]["sshConnection"] == [None]
    assert sim.remove_pod("p")
    assert not sim.remove_pod("p")
    assert get_status(http, "p").json()["data"] == []
    with pytest.raises(KeyError):
        sim.set_pod_state("p", "ACTIVE")


def test_set_pod_state_with_node_counts_replaces_verbatim_values(sim: PrimeSimulator) -> None:
    sim.add_pod(stopped_pod("p", nodes=2))
    sim.set_pod_state("p", "ACTIVE", ssh_nodes=1, ip_nodes=2)
    status = sim.pod_status("p")
    assert status is not None
    assert status["sshConnection"][1] is None
    assert status["sshConnection"][0]


def test_set_scenario_replaces_every_pod(sim: PrimeSimulator, http: httpx.Client) -> None:
    sim.add_pod(fixed_pod("old"))
    sim.set_scenario("fast")
    assert sim.scenario.name == "fast"
    assert get_status(http, "old").json()["data"] == []
    assert set(pods_of(get_status(http, *sim.scenario.pod_ids))) == set(sim.scenario.pod_ids)


def test_start_stop_and_restart(clock: ManualClock) -> None:
    sim = PrimeSimulator("ready", clock=clock)
    with pytest.raises(RuntimeError, match="not running"):
        _ = sim.base_url
    with sim:
        first = sim.base_url
        assert sim.running
        assert httpx.get(first + WHOAMI_PATH).status_code == 401
    assert not sim.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(first + WHOAMI_PATH)
    sim.stop()  # twice is fine
    with sim:
        assert httpx.get(sim.base_url + WHOAMI_PATH).status_code == 401


def test_a_busy_port_is_reported_by_start(sim: PrimeSimulator) -> None:
    with pytest.raises(OSError, match=r"(?i)address already in use"):
        PrimeSimulator(port=sim.port).start()


def test_the_api_key_is_not_in_the_repr(prime_simulator_factory: Factory) -> None:
    sim = prime_simulator_factory(api_keys=("sekrit-value",))
    assert "sekrit-value" not in repr(sim)
