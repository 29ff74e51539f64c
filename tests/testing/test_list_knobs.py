"""The simulator's knobs for lists that are not a promise, and faults true to their docs.

* ``page_cap`` (Scenario, ``configure``, ``POST /_sim/settings``): a page holds at most that many
  pods whatever ``limit`` asked, and the envelope's ``limit`` says so.
* ``CreateLifecycle.list_lag``: a created pod is listed only that many pod seconds later (the get
  and status endpoints have it at once).
* ``Fault.pod_deleted``: another client deletes a pod while a list page is served.
* A fault's ``pod_id`` matches ``/pods/{id}`` (GET and DELETE), and its ``after``/``duration``
  window runs on the simulator's clock (pod seconds), not on wall-clock seconds.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from airflow_provider_prime.testing import (
    PODS_PATH,
    CreateLifecycle,
    Fault,
    ManualClock,
    PrimeSimulator,
    Scenario,
    SimulatorClient,
    fixed_pod,
)
from tests.testing.http import Factory


def _page(http: httpx.Client, offset: int, limit: int = 100) -> dict[str, Any]:
    response = http.get(PODS_PATH, params={"offset": offset, "limit": limit})
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def _client(sim: PrimeSimulator) -> httpx.Client:
    return httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.api_key}"}, timeout=5)


def _create_body(sim: PrimeSimulator, name: str) -> dict[str, Any]:
    offer = next(o for o in sim.scenario.offers if not o.sold_out and o.nodes == 1)
    pod = {"name": name, "cloudId": offer.cloud_id, "gpuType": offer.gpu_type}
    return {"pod": {**pod, "socket": offer.socket, "gpuCount": offer.gpu_count}, "provider": {}}


def test_a_page_cap_answers_fewer_pods_and_says_so(prime_simulator_factory: Factory) -> None:
    pods = [fixed_pod(f"p{n}") for n in range(7)]
    sim = prime_simulator_factory(Scenario.of(pods, page_cap=3), clock=ManualClock())
    with _client(sim) as http:
        first = _page(http, 0)
        assert (len(first["data"]), first["limit"], first["total_count"]) == (3, 3, 7)
        assert [p["id"] for p in _page(http, 3)["data"]] == ["p3", "p4", "p5"]
        assert _page(http, 0, limit=2)["limit"] == 2  # a smaller ask is honoured
        sim.configure(page_cap=None)
        assert len(_page(http, 0)["data"]) == 7


def test_a_page_cap_through_the_control_api(prime_simulator_factory: Factory) -> None:
    sim = prime_simulator_factory([fixed_pod(f"p{n}") for n in range(5)], clock=ManualClock())
    control = SimulatorClient(sim.base_url)
    assert control.configure(page_cap=2)["page_cap"] == 2
    assert control.settings()["page_cap"] == 2
    with _client(sim) as http:
        assert _page(http, 0)["limit"] == 2
    with pytest.raises(RuntimeError, match="400"):
        control.configure(page_cap=0)


def test_a_pod_deleted_between_pages_shifts_the_list(prime_simulator_factory: Factory) -> None:
    pods = [fixed_pod(f"p{n}") for n in range(6)]
    sim = prime_simulator_factory(Scenario.of(pods, page_cap=3), clock=ManualClock())
    sim.inject(Fault.pod_deleted("p1"))  # struck by the first page, after it was read
    with _client(sim) as http:
        first = _page(http, 0)
        second = _page(http, 3)
    assert [p["id"] for p in first["data"]] == ["p0", "p1", "p2"]
    assert [p["id"] for p in second["data"]] == ["p4", "p5"]  # p3 slid onto the first page: missed
    assert second["total_count"] == 5
    assert sim.billing()["deleted"] == {"p1": 1}
    assert "p1" not in sim.billing()["billing"]


def test_a_pod_deleted_fault_as_json(prime_simulator_factory: Factory) -> None:
    sim = prime_simulator_factory([fixed_pod("a"), fixed_pod("b")], clock=ManualClock())
    SimulatorClient(sim.base_url).inject({"kind": "delete_pod", "target": "b", "path": PODS_PATH})
    with _client(sim) as http:
        assert [p["id"] for p in _page(http, 0)["data"]] == ["a"]  # before the answer: already gone
    with pytest.raises(ValueError, match="target"):
        Fault.model_validate({"kind": "delete_pod"})


def test_a_created_pod_is_listed_only_after_the_list_lag(prime_simulator_factory: Factory) -> None:
    clock = ManualClock()
    sim = prime_simulator_factory(Scenario.of([], lifecycle=CreateLifecycle(list_lag=5)), clock=clock)
    with _client(sim) as http:
        created = http.post(PODS_PATH, json=_create_body(sim, "lagging")).json()
        assert _page(http, 0)["data"] == []
        assert http.get(f"{PODS_PATH}{created['id']}").status_code == 200  # the get has it at once
        clock.advance(5)
        assert [p["id"] for p in _page(http, 0)["data"]] == [created["id"]]
        http.delete(f"{PODS_PATH}{created['id']}")
    clock.advance(60)
    assert sim.billing()["billing"] == {}


def test_the_list_lag_through_configure_and_the_time_scale(prime_simulator_factory: Factory) -> None:
    clock = ManualClock()
    sim = prime_simulator_factory(clock=clock, time_scale=10)
    assert SimulatorClient(sim.base_url).configure(list_lag=20)["lifecycle"]["list_lag"] == 20
    with _client(sim) as http:
        created = http.post(PODS_PATH, json=_create_body(sim, "scaled")).json()
        clock.advance(1.9)  # 19 pod seconds
        assert _page(http, 0)["data"] == []
        clock.advance(0.1)
        assert len(_page(http, 0)["data"]) == 1
        http.delete(f"{PODS_PATH}{created['id']}")
    clock.advance(60)
    assert sim.billing()["billing"] == {}


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_fault_for_a_pod_id_matches_its_path(prime_simulator_factory: Factory, method: str) -> None:
    sim = prime_simulator_factory([fixed_pod("a"), fixed_pod("b")], clock=ManualClock())
    sim.inject(Fault.server_error(503, pod_id="b", times=None))
    with _client(sim) as http:
        assert http.request(method, f"{PODS_PATH}a").status_code == 200
        assert http.request(method, f"{PODS_PATH}b").status_code == 503
    assert sim.billing()["deleted"] == ({"a": 1} if method == "DELETE" else {})


def test_a_fault_window_runs_on_the_simulators_clock(prime_simulator_factory: Factory) -> None:
    clock = ManualClock()
    sim = prime_simulator_factory([fixed_pod("a")], clock=clock, time_scale=20)
    sim.inject(Fault.server_error(503, times=None, after=100, duration=100))  # pod seconds
    with _client(sim) as http:

        def status() -> int:
            return http.get(f"{PODS_PATH}a").status_code

        clock.advance(4.9)  # 98 pod seconds: not yet
        assert status() == 200
        clock.advance(0.2)  # 102 pod seconds (5.1 s of the unscaled clock: before "after=100" there)
        assert status() == 503
        clock.advance(4.8)  # 198
        assert status() == 503
        clock.advance(0.2)  # 202: over
        assert status() == 200
