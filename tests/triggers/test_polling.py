"""The shared poller, in memory: who is asked for what, who hears about it, what is left behind."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from airflow_provider_prime.exceptions import PrimeAuthError, PrimeConfigError, PrimeTransientError
from airflow_provider_prime.hooks._settings import PrimeApiSettings
from airflow_provider_prime.triggers import polling
from airflow_provider_prime.triggers.polling import Snapshot, active_pollers, subscription
from tests.simulated import until
from tests.statuses import pod
from tests.triggers.fakes import FakeApi

FAST = 0.05  # the poller's floor: ticks as often as it may
SLOW = 30.0  # never ticks within a test: only join fetches happen
WAIT = 5.0  # upper bound for anything that should happen; never reached when the code is right

SETTINGS = PrimeApiSettings(base_url="http://127.0.0.1:9", api_key="key-one")
OTHER_SETTINGS = PrimeApiSettings(base_url="http://127.0.0.1:9", api_key="key-two")


@pytest.fixture
def api() -> FakeApi:
    return FakeApi(pod("a"), pod("b"), pod("c", status="PENDING"))


def subscribe(api: FakeApi, pod_ids, interval: float = FAST, settings: PrimeApiSettings = SETTINGS):
    return subscription(settings, pod_ids, interval, client_factory=api.client)


async def test_subscribers_of_one_connection_share_every_request(api):
    async with subscribe(api, ["a", "b"]) as first, subscribe(api, ["b", "c"]) as second:
        for _ in range(3):
            mine, theirs = await first.next(WAIT), await second.next(WAIT)
            assert mine is theirs  # one snapshot, fanned out, not copied
        (poller,) = active_pollers()
        assert len(api.clients) == 1
        assert all(sorted(call) == ["a", "b", "c"] for call in api.calls)
        assert len(api.calls) == poller.rounds
    assert [p.pod_id for p in mine.statuses_for(["a", "b"])] == ["a", "b"]


async def test_joiner_whose_pods_are_polled_is_served_at_once_without_a_request(api):
    async with subscribe(api, ["a"], SLOW) as first:
        await first.next(WAIT)
        calls = len(api.calls)
        async with subscribe(api, ["a"], SLOW) as second:
            snapshot = await second.next(0)
            assert snapshot is not None
            assert snapshot.covers(["a"])
            assert len(api.calls) == calls


async def test_joiner_is_not_served_a_stale_answer_after_failed_rounds(api):
    async with subscribe(api, ["a"]) as first:
        await first.next(WAIT)
        (poller,) = active_pollers()
        api.errors += [PrimeTransientError("503", http_status=503)] * 1000
        failed = await first.next(WAIT)
        assert failed is not None
        assert failed.error is not None
        await until(lambda: time.time() - poller.latest.fetched_at > poller.interval)
        async with subscribe(api, ["a"]) as joiner:
            assert await joiner.next(0) is None  # the last good answer is older than a tick
            snapshot = await joiner.next(WAIT)
            assert snapshot is not None
            assert isinstance(snapshot.error, PrimeTransientError)
        api.errors.clear()


async def test_new_pods_are_fetched_alone_soon_after_joining(api):
    async with subscribe(api, ["a"], SLOW) as first:
        await first.next(WAIT)
        async with subscribe(api, ["a", "b"], SLOW) as second:
            snapshot = await second.next(WAIT)
            assert snapshot is not None
            assert [p.pod_id for p in snapshot.statuses_for(["a", "b"])] == ["a", "b"]
            assert api.calls == [["a"], ["b"]]  # the join fetch asked only for the new pod
            assert await first.next(0) is None  # nothing new for the first subscriber


async def test_many_joiners_are_coalesced_into_one_request(api):
    api.set(*(pod(f"p{i}") for i in range(50)))
    async with subscribe(api, ["a"], SLOW) as first, contextlib.AsyncExitStack() as stack:
        await first.next(WAIT)
        subs = [await stack.enter_async_context(subscribe(api, [f"p{i}"], SLOW)) for i in range(50)]
        for sub in subs:
            snapshot = await sub.next(WAIT)
            assert snapshot is not None
            assert snapshot.statuses_for(sub.pod_ids)
        assert len(api.calls) == 2
        assert sorted(api.calls[1]) == sorted(f"p{i}" for i in range(50))


async def test_longer_interval_is_served_from_the_faster_loop(api):
    async with subscribe(api, ["b"], SLOW) as slow:
        async with subscribe(api, ["a"], FAST):
            (poller,) = active_pollers()
            assert poller.interval == FAST
            one, two = await slow.next(WAIT), await slow.next(WAIT)
            assert one is not None
            assert two is not None
            assert one is not two  # two ticks reached the slow subscriber, far within its 30 s
        assert poller.interval == SLOW  # the fast one left: back to the slow pace


async def test_faster_joiner_speeds_up_the_loop_at_once(api):
    async with subscribe(api, ["a"], SLOW) as slow:
        await slow.next(WAIT)
        (poller,) = active_pollers()
        await until(lambda: poller.idle)  # the loop sleeps until its next tick, 30 s away
        async with subscribe(api, ["a"], FAST):
            # Without the speed-up the next tick would be 30 s away and this would time out.
            assert await slow.next(WAIT) is not None


async def test_leaving_removes_pods_from_later_requests(api):
    async with subscribe(api, ["a"]) as stays:
        async with subscribe(api, ["b"]) as leaves:
            await leaves.next(WAIT)
        (poller,) = active_pollers()
        assert poller.pod_ids == ["a"]
        calls = len(api.calls)
        await stays.next(WAIT)
        await stays.next(WAIT)
        assert api.calls[calls:]
        assert all(call == ["a"] for call in api.calls[calls:])


async def test_last_subscriber_leaving_stops_the_loop_and_closes_the_client(api):
    async with subscribe(api, ["a"]) as sub:
        await sub.next(WAIT)
    assert active_pollers() == []
    assert api.clients[0].closed
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_cancelled_subscriber_leaves_and_the_others_go_on(api):
    async def waiter() -> None:
        async with subscribe(api, ["b"]) as sub:
            while True:
                await sub.next(WAIT)

    async with subscribe(api, ["a"]) as stays:
        task = asyncio.create_task(waiter())
        await until(lambda: "b" in active_pollers()[0].pod_ids)
        await stays.next(WAIT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert active_pollers()[0].pod_ids == ["a"]
        assert await stays.next(WAIT) is not None


@pytest.mark.parametrize("swallowed", [False, True], ids=["cancel", "cancel-swallowed-as-a-timeout"])
async def test_cancel_in_the_middle_of_a_request_leaves_nothing_behind(api, swallowed):
    api.stall = asyncio.Event()  # the request never answers
    api.swallow_cancel = swallowed  # then only the loop's own stopped check can end it

    async def waiter() -> None:
        async with subscribe(api, ["a"]) as sub:
            await sub.next(WAIT)

    task = asyncio.create_task(waiter())
    await until(lambda: bool(api.calls))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert api.clients[0].cancelled == 1
    if swallowed:  # the loop ends at its next step, after the error it was handed
        await until(lambda: asyncio.all_tasks() == {asyncio.current_task()})
    assert api.clients[0].closed
    assert active_pollers() == []
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert len(api.calls) == 1  # and it polled for nobody


async def test_an_error_reaches_every_subscriber_and_the_loop_goes_on(api):
    api.errors.append(PrimeTransientError("503 from the API", http_status=503))
    async with subscribe(api, ["a"]) as first, subscribe(api, ["b"]) as second:
        failed = await first.next(WAIT)
        assert failed is not None
        assert isinstance(failed.error, PrimeTransientError)
        assert await second.next(WAIT) is failed
        recovered = await first.next(WAIT)
        assert recovered is not None
        assert recovered.error is None
        assert recovered.statuses_for(["a"]) == [api.pods["a"]]


async def test_a_failed_join_fetch_reaches_only_the_joiners(api):
    async with subscribe(api, ["a"], SLOW) as first:
        await first.next(WAIT)
        api.errors.append(PrimeAuthError("401: check the key"))
        async with subscribe(api, ["b"], SLOW) as joiner:
            snapshot = await joiner.next(WAIT)
            assert snapshot is not None
            assert isinstance(snapshot.error, PrimeAuthError)
            assert await first.next(0) is None


async def test_each_connection_gets_its_own_poller_and_client(api):
    async with (
        subscribe(api, ["a"], settings=SETTINGS) as one,
        subscribe(api, ["b"], settings=OTHER_SETTINGS) as two,
    ):
        await one.next(WAIT)
        await two.next(WAIT)
        assert len(active_pollers()) == 2
        by_key = {c.settings.api_key: c for c in api.clients}
        assert set(by_key) == {"key-one", "key-two"}
        assert all(call == ["a"] for call in by_key["key-one"].calls)
        assert all(call == ["b"] for call in by_key["key-two"].calls)
    assert all(c.closed for c in api.clients)


async def test_a_client_that_cannot_be_built_is_reported_to_subscribers(api):
    def broken(settings):
        raise PrimeConfigError("no usable client")

    async with subscription(SETTINGS, ["a"], FAST, client_factory=broken) as sub:
        snapshot = await sub.next(WAIT)
        assert snapshot is not None
        assert isinstance(snapshot.error, PrimeConfigError)


async def test_a_pod_missing_from_the_answer_is_covered_but_absent(api):
    async with subscribe(api, ["a", "ghost"]) as sub:
        snapshot = await sub.next(WAIT)
        assert snapshot is not None
        assert snapshot.covers(["a", "ghost"])
        assert [p.pod_id for p in snapshot.statuses_for(["a", "ghost"])] == ["a"]


async def test_a_snapshot_that_does_not_cover_all_pods_is_not_handed_out(api):
    async with subscribe(api, ["a", "b"], SLOW) as sub:
        await sub.next(WAIT)
        sub._deliver(Snapshot(statuses={}, covered=frozenset({"a"}), fetched_at=0.0))
        assert await sub.next(0) is None


async def test_next_times_out_with_none(api):
    api.stall = asyncio.Event()
    async with subscribe(api, ["a"]) as sub:
        assert await sub.next(0.01) is None
        api.stall.set()


def test_interval_has_a_floor():
    async def run() -> float:
        api = FakeApi(pod("a"))
        async with subscribe(api, ["a"], 0.0):
            return active_pollers()[0].interval

    assert asyncio.run(run()) == polling.MIN_INTERVAL


async def test_a_round_names_the_pods_that_changed_or_are_new(api):
    async with subscribe(api, ["a", "c"]) as sub:
        first = await sub.next(WAIT)
        assert first is not None
        assert first.changed == {"a", "c"}  # covered for the first time
        unchanged = await sub.next(WAIT)
        assert unchanged is not None
        assert unchanged.changed == frozenset()
        api.set(pod("c"))
        while (snapshot := await sub.next(WAIT)) is not None and not snapshot.changed:
            pass
        assert snapshot is not None
        assert snapshot.changed == {"c"}


async def test_news_is_told_only_to_the_subscribers_of_the_changed_pods(api):
    async with subscribe(api, ["a"]) as of_a, subscribe(api, ["c"]) as of_c:
        await of_a.next(WAIT)
        await of_c.next(WAIT)
        assert of_a.take_news()
        assert of_c.take_news()
        await of_a.next(WAIT)
        await of_c.next(WAIT)
        assert not of_a.take_news()
        assert not of_c.take_news()
        api.set(pod("c"))
        while (snapshot := await of_c.next(WAIT)) is not None and not snapshot.changed:
            pass
        await of_a.next(WAIT)
        assert of_c.take_news()
        assert not of_a.take_news()


async def test_news_survives_a_snapshot_replaced_unread_and_a_failed_round(api):
    async with subscribe(api, ["c"]) as sub:
        await sub.next(WAIT)
        sub.take_news()
        (poller,) = active_pollers()
        api.set(pod("c"))
        rounds = poller.rounds
        await until(lambda: poller.rounds > rounds)  # news, in a round this subscriber does not read
        api.errors.append(PrimeTransientError("503", http_status=503))
        rounds = poller.rounds
        await until(lambda: poller.rounds > rounds)  # then a failed round, replacing it unread
        snapshot = await sub.next(WAIT)
        assert snapshot is not None
        assert sub.take_news()  # kept until taken
        assert not sub.take_news()
