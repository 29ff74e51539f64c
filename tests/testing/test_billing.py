"""What lifecycle tests ask the simulator: created, deleted, still billing, pod-seconds, cost, requests.

And the faults a create can meet: the pod made but the answer lost (dropped, stalled, 5xx),
faults aimed at one method or a family of paths.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from airflow_provider_prime.testing import (
    NO_RESPONSE,
    PODS_PATH,
    STATUS_PATH,
    Fault,
    ManualClock,
    PrimeSimulator,
    SimulatorClient,
    fixed_pod,
)
from tests.testing.http import Factory, create, create_body


@pytest.fixture
def sim(prime_simulator_factory: Factory, clock: ManualClock) -> PrimeSimulator:
    """One scripted pod (1.80/h) and the built-in offers, on the manual clock."""
    return prime_simulator_factory([fixed_pod("old", name="old-run", price_hr=1.8)], clock=clock)


@pytest.fixture
def api(sim: PrimeSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.api_key}"}) as client:
        yield client


def test_billing_counts_creates_deletes_and_billed_time(
    sim: PrimeSimulator, api: httpx.Client, clock: ManualClock
) -> None:
    first = create(api, create_body(name="train"))
    create(api, create_body(name="train"))
    clock.advance(3600.0)
    api.delete(PODS_PATH + first["id"])
    clock.advance(3600.0)  # long after the 2 s of DELETING
    billing = sim.billing()
    assert billing["created"] == {"train": 2}
    assert billing["deleted"] == {"train": 1}
    assert billing["billing"] == {"old-run": 1, "train": 1}
    pods = billing["pods"]
    assert pods[first["id"]]["seconds"] == 3602.0
    assert (pods[first["id"]]["status"], pods[first["id"]]["billing"]) == ("TERMINATED", False)
    assert pods["old"]["cost"] == pytest.approx(1.8 * 2)
    assert billing["pod_seconds"] == 7200 + 3602 + 7200
    assert billing["cost"] == pytest.approx(1.8 * 2 + 2.49 * 3602 / 3600 + 2.49 * 2)


def test_one_call_over_http_gives_billing_and_requests_per_method_and_path(
    sim: PrimeSimulator, api: httpx.Client
) -> None:
    pod = create(api)
    api.delete(PODS_PATH + pod["id"])
    api.get(STATUS_PATH, params={"pod_ids": pod["id"]})
    client = SimulatorClient(sim.base_url)
    try:
        snapshot = client.stats_snapshot()
        assert client.billing() == sim.billing() == snapshot["billing"]
    finally:
        client.close()
    assert snapshot["by_method_path"] == {
        f"POST {PODS_PATH}": 1,
        f"DELETE {PODS_PATH}{pod['id']}": 1,
        f"GET {STATUS_PATH}": 1,
    }
    assert snapshot["billing"]["deleted"] == {"job": 1}


def test_a_create_whose_answer_is_dropped_still_made_the_pod(sim: PrimeSimulator, api: httpx.Client) -> None:
    sim.inject(Fault.answer_lost())
    with pytest.raises(httpx.RemoteProtocolError):
        api.post(PODS_PATH, json=create_body(name="lost"))
    assert sim.billing()["created"] == {"lost": 1}
    assert [pod["name"] for pod in api.get(PODS_PATH).json()["data"]] == ["old-run", "lost"]
    assert sim.stats.by_status[NO_RESPONSE] == 1


def test_a_create_that_stalls_past_the_client_timeout_still_made_the_pod(
    sim: PrimeSimulator, api: httpx.Client
) -> None:
    sim.inject(Fault.answer_lost(hang=True))
    with pytest.raises(httpx.ReadTimeout):
        api.post(PODS_PATH, json=create_body(name="stalled"), timeout=0.3)
    assert sim.billing()["created"] == {"stalled": 1}


def test_a_5xx_after_the_pod_was_made(sim: PrimeSimulator, api: httpx.Client) -> None:
    sim.inject(Fault.server_error(502, html=True, method="POST", path=PODS_PATH, after_effect=True))
    response = api.post(PODS_PATH, json=create_body(name="made"))
    assert response.status_code == 502
    assert sim.billing()["created"] == {"made": 1}


def test_an_after_effect_fault_waits_for_a_request_that_did_its_work(
    sim: PrimeSimulator, api: httpx.Client
) -> None:
    sim.inject(Fault.answer_lost())
    assert api.post(PODS_PATH, json={"pod": {}}).status_code == 422  # nothing made: the fault waits
    assert sim.faults[0]["remaining"] == 1
    with pytest.raises(httpx.RemoteProtocolError):
        api.post(PODS_PATH, json=create_body())


def test_a_fault_before_the_work_leaves_nothing_made(sim: PrimeSimulator, api: httpx.Client) -> None:
    sim.inject(Fault.server_error(503, method="POST"))
    assert api.get(PODS_PATH).status_code == 200  # another method: untouched
    assert api.post(PODS_PATH, json=create_body()).status_code == 503
    assert sim.billing()["created"] == {}


def test_a_path_pattern_targets_every_pod(sim: PrimeSimulator, api: httpx.Client) -> None:
    sim.inject(Fault.rate_limited(retry_after=1, path=PODS_PATH + "*", times=None))
    assert api.get(PODS_PATH + "old").status_code == 429
    assert api.delete(PODS_PATH + "whatever").status_code == 429
    assert api.get(PODS_PATH).status_code == 200  # the list itself is not under the pattern
    assert api.get(STATUS_PATH).status_code == 429  # ... but /pods/status is
