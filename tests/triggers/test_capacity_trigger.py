"""PrimeCapacityTrigger over real HTTP: one availability request per tick however many tasks wait, the
events it fires (capacity, deadline, an error waiting cannot fix), and not_before."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from airflow_provider_prime.testing import GPUS_PATH, Fault, PrimeSimulator
from airflow_provider_prime.triggers.capacity import PrimeCapacityTrigger
from tests.simulated import FAST_RETRY, until

H100 = "sim-h100-80gb-1x"
WISH = {"gpu_type": "H100_80GB", "gpu_count": 1}
CONN = "prime_default"


def set_stock(sim: PrimeSimulator, cloud_id: str, status: str) -> None:
    if hasattr(sim, "set_stock"):
        sim.set_stock(cloud_id, status)
        return
    offers = tuple(
        o.model_copy(update={"stock_status": status}) if o.cloud_id == cloud_id else o
        for o in sim.scenario.offers
    )
    sim._scenario = sim.scenario.model_copy(update={"offers": offers})


def lists(sim: PrimeSimulator) -> int:
    return int(sim.stats.by_path[GPUS_PATH])


def trigger(**changes: Any) -> PrimeCapacityTrigger:
    kwargs: dict[str, Any] = {
        "wish": WISH,
        "deadline": time.time() + 60,
        "poll_interval": 0.05,
        "prime_conn_id": CONN,
        **changes,
    }
    return PrimeCapacityTrigger(**kwargs)


async def first_event(capacity: PrimeCapacityTrigger) -> dict[str, Any]:
    async for event in capacity.run():
        return dict(event.payload)
    raise AssertionError("no event")


async def test_thirty_waiting_tasks_share_one_request_per_tick(prime_simulator, prime_connect):
    prime_connect(prime_simulator)
    set_stock(prime_simulator, H100, "Unavailable")
    before = lists(prime_simulator)
    waits = [asyncio.ensure_future(first_event(trigger())) for _ in range(30)]
    await until(lambda: lists(prime_simulator) >= before + 5)  # five ticks of a sold-out list
    assert not any(w.done() for w in waits)
    set_stock(prime_simulator, H100, "High")
    events = await asyncio.gather(*waits)
    assert {e["status"] for e in events} == {"success"}
    assert "Capacity found for H100_80GB x1: H100_80GB x1 in US" in events[0]["message"]
    assert lists(prime_simulator) - before <= 8  # one per tick for all 30, not 30 per tick
    assert prime_simulator.billing()["created"] == {}  # a trigger never creates


async def test_the_deadline_fires_timeout_with_the_no_offer_explanation(prime_simulator, prime_connect):
    prime_connect(prime_simulator)
    set_stock(prime_simulator, H100, "Unavailable")
    event = await first_event(trigger(deadline=time.time() + 0.3))
    assert event["status"] == "timeout"
    assert event["message"].startswith("No GPU offer matches H100_80GB x1")
    assert f"cloud_id={H100}: out of stock (Unavailable)" in event["message"]


async def test_a_deadline_already_past_fires_at_once(prime_simulator, prime_connect):
    prime_connect(prime_simulator)
    event = await first_event(trigger(deadline=time.time() - 1))
    assert event["status"] == "timeout"


async def test_an_error_waiting_cannot_fix_fires_failed_and_a_transient_one_is_waited_out(
    prime_simulator, prime_connect, logs
):
    prime_connect(prime_simulator, extra={**FAST_RETRY, "max_retries": 0})
    set_stock(prime_simulator, H100, "Unavailable")
    prime_simulator.inject(Fault.server_error(503, path=GPUS_PATH, times=2))
    before = lists(prime_simulator)
    wait = asyncio.ensure_future(first_event(trigger()))
    await until(lambda: lists(prime_simulator) >= before + 3)
    assert not wait.done()
    prime_simulator.inject(Fault.http_error(401, path=GPUS_PATH, times=1))
    event = await wait
    assert (event["status"], event["error_type"]) == ("failed", "PrimeAuthError")
    warned = [e for e in logs if str(e["event"]).startswith("Could not list the offers (the wait goes on)")]
    assert len(warned) == 1  # the same error twice is logged once


async def test_not_before_holds_a_fit_back_until_then(prime_simulator, prime_connect):
    prime_connect(prime_simulator)
    before = lists(prime_simulator)
    start = time.time()
    event = await first_event(trigger(not_before=start + 0.3))
    assert event["status"] == "success"
    assert time.time() >= start + 0.3
    assert lists(prime_simulator) - before >= 2  # it looked, saw the fit, and looked again


def test_serializes_to_plain_kwargs_that_rebuild_it():
    capacity = trigger(wish={**WISH, "gpu_type": ["H100_80GB", "A100_80GB"]}, not_before=5.0)
    classpath, kwargs = capacity.serialize()
    assert classpath == "airflow_provider_prime.triggers.capacity.PrimeCapacityTrigger"
    assert PrimeCapacityTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert kwargs["wish"]["gpu_type"] == ["H100_80GB", "A100_80GB"]


# -- garbled answers and refused offers (issue 22 F3, F7) -----------------------------------------------

GARBLED = "<html><body>502 from a proxy, served as 200</body></html>"


async def test_garbled_answers_past_the_grace_fire_failed(prime_simulator, prime_connect, monkeypatch):
    """One garbled answer is waited out (tests/adversarial); garbled answers that go on for the
    grace (brought to 0.3 s here) with no good one between end the wait as failed."""
    from airflow_provider_prime.triggers import capacity as capacity_module

    monkeypatch.setattr(capacity_module, "trouble_grace", lambda _: 0.3)
    prime_connect(prime_simulator)
    set_stock(prime_simulator, H100, "Unavailable")
    prime_simulator.inject(Fault.raw(GARBLED, content_type="text/html", path=GPUS_PATH, times=None))
    start = time.time()
    event = await first_event(trigger())
    assert event["status"] == "failed"
    assert event["error_type"] == "PrimeResponseError"
    assert time.time() - start >= 0.3


async def test_a_refused_offer_is_passed_over_until_its_memory_ends(prime_simulator, prime_connect):
    prime_connect(prime_simulator)
    before = lists(prime_simulator)
    start = time.time()
    event = await first_event(trigger(refused_cloud_ids={H100: start + 0.3}))
    assert event["status"] == "success"  # the H100 is listed in stock all along: fired once forgotten
    assert time.time() >= start + 0.3
    assert lists(prime_simulator) - before >= 2


async def test_a_refused_first_choice_fires_for_the_next_one(prime_simulator, prime_connect):
    prime_connect(prime_simulator)
    wish = {**WISH, "gpu_type": ["H100_80GB", "A100_80GB"]}
    event = await first_event(trigger(wish=wish, refused_cloud_ids={H100: time.time() + 600}))
    assert event["status"] == "success"
    assert "A100_80GB" in event["message"]


def test_refused_cloud_ids_serialize_only_when_given():
    assert "refused_cloud_ids" not in trigger().serialize()[1]  # as an older release's trigger
    capacity = trigger(refused_cloud_ids={H100: 5.0})
    classpath, kwargs = capacity.serialize()
    assert kwargs["refused_cloud_ids"] == {H100: 5.0}
    assert PrimeCapacityTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_refusal_memory_is_five_minutes_or_three_polls():
    from airflow_provider_prime.triggers.capacity import refusal_memory

    assert refusal_memory(15) == 300
    assert refusal_memory(600) == 1800
