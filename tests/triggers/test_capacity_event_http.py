"""PrimeCapacityEventTrigger against the simulator over HTTP: once per appearance, never per poll.

The simulator's capacity is steered on command (``set_stock``); every "nothing more happened"
is proven by the simulator's own request counter moving on, never by sleeping.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from airflow_provider_prime.exceptions import PrimeConfigError
from airflow_provider_prime.models import GpuOffer
from airflow_provider_prime.testing import GPUS_PATH, Fault, PrimeSimulator
from airflow_provider_prime.triggers import capacity_event
from airflow_provider_prime.triggers.availability import active_availability_pollers
from airflow_provider_prime.triggers.capacity_event import PrimeCapacityEventTrigger
from tests.simulated import until
from tests.triggers.capacity_events import (
    A100_8X,
    EU_8X,
    US_8X,
    FakeComms,
    capacity_scenario,
    h100s,
    running,
)


def requests(sim: PrimeSimulator) -> int:
    return sim.stats.by_path[GPUS_PATH]


async def polls_pass(sim: PrimeSimulator, n: int = 3) -> None:
    """``n`` more availability requests reached the simulator (so n - 1 answers were judged)."""
    target = requests(sim) + n
    await until(lambda: requests(sim) >= target)


@pytest.fixture
def sim(prime_simulator_factory, prime_connect) -> PrimeSimulator:
    simulator: PrimeSimulator = prime_simulator_factory(capacity_scenario())
    prime_connect(simulator)
    return simulator


async def test_fires_once_per_appearance_not_per_poll(sim):
    async with running(h100s()) as (run,):
        await polls_pass(sim)
        assert run.events == []  # sold out: nothing
        sim.set_stock(US_8X, "High")  # in stock, but not in the EU
        await polls_pass(sim)
        assert run.events == []
        sim.set_stock(EU_8X, "Low")
        await until(lambda: len(run.events) == 1)
        await polls_pass(sim, 5)  # capacity stays: nothing more fires
        assert len(run.events) == 1
        sim.set_stock(EU_8X, "Unavailable")
        await polls_pass(sim)
        assert len(run.events) == 1
        sim.set_stock(EU_8X, "High")  # back: a new appearance
        await until(lambda: len(run.events) == 2)
        await polls_pass(sim)
    assert len(run.events) == 2
    first = run.events[0]
    assert (first["cloud_id"], first["country"], first["stock_status"]) == (EU_8X, "DE", "Low")
    assert first["price"] == 19.2
    assert GpuOffer.model_validate(first["offer"]).cloud_id == EU_8X  # the DAG can rent it
    assert first["wish"] == {"gpu_type": "H100_80GB", "gpu_count": 8, "regions": ["europe"], "max_price": 20}
    assert run.events[1]["stock_status"] == "High"
    assert run.events[0]["appeared_at"] < run.events[1]["appeared_at"]


async def test_an_offer_above_the_price_cap_is_no_capacity(sim):
    sim.set_stock(EU_8X, "High")
    async with running(h100s(max_price=10)) as (run,):
        await polls_pass(sim, 4)
        assert run.events == []


async def test_gpu_types_in_order_of_preference(sim):
    trigger = h100s(gpu_type=["H100_80GB", "A100_80GB"], max_price=None)
    assert [q.gpu_type for q in trigger.queries()] == ["H100_80GB", "A100_80GB"]
    sim.set_stock(A100_8X, "High")
    async with running(trigger) as (run,):
        await until(lambda: len(run.events) == 1)
        assert run.events[0]["cloud_id"] == A100_8X  # the second choice, the first being gone
        sim.set_stock(EU_8X, "High")  # the first choice too: still present, nothing new
        await polls_pass(sim, 4)
        assert len(run.events) == 1


async def test_a_failed_poll_is_not_capacity_gone(sim):
    sim.set_stock(EU_8X, "High")
    async with running(h100s()) as (run,):
        await until(lambda: len(run.events) == 1)
        # every attempt of two whole rounds fails (the connection retries twice)
        sim.inject(Fault(kind="http_error", status=503, path=GPUS_PATH, times=6))
        await until(lambda: not sim.faults)
        await polls_pass(sim, 3)
        assert len(run.events) == 1  # the outage did not make the capacity "new" again


async def test_many_triggers_with_one_wish_share_one_request_per_tick(sim):
    sim.set_stock(EU_8X, "High")
    async with running(*(h100s() for _ in range(20))) as runs:
        await until(lambda: all(len(run.events) == 1 for run in runs))
        (poller,) = active_availability_pollers()
        await polls_pass(sim, 3)
        await until(lambda: poller.idle)
        assert requests(sim) == poller.requests  # 20 triggers, one request a tick
        assert all(len(run.events) == 1 for run in runs)


# -- the memory across restarts -------------------------------------------------------------------


class FakeStore:
    """Airflow 3.3's ``asset_state_store`` for one watched asset."""

    def __init__(self, several_assets: bool = False) -> None:
        self.values: dict[str, Any] = {}
        self.several_assets = several_assets

    async def aget(self, key: str, default: Any = None) -> Any:
        if self.several_assets:
            raise ValueError("Task has 2 concrete inlets and outlets")
        return self.values.get(key, default)

    async def aset(self, key: str, value: Any) -> None:
        self.values[key] = value


@pytest.fixture
def comms(monkeypatch) -> FakeComms:
    fake = FakeComms()
    monkeypatch.setattr(capacity_event, "supervisor_comms", lambda: fake)
    return fake


async def test_a_restart_does_not_fire_for_capacity_already_seen(sim, comms):
    sim.set_stock(EU_8X, "High")
    async with running(h100s()) as (run,):
        await until(lambda: len(run.events) == 1)
    (key,) = comms.variables
    assert key == f"prime_capacity_seen_{h100s().memory_digest}"
    async with running(h100s()) as (again,):  # the triggerer restarted
        await polls_pass(sim, 4)
        assert again.events == []
        sim.set_stock(EU_8X, "Unavailable")
        await polls_pass(sim)
        sim.set_stock(EU_8X, "High")
        await until(lambda: len(again.events) == 1)  # a real new appearance still fires
    # a changed wish has its own memory: capacity there counts as new for it
    async with running(h100s(max_price=25)) as (other,):
        await until(lambda: len(other.events) == 1)


async def test_a_restart_after_capacity_went_fires_when_it_is_back(sim, comms):
    sim.set_stock(EU_8X, "High")
    async with running(h100s()) as (run,):
        await until(lambda: len(run.events) == 1)
        sim.set_stock(EU_8X, "Unavailable")
        await until(lambda: '"present": false' in next(iter(comms.variables.values())))
    sim.set_stock(EU_8X, "High")  # came back while no triggerer ran
    async with running(h100s()) as (again,):
        await until(lambda: len(again.events) == 1)


async def test_airflow_3_3_remembers_in_the_assets_state_store(sim, comms, monkeypatch):
    monkeypatch.setattr(capacity_event, "ASSET_STATE_STORE", True)
    store = FakeStore()
    sim.set_stock(EU_8X, "High")
    first = h100s()
    first.asset_state_store = store  # type: ignore[attr-defined]
    async with running(first) as (run,):
        await until(lambda: len(run.events) == 1)
    assert store.values[f"prime_capacity:{first.memory_digest}"]["present"] is True
    assert comms.variables == {}
    second = h100s()
    second.asset_state_store = store  # type: ignore[attr-defined]
    async with running(second) as (again,):
        await polls_pass(sim, 4)
        assert again.events == []


async def test_a_trigger_on_several_assets_remembers_in_a_variable(sim, comms, monkeypatch):
    monkeypatch.setattr(capacity_event, "ASSET_STATE_STORE", True)
    sim.set_stock(EU_8X, "High")
    trigger = h100s()
    trigger.asset_state_store = FakeStore(several_assets=True)  # type: ignore[attr-defined]
    async with running(trigger) as (run,):
        await until(lambda: len(run.events) == 1)
    assert list(comms.variables) == [f"prime_capacity_seen_{trigger.memory_digest}"]


async def test_an_unreadable_memory_still_fires_once_per_appearance(sim, monkeypatch):
    class Broken:
        async def asend(self, msg: Any) -> Any:
            raise ConnectionError("the supervisor is gone")

    monkeypatch.setattr(capacity_event, "supervisor_comms", Broken)
    sim.set_stock(EU_8X, "High")
    async with running(h100s()) as (run,):
        await until(lambda: len(run.events) == 1)
        await polls_pass(sim, 3)
        assert len(run.events) == 1


# -- construction ---------------------------------------------------------------------------------


def test_kwargs_round_trip_as_plain_json():
    trigger = PrimeCapacityEventTrigger(
        gpu_type=("H100_80GB", "A100_80GB"), gpu_count=8, regions=("europe",), max_price=2.5, poll_interval=30
    )
    path, kwargs = trigger.serialize()
    assert path == "airflow_provider_prime.triggers.capacity_event.PrimeCapacityEventTrigger"
    assert kwargs == {
        "gpu_type": ["H100_80GB", "A100_80GB"],
        "prime_conn_id": "prime_default",
        "poll_interval": 30.0,
        "gpu_count": 8,
        "regions": ["europe"],
        "max_price": 2.5,
    }
    again = PrimeCapacityEventTrigger(**kwargs)
    assert again.serialize() == (path, kwargs)
    assert again.memory_digest == trigger.memory_digest
    assert PrimeCapacityEventTrigger(**dict(reversed(kwargs.items()))).memory_digest == trigger.memory_digest


@pytest.mark.parametrize(
    "change",
    [{"poll_interval": 5}, {"prime_conn_id": "prime_other"}, {"max_price": 3}, {"gpu_type": "H100_80GB"}],
    ids=["poll_interval", "connection", "wish", "gpu_type"],
)
def test_any_other_kwarg_is_another_memory(change):
    """The memory is the trigger's identity (every kwarg), as Airflow identifies event triggers."""
    kwargs: dict[str, Any] = {"gpu_type": ["H100_80GB", "A100_80GB"], "gpu_count": 8, "max_price": 2.5}
    trigger = PrimeCapacityEventTrigger(**kwargs)
    assert PrimeCapacityEventTrigger(**{**kwargs, **change}).memory_digest != trigger.memory_digest


@pytest.mark.parametrize(
    "gpu_type",
    [["H100_80GB", "A100_80GB"], '["H100_80GB", "A100_80GB"]', "['H100_80GB', 'A100_80GB']"],
    ids=["list", "json-text", "python-text"],
)
def test_a_gpu_type_list_or_its_text_makes_one_query_per_type(gpu_type):
    trigger = PrimeCapacityEventTrigger(gpu_type=gpu_type, gpu_count=8)
    assert [query.gpu_type for query in trigger.queries()] == ["H100_80GB", "A100_80GB"]
    assert trigger.describe().count(" or else ") == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gpu_type": []}, "non-empty list"),
        ({"gpu_type": ["H100_80GB", ""]}, "non-empty list"),
        ({"gpu_type": "[]"}, "non-empty list"),
        ({"gpu_type": "[H100_80GB, A100_80GB"}, "looks like a list"),
        ({"gpu_type": "H100_80GB", "colour": "red"}, "colour"),
        ({"gpu_type": "H100_80GB", "poll_interval": 0}, "poll_interval"),
        ({"gpu_type": "H100_80GB", "gpu_count": 0}, "gpu_count"),
        ({"gpu_count": 8}, "gpu_type or a cloud_id"),
    ],
)
def test_a_bad_wish_fails_when_the_dag_is_parsed(kwargs, message):
    with pytest.raises(PrimeConfigError, match=message):
        PrimeCapacityEventTrigger(**kwargs)


async def test_an_unreadable_asset_store_stays_the_memory(sim, comms, monkeypatch):
    """A failing store read does not move the memory to a Variable (two memories: a double fire)."""

    class Unreadable(FakeStore):
        async def aget(self, key: str, default: Any = None) -> Any:
            raise RuntimeError("asset store unavailable")

    monkeypatch.setattr(capacity_event, "ASSET_STATE_STORE", True)
    sim.set_stock(EU_8X, "High")
    trigger = h100s()
    store = Unreadable()
    trigger.asset_state_store = store  # type: ignore[attr-defined]
    async with running(trigger) as (run,):
        await until(lambda: len(run.events) == 1)
    assert comms.variables == {}
    assert store.values[f"prime_capacity:{trigger.memory_digest}"]["present"] is True


async def test_a_store_read_timing_out_at_the_first_start_does_not_fire_again_at_the_next(
    sim, comms, monkeypatch
):
    """Seen on a busy triggerer: the first start's read timed out, the memory went to a Variable,
    the restart read the store, found nothing and started a second DAG run for the same capacity."""

    class SlowAtFirst(FakeStore):
        def __init__(self) -> None:
            super().__init__()
            self.slow = True

        async def aget(self, key: str, default: Any = None) -> Any:
            if self.slow:
                raise asyncio.TimeoutError
            return await super().aget(key, default)

    monkeypatch.setattr(capacity_event, "ASSET_STATE_STORE", True)
    store = SlowAtFirst()
    sim.set_stock(EU_8X, "High")
    first = h100s()
    first.asset_state_store = store  # type: ignore[attr-defined]
    async with running(first) as (run,):
        await until(lambda: len(run.events) == 1)
    store.slow = False  # the triggerer restarted and its supervisor answers in time
    again = h100s()
    again.asset_state_store = store  # type: ignore[attr-defined]
    async with running(again) as (restarted,):
        await polls_pass(sim, 4)
        assert restarted.events == []


@pytest.mark.parametrize("stored", ["not json", '["a list"]'])
async def test_a_variable_it_cannot_read_is_no_memory(sim, comms, stored):
    comms.variables[f"prime_capacity_seen_{h100s().memory_digest}"] = stored
    sim.set_stock(EU_8X, "High")
    async with running(h100s()) as (run,):
        await until(lambda: len(run.events) == 1)  # nothing remembered: the capacity is new
