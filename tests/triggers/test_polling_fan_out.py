"""The shared poller's fan-out to many subscribers: in batches, with the event loop free in between."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest

from airflow_provider_prime.hooks._settings import PrimeApiSettings
from airflow_provider_prime.triggers import polling
from airflow_provider_prime.triggers.polling import Snapshot, Subscription, active_pollers, subscription
from tests.simulated import until
from tests.statuses import pod
from tests.triggers.fakes import FakeApi

SLOW = 30.0  # no second tick within a test
FAST = 0.05  # the poller ticks as often as it may
WAIT = 5.0
BATCH = 4
SUBSCRIBERS = 3 * BATCH
SETTINGS = PrimeApiSettings(base_url="http://127.0.0.1:9", api_key="key-one")


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    monkeypatch.setattr(polling, "FAN_OUT_BATCH", BATCH)
    return FakeApi(*(pod(f"p{i}") for i in range(SUBSCRIBERS)))


def on_first_delivery(monkeypatch: pytest.MonkeyPatch, action: Callable[[int], None]) -> None:
    """Schedule ``action(deliveries so far)`` as other loop work, the moment the fan-out begins."""
    loop = asyncio.get_running_loop()
    delivered = 0
    original = Subscription._deliver

    def counting(self: Subscription, snapshot: Snapshot, news: bool = False) -> None:
        nonlocal delivered
        if delivered == 0:
            loop.call_soon(lambda: action(delivered))
        delivered += 1
        original(self, snapshot, news)

    monkeypatch.setattr(Subscription, "_deliver", counting)


async def subscribe_all(
    stack: contextlib.AsyncExitStack, api: FakeApi, interval: float = SLOW
) -> list[Subscription]:
    """One subscriber per pod, all on one poller (first round not yet made)."""
    make = api.client
    return [
        await stack.enter_async_context(subscription(SETTINGS, [f"p{i}"], interval, client_factory=make))
        for i in range(SUBSCRIBERS)
    ]


async def test_other_work_runs_after_each_batch_not_after_the_whole_fan_out(api, monkeypatch):
    seen: list[int] = []
    on_first_delivery(monkeypatch, seen.append)
    async with contextlib.AsyncExitStack() as stack:
        subs = await subscribe_all(stack, api)
        for sub in subs:
            assert await sub.next(WAIT) is not None  # every subscriber still gets the round
    assert seen == [BATCH]  # the loop ran other callbacks after the first batch, not after all 12
    assert len(api.calls) == 1


async def test_a_subscriber_that_leaves_during_the_fan_out_is_not_delivered_to(api, monkeypatch):
    async with contextlib.AsyncExitStack() as stack:
        subs = await subscribe_all(stack, api)
        leaver = subs[-1]  # in the last batch
        on_first_delivery(monkeypatch, lambda _: active_pollers()[0].unsubscribe(leaver))
        for sub in subs[:-1]:
            assert await sub.next(WAIT) is not None
        assert await leaver.next(0) is None


async def test_subscribers_whose_pods_changed_are_woken_first(api, monkeypatch):
    rounds: dict[int, list[Subscription]] = {}  # snapshot id -> subscribers in delivery order
    original = Subscription._deliver

    def recording(self: Subscription, snapshot: Snapshot, news: bool = False) -> None:
        rounds.setdefault(id(snapshot), []).append(self)
        original(self, snapshot, news)

    monkeypatch.setattr(Subscription, "_deliver", recording)
    async with contextlib.AsyncExitStack() as stack:
        subs = await subscribe_all(stack, api, FAST)
        for sub in subs:
            assert await sub.next(WAIT) is not None
        api.set(pod("p10", status="PENDING"))  # news for one subscriber in the last batch
        while (snapshot := await subs[10].next(WAIT)) is not None:
            if snapshot.statuses["p10"].status == "PENDING":
                break
        assert snapshot is not None
        order = rounds[id(snapshot)]
        assert order[0] is subs[10]
        await until(lambda: len(order) == SUBSCRIBERS)  # everyone else is still served, in later batches
        assert sorted(order[1:], key=subs.index) == subs[:10] + subs[11:]
