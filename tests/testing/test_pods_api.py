"""The whole pods API over HTTP: shapes, paging, create checks, the lifecycle of a created pod, delete."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from airflow_provider_prime.testing import (
    GPUS_PATH,
    HISTORY_PATH,
    MULTI_NODE_PATH,
    PODS_PATH,
    STATUS_PATH,
    WHOAMI_PATH,
    CreateLifecycle,
    ManualClock,
    PrimeSimulator,
    Scenario,
    fixed_pod,
)
from tests.testing.http import CLUSTER, SINGLE, Factory, create, create_body, pods_of

POD_KEYS = {"id", "name", "gpuName", "gpuCount", "status", "createdAt", "providerType", "resources", "ip"}
POD_KEYS |= {"socket", "type", "primePortMapping", "installationStatus", "sshConnection", "priceHr"}
HISTORY_KEYS = {"id", "name", "providerType", "type", "createdAt", "gpuName", "gpuCount", "priceHr", "userId"}
HISTORY_KEYS |= {"totalBilledPrice", "terminatedAt"}
OFFER_KEYS = {"cloudId", "gpuType", "socket", "provider", "country", "gpuCount", "gpuMemory", "disk", "vcpu"}
OFFER_KEYS |= {"memory", "interconnect", "stockStatus", "security", "prices", "images"}


@pytest.fixture
def life(prime_simulator_factory: Factory, clock: ManualClock) -> PrimeSimulator:
    """The ``lifecycle`` scenario on the manual clock, with a read-only key ``ro-key`` too."""
    return prime_simulator_factory("lifecycle", clock=clock, read_only_keys=("ro-key",))


@pytest.fixture
def api(life: PrimeSimulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {life.api_key}"}
    with httpx.Client(base_url=life.base_url, headers=headers, timeout=5.0) as client:
        yield client


def test_list_get_and_history_carry_every_required_key(api: httpx.Client) -> None:
    listed = api.get(PODS_PATH).json()
    assert (listed["total_count"], listed["offset"], listed["limit"]) == (3, 0, 100)
    assert [pod["name"] for pod in listed["data"]] == ["trainer-single", "trainer-cluster", "trainer-booting"]
    assert all(set(pod) >= POD_KEYS for pod in listed["data"])
    single = api.get(PODS_PATH + "pod-life-single").json()
    assert single["primePortMapping"][0] == {
        "internal": "22",
        "external": "22",
        "protocol": "TCP",
        "description": "SSH",
        "usedBy": "SSH",
    }
    history = api.get(HISTORY_PATH).json()
    assert [item["name"] for item in history["data"]] == ["finished-run"]
    assert set(history["data"][0]) >= HISTORY_KEYS


def test_paging_of_the_pod_list_and_its_validation(api: httpx.Client) -> None:
    page = api.get(PODS_PATH, params={"offset": 1, "limit": 1}).json()
    assert (page["total_count"], [pod["id"] for pod in page["data"]]) == (3, ["pod-life-cluster"])
    refused = api.get(PODS_PATH, params={"limit": "lots"})
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["query", "limit"]


def test_both_spellings_of_every_path_are_served(api: httpx.Client) -> None:
    for path in (
        PODS_PATH,
        HISTORY_PATH,
        GPUS_PATH,
        MULTI_NODE_PATH,
        WHOAMI_PATH,
        PODS_PATH + "pod-life-single",
    ):
        other = path[:-1] if path.endswith("/") else path + "/"
        assert api.get(path).status_code == 200, path
        redirected = api.get(other)
        assert redirected.status_code == 307, other
        assert api.get(other, follow_redirects=True).json() == api.get(path).json()


def test_a_create_through_the_redirect_keeps_its_body(life: PrimeSimulator, api: httpx.Client) -> None:
    response = api.post(PODS_PATH.rstrip("/"), json=create_body(name="via-redirect"), follow_redirects=True)
    assert response.status_code == 200
    assert life.billing()["created"] == {"via-redirect": 1}


def test_offers_by_endpoint_filter_and_page(api: httpx.Client) -> None:
    single = api.get(GPUS_PATH).json()
    assert single["totalCount"] == 6
    assert all(set(offer) >= OFFER_KEYS for offer in single["items"])
    assert [offer["cloudId"] for offer in api.get(MULTI_NODE_PATH).json()["items"]] == [CLUSTER]
    h100 = api.get(GPUS_PATH, params={"gpu_type": "H100_80GB", "gpu_count": 8}).json()
    assert [offer["cloudId"] for offer in h100["items"]] == ["sim-h100-80gb-8x"]
    canada = api.get(GPUS_PATH, params=[("regions", "canada"), ("regions", "mars")]).json()
    assert [offer["prices"]["communityPrice"] for offer in canada["items"]] == [0.89]
    second = api.get(GPUS_PATH, params={"page": 2, "page_size": 4}).json()
    assert (second["totalCount"], len(second["items"])) == (6, 2)
    assert api.get(GPUS_PATH, params={"page": 0}).json()["detail"][0]["loc"] == ["query", "page"]


def test_gpu_summary_lists_what_is_in_stock(api: httpx.Client) -> None:
    summary = api.get("/api/v1/availability/gpu-summary").json()
    assert set(summary) == {"H100_80GB", "A100_80GB", "L40S_48GB"}  # the sold-out B200 is not summarised
    assert summary["A100_80GB"]["1"]["cheapest"]["communityPrice"] == 0.89


def test_whoami_scope_is_an_object_and_shows_a_read_only_key(life: PrimeSimulator, api: httpx.Client) -> None:
    scope = api.get(WHOAMI_PATH).json()["data"]["scope"]
    assert scope["instances"] == {"read": True, "write": True}
    assert scope["sandboxes"] is None
    read_only = httpx.get(life.base_url + WHOAMI_PATH, headers={"Authorization": "Bearer ro-key"})
    assert read_only.json()["data"]["scope"]["instances"] == {"read": True, "write": False}


def test_a_read_only_key_reads_but_cannot_create_or_delete(life: PrimeSimulator) -> None:
    headers = {"Authorization": "Bearer ro-key"}
    with httpx.Client(base_url=life.base_url, headers=headers) as client:
        assert client.get(PODS_PATH).status_code == 200
        for response in (
            client.post(PODS_PATH, json=create_body()),
            client.delete(PODS_PATH + "pod-life-single"),
        ):
            assert response.status_code == 403
            assert "write permission" in response.json()["detail"]
    assert life.billing()["created"] == {}
    assert life.billing()["deleted"] == {}


def test_create_answers_a_provisioning_pod_that_becomes_ready(
    life: PrimeSimulator, api: httpx.Client, clock: ManualClock
) -> None:
    pod = create(api, create_body(name="trainer"))
    assert (pod["status"], pod["installationStatus"], pod["name"], pod["priceHr"]) == (
        "PROVISIONING",
        "PENDING",
        "trainer",
        2.49,
    )
    assert set(pod) >= POD_KEYS
    assert pod["id"] in [listed["id"] for listed in api.get(PODS_PATH).json()["data"]]
    clock.advance(10.0)
    active = pods_of(api.get(STATUS_PATH, params={"pod_ids": pod["id"]}))[pod["id"]]
    assert (active["status"], active["installationStatus"], active["sshConnection"]) == (
        "ACTIVE",
        "ACTIVE",
        None,
    )
    clock.advance(10.0)
    ready = api.get(PODS_PATH + pod["id"]).json()
    assert (ready["installationStatus"], ready["installationProgress"]) == ("FINISHED", 100)
    assert ready["sshConnection"].startswith("root@")


def test_a_multi_node_pod_has_a_list_per_node_and_a_late_node(
    life: PrimeSimulator, api: httpx.Client, clock: ManualClock
) -> None:
    life.create_lifecycle = CreateLifecycle(active_after=5, installed_after=10, ssh_after=(8, 30))
    pod = create(api, create_body(CLUSTER))
    assert (pod["sshConnection"], pod["ip"]) == (None, None)
    clock.advance(10.0)
    installed = api.get(PODS_PATH + pod["id"]).json()
    assert installed["installationStatus"] == "FINISHED"
    assert len(installed["ip"]) == 2
    assert installed["sshConnection"][0] is not None
    assert installed["sshConnection"][1] is None  # the second node's SSH comes late
    clock.advance(20.0)
    assert None not in api.get(PODS_PATH + pod["id"]).json()["sshConnection"]


def test_an_installation_failure_from_the_scenario(
    prime_simulator_factory: Factory, clock: ManualClock
) -> None:
    lifecycle = CreateLifecycle(active_after=1, installed_after=2, installation_failure="disk full")
    sim = prime_simulator_factory(Scenario(lifecycle=lifecycle), clock=clock)
    with httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.api_key}"}) as client:
        pod = create(client)
        clock.advance(2.0)
        failed = client.get(PODS_PATH + pod["id"]).json()
    assert (failed["status"], failed["installationStatus"], failed["installationFailure"]) == (
        "ACTIVE",
        "ERROR",
        "disk full",
    )


def test_create_problems_name_the_field(api: httpx.Client) -> None:
    unknown = api.post(PODS_PATH, json=create_body("no-such-offer"))
    assert unknown.status_code == 422
    assert [problem["loc"] for problem in unknown.json()["detail"]] == [["body", "pod", "cloudId"]]
    missing = api.post(PODS_PATH, json={"pod": {"name": "x", "cloudId": SINGLE}, "provider": {}})
    assert missing.status_code == 422
    assert {problem["loc"][-1] for problem in missing.json()["detail"]} == {"gpuType", "socket", "gpuCount"}
    too_big = api.post(PODS_PATH, json=create_body(diskSize=10_000, image="windows"))
    assert {problem["loc"][-1] for problem in too_big.json()["detail"]} == {"diskSize", "image"}
    not_json = api.post(PODS_PATH, content=b"{", headers={"content-type": "application/json"})
    assert (not_json.status_code, not_json.json()["detail"][0]["loc"]) == (422, ["body"])


def test_a_sold_out_offer_answers_400_naming_it(life: PrimeSimulator, api: httpx.Client) -> None:
    response = api.post(PODS_PATH, json=create_body("sim-b200-8x-sold-out"))
    assert (response.status_code, response.json()) == (
        400,
        {"detail": "Offer sim-b200-8x-sold-out is out of stock"},
    )
    assert life.billing()["created"] == {}


def test_payment_required_answers_402(prime_simulator_factory: Factory) -> None:
    sim = prime_simulator_factory(Scenario(payment_required=True))
    response = httpx.post(
        sim.base_url + PODS_PATH, json=create_body(), headers={"Authorization": f"Bearer {sim.api_key}"}
    )
    assert response.status_code == 402
    assert "Payment required" in response.json()["detail"]


def test_delete_goes_through_deleting_to_terminated_and_the_history(
    life: PrimeSimulator, api: httpx.Client, clock: ManualClock
) -> None:
    pod = create(api, create_body(name="short-lived"))
    clock.advance(60.0)
    assert api.delete(PODS_PATH + pod["id"]).json() == {"status": "DELETING"}
    assert api.get(PODS_PATH + pod["id"]).json()["status"] == "DELETING"
    assert api.delete(PODS_PATH + pod["id"]).json() == {"status": "DELETING"}  # twice is fine
    clock.advance(2.0)  # the lifecycle's deleting_for
    assert pod["id"] not in [listed["id"] for listed in api.get(PODS_PATH).json()["data"]]
    assert api.get(STATUS_PATH, params={"pod_ids": pod["id"]}).json()["data"] == []
    gone = api.get(PODS_PATH + pod["id"]).json()
    assert (gone["status"], gone["sshConnection"]) == ("TERMINATED", None)
    assert api.delete(PODS_PATH + pod["id"]).json() == {"status": "TERMINATED"}
    item = next(item for item in api.get(HISTORY_PATH).json()["data"] if item["id"] == pod["id"])
    assert item["terminatedAt"] > item["createdAt"]
    assert item["totalBilledPrice"] == pytest.approx(2.49 * 62 / 3600, abs=1e-6)
    missing = api.delete(PODS_PATH + "no-such-pod")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Pod no-such-pod not found"})


def test_a_terminated_pod_can_be_a_404_instead(prime_simulator_factory: Factory, clock: ManualClock) -> None:
    scenario = Scenario(pods=(fixed_pod("p", deleted_at=0.0),), deleted_pods="not_found")
    sim = prime_simulator_factory(scenario, clock=clock)
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    assert httpx.get(sim.base_url + PODS_PATH + "p", headers=headers).status_code == 404
    assert httpx.delete(sim.base_url + PODS_PATH + "p", headers=headers).json() == {"status": "TERMINATED"}


def test_other_methods_get_405_with_allow(api: httpx.Client) -> None:
    response = api.put(PODS_PATH + "pod-life-single")
    assert (response.status_code, response.headers["allow"]) == (405, "GET, DELETE")
    assert api.delete(PODS_PATH).headers["allow"] == "GET, POST"
    assert api.get(PODS_PATH + "pod-life-single/log").status_code == 200  # the pod log (pod_logs.py)
    log_delete = api.delete(PODS_PATH + "pod-life-single/log")
    assert (log_delete.status_code, log_delete.headers["allow"]) == (405, "GET")
    assert api.get(PODS_PATH + "pod-life-single/log/more").status_code == 404
    assert api.get(PODS_PATH + "pod-life-single/log", params={"tail": "-1"}).status_code == 422
