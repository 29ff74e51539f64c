"""The shared availability poller over real HTTP, against the simulator on 127.0.0.1.

Every count here is the simulator's own (``stats.by_path``): what crossed the wire, not what the
poller believes it sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from airflow_provider_prime.exceptions import PrimeAuthError, PrimeTransientError
from airflow_provider_prime.hooks._settings import PrimeApiSettings
from airflow_provider_prime.testing import GPUS_PATH, MULTI_NODE_PATH, Fault, PrimeSimulator
from airflow_provider_prime.triggers.availability import (
    AvailabilityQuery,
    OffersSubscription,
    active_availability_pollers,
    watch_offers,
)
from tests.simulated import FAST_RETRY, until

FAST = 0.05
SLOW = 30.0  # never ticks again within a test
H100X8 = AvailabilityQuery(gpu_type="H100_80GB", gpu_count=8)
A100 = AvailabilityQuery(gpu_type="A100_80GB")


def settings_for(sim: PrimeSimulator, **options: float) -> PrimeApiSettings:
    return PrimeApiSettings(base_url=sim.base_url, api_key=sim.api_key, **{**FAST_RETRY, **options})  # type: ignore[arg-type]


def gpu_requests(sim: PrimeSimulator) -> int:
    return sim.stats.by_path[GPUS_PATH]


@contextlib.asynccontextmanager
async def many(
    settings: PrimeApiSettings, query: AvailabilityQuery, n: int, interval: float
) -> AsyncIterator[list[OffersSubscription]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(watch_offers(settings, query, interval)) for _ in range(n)]


async def test_fifty_waits_on_one_query_make_one_request_per_tick(prime_simulator_factory):
    sim = prime_simulator_factory()
    async with many(settings_for(sim), H100X8, 50, FAST) as subs:
        for _ in range(4):
            snapshots = await asyncio.gather(*(sub.next() for sub in subs))
            assert len({id(s) for s in snapshots}) == 1  # one answer, fanned out, not copied
        (poller,) = active_availability_pollers()
        await until(lambda: poller.idle)
        assert poller.queries == [H100X8]
        assert gpu_requests(sim) == poller.requests
        assert subs[0].latest is not None
        assert subs[0].latest.seq == poller.requests  # every round was one request, seen by all 50
    (offer,) = snapshots[0].offers
    assert offer.cloud_id == "sim-h100-80gb-8x"
    assert snapshots[0].error is None


async def test_two_queries_make_two_requests_per_tick(prime_simulator_factory):
    sim = prime_simulator_factory()
    settings = settings_for(sim)
    async with many(settings, H100X8, 10, FAST) as eights, many(settings, A100, 10, FAST) as a100s:
        for _ in range(3):
            await asyncio.gather(*(sub.next() for sub in eights + a100s))
        (poller,) = active_availability_pollers()
        await until(lambda: poller.idle)
        assert sorted(poller.queries, key=str) == sorted([H100X8, A100], key=str)
        assert gpu_requests(sim) == poller.requests
        eight, a100 = eights[0].latest, a100s[0].latest
        assert eight is not None
        assert a100 is not None
        # each query its own rounds: as many requests as the two queries' rounds together
        assert poller.requests == eight.seq + a100.seq
        assert all(sub.latest is eight for sub in eights)
    assert {o.gpu_type for o in a100.offers} == {"A100_80GB"}


async def test_multi_node_query_asks_the_multi_node_list(prime_simulator_factory):
    sim = prime_simulator_factory()
    query = AvailabilityQuery(gpu_type="H100_80GB", multi_node=True)
    async with watch_offers(settings_for(sim), query, FAST) as sub:
        snapshot = await sub.next()
    assert [o.cloud_id for o in snapshot.offers] == ["sim-h100-80gb-16x-cluster"]
    assert sim.stats.by_path[MULTI_NODE_PATH] >= 1
    assert gpu_requests(sim) == 0


async def test_leaving_stops_the_loop_and_no_request_follows(prime_simulator_factory):
    sim = prime_simulator_factory()
    async with watch_offers(settings_for(sim), H100X8, FAST) as sub:
        await sub.next()
        (poller,) = active_availability_pollers()
        task = poller._task
    assert active_availability_pollers() == []
    assert task is not None
    assert task.done()
    after = gpu_requests(sim)
    # a new, independent poller's requests are the proof of time passing, not a sleep
    other = AvailabilityQuery(gpu_type="A100_80GB")
    async with watch_offers(settings_for(sim), other, FAST) as sub:
        for _ in range(3):
            await sub.next()
    asked = [r.path for r in sim.stats.log]
    assert gpu_requests(sim) - after == 3
    assert len(asked) == after + 3


async def test_a_failed_round_is_an_error_snapshot_with_the_previous_offers(prime_simulator_factory):
    sim = prime_simulator_factory()
    async with watch_offers(settings_for(sim, max_retries=0), H100X8, FAST) as sub:
        good = await sub.next()
        assert good.error is None
        sim.inject(Fault(kind="http_error", status=503, path=GPUS_PATH, times=1))
        failed = await sub.next()
        while failed.error is None:  # a round already under way when the fault was armed
            failed = await sub.next()
        assert isinstance(failed.error, PrimeTransientError)
        assert failed.offers == good.offers
        assert failed.seq > good.seq
        recovered = await sub.next()
        assert recovered.error is None  # the loop went on at its pace


async def test_a_refused_key_reaches_every_waiter_and_the_loop_goes_on(prime_simulator_factory):
    sim = prime_simulator_factory()
    settings = PrimeApiSettings(base_url=sim.base_url, api_key="not-a-key", **FAST_RETRY)  # type: ignore[arg-type]
    async with many(settings, H100X8, 3, FAST) as subs:
        first = await asyncio.gather(*(sub.next() for sub in subs))
        assert all(isinstance(s.error, PrimeAuthError) for s in first)
        assert all(s.offers == () for s in first)
        second = await subs[0].next()
        assert isinstance(second.error, PrimeAuthError)


async def test_a_joiner_is_served_from_a_fresh_answer_without_a_request(prime_simulator_factory):
    sim = prime_simulator_factory()
    settings = settings_for(sim)
    async with watch_offers(settings, H100X8, SLOW) as first:
        answer = await first.next()
        before = gpu_requests(sim)
        async with watch_offers(settings, H100X8, SLOW) as second:
            assert await asyncio.wait_for(second.next(), 0.001) is answer
        assert gpu_requests(sim) == before


async def test_a_faster_joiner_speeds_the_query_up(prime_simulator_factory):
    sim = prime_simulator_factory()
    settings = settings_for(sim)
    async with watch_offers(settings, H100X8, SLOW) as slow:
        await slow.next()
        async with watch_offers(settings, H100X8, FAST) as fast:
            (poller,) = active_availability_pollers()
            assert poller.interval(H100X8) == FAST
            await fast.next()  # the fresh answer
            await fast.next()  # the next one comes at the fast pace, not in 30 s
        assert poller.interval(H100X8) == SLOW


async def test_other_settings_get_their_own_poller(prime_simulator_factory):
    sim = prime_simulator_factory()
    one, two = settings_for(sim), settings_for(sim, read_timeout=3)
    async with watch_offers(one, H100X8, FAST) as a, watch_offers(two, H100X8, FAST) as b:
        await asyncio.gather(a.next(), b.next())
        assert len(active_availability_pollers()) == 2


async def test_a_cancelled_wait_leaves_cleanly(prime_simulator_factory):
    sim = prime_simulator_factory()
    settings = settings_for(sim)

    async def wait() -> None:
        async with watch_offers(settings, H100X8, SLOW) as sub:
            await sub.next()
            await sub.next()  # 30 s away

    task = asyncio.create_task(wait())
    await until(lambda: gpu_requests(sim) == 1)
    await until(lambda: active_availability_pollers() and active_availability_pollers()[0].requests == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert active_availability_pollers() == []
