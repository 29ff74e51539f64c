"""The simulator's capacity: offers sold out and back on command and on a schedule, spot offers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from airflow_provider_prime.testing import (
    GPU_SUMMARY_PATH,
    GPUS_PATH,
    PODS_PATH,
    ManualClock,
    PrimeSimulator,
    Scenario,
)
from airflow_provider_prime.testing.offers import Offer, default_offers
from airflow_provider_prime.testing.process import SimulatorClient
from tests.testing.http import SINGLE, Factory, create_body

L40S = "sim-l40s-1x"
L40S_SPOT = "sim-l40s-1x-spot"


def listed(api: httpx.Client, **params: Any) -> dict[str, dict[str, Any]]:
    response = api.get(GPUS_PATH, params=params)
    assert response.status_code == 200, response.text
    return {offer["cloudId"]: offer for offer in response.json()["items"]}


def stock(api: httpx.Client, cloud_id: str) -> str:
    return str(listed(api)[cloud_id]["stockStatus"])


def scheduled(*changes: tuple[float, str], stock_status: str = "High") -> Scenario:
    offer = Offer(
        cloud_id="sim-h100-scheduled",
        gpu_type="H100_80GB",
        gpu_count=8,
        socket="SXM5",
        stock_status=stock_status,
        stock_schedule=changes,
    )
    return Scenario(offers=(offer,))


def test_an_offer_sold_out_on_command_is_listed_so_and_refuses_creates(
    sim: PrimeSimulator, http: httpx.Client
):
    assert stock(http, SINGLE) == "High"
    control = SimulatorClient(sim.base_url)
    try:
        shown = control.set_stock(SINGLE, "Unavailable")
        assert (shown["cloudId"], shown["stockStatus"]) == (SINGLE, "Unavailable")
        assert stock(http, SINGLE) == "Unavailable"  # still listed, with its status
        refused = http.post(PODS_PATH, json=create_body(SINGLE))
        assert (refused.status_code, refused.json()) == (400, {"detail": f"Offer {SINGLE} is out of stock"})
        assert "H100_80GB" in http.get(GPU_SUMMARY_PATH).json()  # the 8x and the cluster still sell
        control.set_stock(SINGLE, "Low")
        assert {o["cloudId"]: o["stockStatus"] for o in control.offers()}[SINGLE] == "Low"
        made = http.post(PODS_PATH, json=create_body(SINGLE, name="back-in-stock"))
        assert made.status_code == 200, made.text
        assert sim.billing()["created"] == {"back-in-stock": 1}
        assert sim.delete_pod(made.json()["id"], deleting_for=0) is not None
        assert sim.billing()["billing"] == {}
    finally:
        control.close()


def test_the_control_api_names_what_is_wrong(sim: PrimeSimulator):
    with httpx.Client(base_url=sim.base_url) as control:
        unknown = control.post("/_sim/offers/no-such-offer", json={"stock_status": "High"})
        assert (unknown.status_code, unknown.json()) == (
            404,
            {"detail": "no offer with cloud_id 'no-such-offer'"},
        )
        assert control.post(f"/_sim/offers/{SINGLE}", json={"stock": "High"}).status_code == 400
        assert control.post(f"/_sim/offers/{SINGLE}", json={"stock_status": " "}).status_code == 400
        assert control.post("/_sim/offers", json={"stock_status": "High"}).status_code == 404
        listing = control.get("/_sim/offers").json()["data"]
    assert [o["cloudId"] for o in listing] == [o.cloud_id for o in default_offers()]
    assert sim.stats.total == 0  # control requests are never counted


def test_stock_follows_the_schedule_on_the_simulators_clock(
    prime_simulator_factory: Factory, clock: ManualClock
):
    sim = prime_simulator_factory(scheduled((5, "Unavailable"), (12, "Medium")), clock=clock)
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    with httpx.Client(base_url=sim.base_url, headers=headers) as api:
        seen = []
        for step in (0, 4.9, 0.1, 6.9, 0.1):
            clock.advance(step)
            seen.append(stock(api, "sim-h100-scheduled"))
        assert seen == ["High", "High", "Unavailable", "Unavailable", "Medium"]


def test_the_schedule_runs_in_pod_time_when_time_is_scaled(
    prime_simulator_factory: Factory, clock: ManualClock
):
    sim = prime_simulator_factory(
        scheduled((30, "High"), stock_status="Unavailable"), clock=clock, time_scale=10
    )
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    with httpx.Client(base_url=sim.base_url, headers=headers) as api:
        body = create_body("sim-h100-scheduled", name="early")
        body["pod"].update(gpuType="H100_80GB", socket="SXM5", gpuCount=8)
        assert api.post(PODS_PATH, json=body).status_code == 400
        clock.advance(2.9)  # 29 pod seconds
        assert stock(api, "sim-h100-scheduled") == "Unavailable"
        clock.advance(0.1)
        assert stock(api, "sim-h100-scheduled") == "High"
        made = api.post(PODS_PATH, json=body)
        assert made.status_code == 200, made.text
        sim.delete_pod(made.json()["id"], deleting_for=0)
    assert sim.billing()["billing"] == {}


def test_a_command_stops_the_schedule_and_a_scenario_reset_restarts_it(
    prime_simulator_factory: Factory, clock: ManualClock
):
    sim = prime_simulator_factory(scheduled((5, "Unavailable")), clock=clock)
    sim.set_stock("sim-h100-scheduled", "Low")
    clock.advance(10)
    (offer,) = sim.offers()
    assert offer.stock_status == "Low"  # pinned: the schedule no longer applies
    sim.reset(scenario=True)  # pins forgotten, the schedule starts again from now
    assert sim.offers()[0].stock_status == "High"
    clock.advance(5)
    assert sim.offers()[0].stock_status == "Unavailable"
    with pytest.raises(KeyError):
        sim.set_stock("nope", "High")
    with pytest.raises(ValueError, match="non-empty"):
        sim.set_stock("sim-h100-scheduled", "")


def test_a_schedule_is_data_a_scenario_file_can_hold():
    scenario = Scenario.from_dict(
        {
            "offers": [
                {
                    "cloud_id": "x",
                    "gpu_type": "H100_80GB",
                    "gpu_count": 1,
                    "stock_schedule": [[9, "High"], [3, "Unavailable"]],
                }
            ]
        }
    )
    (offer,) = scenario.offers
    assert offer.stock_schedule == ((3, "Unavailable"), (9, "High"))  # put in time order
    assert Scenario.from_dict(scenario.to_dict()) == scenario
    assert [offer.stock_at(t) for t in (0, 3, 8.9, 9)] == ["High", "Unavailable", "Unavailable", "High"]
    assert "stock_schedule" not in str(offer.render())
    with pytest.raises(ValidationError, match="negative"):
        Offer(cloud_id="y", gpu_type="H100_80GB", gpu_count=1, stock_schedule=((-1, "High"),))


def test_the_default_scenario_sells_an_l40s_on_demand_and_cheaper_as_spot(http: httpx.Client):
    offers = listed(http, gpu_type="L40S_48GB")
    assert sorted(offers) == [L40S, L40S_SPOT]
    assert (offers[L40S]["isSpot"], offers[L40S_SPOT]["isSpot"]) == (False, True)
    assert offers[L40S_SPOT]["prices"]["onDemand"] < offers[L40S]["prices"]["onDemand"]
