"""The availability poller in memory: its bookkeeping branches, with a scripted client."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from airflow_provider_prime.exceptions import PrimeConfigError, PrimeTransientError
from airflow_provider_prime.hooks._settings import PrimeApiSettings
from airflow_provider_prime.models import GpuOffer
from airflow_provider_prime.triggers import availability
from airflow_provider_prime.triggers.availability import (
    AvailabilityQuery,
    active_availability_pollers,
    watch_offers,
)
from tests.simulated import until

SETTINGS = PrimeApiSettings(base_url="http://127.0.0.1:9", api_key="key-one")
FAST = 0.05
SLOW = 30.0
QUERY = AvailabilityQuery(gpu_type="H100_80GB", gpu_count=8)


def offer(cloud_id: str = "a") -> GpuOffer:
    return GpuOffer.model_validate({"cloudId": cloud_id, "gpuType": "H100_80GB", "gpuCount": 8})


class FakeClient:
    def __init__(self, api: FakeApi) -> None:
        self.api = api
        self.closed = False

    async def list_gpu_offers(self, query: AvailabilityQuery) -> list[GpuOffer]:
        self.api.asked.append(query)
        if self.api.stall is not None:
            await self.api.stall.wait()
        if self.api.errors:
            raise self.api.errors.pop(0)
        return list(self.api.offers)

    async def aclose(self) -> None:
        self.closed = True


class FakeApi:
    def __init__(self) -> None:
        self.offers = [offer()]
        self.asked: list[AvailabilityQuery] = []
        self.errors: list[Exception] = []
        self.stall: asyncio.Event | None = None
        self.clients: list[FakeClient] = []

    def client(self, settings: PrimeApiSettings) -> FakeClient:
        client = FakeClient(self)
        self.clients.append(client)
        return client


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


def watch(api: FakeApi, query: AvailabilityQuery = QUERY, interval: float = FAST) -> Any:
    return watch_offers(SETTINGS, query, interval, client_factory=api.client)


async def test_the_last_leaver_closes_the_one_client(api):
    async with watch(api) as one, watch(api) as two:
        await asyncio.gather(one.next(), two.next())
    assert len(api.clients) == 1
    assert api.clients[0].closed
    assert active_availability_pollers() == []


async def test_a_client_that_cannot_be_made_is_an_error_snapshot_and_is_tried_again(api):
    made: list[int] = []

    def factory(settings: PrimeApiSettings) -> FakeClient:
        made.append(1)
        if len(made) == 1:
            raise PrimeConfigError("no key")
        return api.client(settings)

    async with watch_offers(SETTINGS, QUERY, FAST, client_factory=factory) as sub:
        failed = await sub.next()
        assert isinstance(failed.error, PrimeConfigError)
        assert failed.offers == ()
        assert not failed.ok
        good = await sub.next()
        assert good.ok
        assert [o.cloud_id for o in good.offers] == ["a"]


async def test_an_answer_nobody_waits_for_any_more_is_dropped(api):
    api.stall = asyncio.Event()
    async with watch(api, interval=SLOW) as sub:
        await until(lambda: api.asked)
        (poller,) = active_availability_pollers()
        poller.unsubscribe(sub)  # left while the request was in flight
        api.stall.set()
        await until(lambda: poller.idle or poller._task is None or poller._task.done())
        assert sub.latest is None


async def test_a_slow_subscriber_skips_to_the_newest_answer(api):
    async with watch(api) as fast, watch(api) as slow:
        first = await slow.next()
        for _ in range(3):
            await fast.next()
        newest = await slow.next()
        assert newest.seq > first.seq + 1  # answers replaced unread are skipped, not queued


async def test_the_interval_slows_down_when_the_fast_subscriber_leaves(api):
    async with watch(api, interval=SLOW):
        async with watch(api, interval=FAST):
            (poller,) = active_availability_pollers()
            assert poller.interval(QUERY) == FAST
        assert poller.interval(QUERY) == SLOW
        assert poller.interval(AvailabilityQuery(gpu_type="other")) == float("inf")


async def test_delivery_to_thousands_yields_to_the_loop(api, monkeypatch):
    monkeypatch.setattr(availability, "FAN_OUT_BATCH", 10)
    async with contextlib.AsyncExitStack() as stack:
        subs = [await stack.enter_async_context(watch(api)) for _ in range(35)]
        snapshots = await asyncio.gather(*(sub.next() for sub in subs))
    assert len({id(s) for s in snapshots}) == 1


async def test_errors_keep_the_previous_offers(api):
    async with watch(api) as sub:
        good = await sub.next()
        api.errors.append(PrimeTransientError("503", http_status=503))
        failed = await sub.next()
        assert failed.offers == good.offers
        assert isinstance(failed.error, PrimeTransientError)


# -- the query ------------------------------------------------------------------------------------


def test_a_query_round_trips_as_json_and_is_a_key():
    query = AvailabilityQuery(gpu_type="H100_80GB", gpu_count=8, regions=["europe"], multi_node=True)  # type: ignore[arg-type]
    assert query.regions == ("europe",)
    data = query.serialize()
    assert data == {"gpu_type": "H100_80GB", "gpu_count": 8, "regions": ["europe"], "multi_node": True}
    assert AvailabilityQuery.from_dict(data) == query
    assert hash(AvailabilityQuery.from_dict(data)) == hash(query)
    assert AvailabilityQuery.from_dict({}) == AvailabilityQuery()
    assert AvailabilityQuery(regions="us").regions == ("us",)  # type: ignore[arg-type]
    assert query.describe() == "H100_80GB x8 in europe (multi-node)"
    assert AvailabilityQuery().describe() == "any GPU"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"gpu_count": 0}, "gpu_count"),
        ({"gpu_count": True}, "gpu_count"),
        ({"gpu_type": " "}, "gpu_type"),
        ({"regions": ["", "eu"]}, "regions"),
        ({"regions": 3}, "regions"),
    ],
)
def test_a_bad_query_is_refused(fields, message):
    with pytest.raises(PrimeConfigError, match=message):
        AvailabilityQuery(**fields)


def test_unknown_query_fields_are_refused():
    with pytest.raises(PrimeConfigError, match="colour"):
        AvailabilityQuery.from_dict({"gpu_type": "H100_80GB", "colour": "red"})


def test_no_pollers_outside_a_loop():
    assert active_availability_pollers() == []
