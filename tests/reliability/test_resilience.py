"""Resilience of a deferred wait: a triggerer restart mid-wait, cancellation mid-request.

Both against the simulator over real HTTP. A restart is what the triggerer does to a trigger:
cancel its task, later build a new trigger from the serialized kwargs stored in the database,
and run it. The deadline is absolute (epoch seconds, set once by the sensor), so it survives.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
from airflow.serialization.serialized_objects import BaseSerialization

from airflow_provider_prime.hooks._clients import AsyncPrimeClient
from airflow_provider_prime.hooks._settings import PrimeApiSettings
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.testing import Fault, PrimeSimulator, fixed_pod
from airflow_provider_prime.triggers.pod_status import PodStatusTrigger
from airflow_provider_prime.triggers.polling import active_pollers
from tests.reliability.cases import EXTRA, POD, POLL_INTERVAL
from tests.reliability.conftest import Observations, client_connections, leftover_tasks
from tests.simulated import until

#: Connection extra for requests that must stay in flight: a read timeout longer than any test.
PATIENT = {**EXTRA, "read_timeout": 30}


async def collect(trigger: PodStatusTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


def revive(classpath: str, stored: Any) -> PodStatusTrigger:
    """What a triggerer does after a restart: import the class, rebuild it from the stored kwargs."""
    module, _, name = classpath.rpartition(".")
    trigger = getattr(importlib.import_module(module), name)(**BaseSerialization.deserialize(stored))
    assert isinstance(trigger, PodStatusTrigger)
    return trigger


@pytest.fixture
def waiting_sim(
    prime_simulator_factory: Callable[..., PrimeSimulator], prime_connect: Callable[..., str]
) -> PrimeSimulator:
    """A simulator whose pod stays PROVISIONING, and the default connection to it."""
    sim = prime_simulator_factory([fixed_pod(POD, "PROVISIONING")])
    prime_connect(sim)
    return sim


async def test_triggerer_restart_mid_wait_keeps_the_original_deadline(
    waiting_sim: PrimeSimulator, observations: Observations, request: pytest.FixtureRequest
) -> None:
    timeout = 3.0
    deadline = time.time() + timeout
    original = PodStatusTrigger(pod_ids=[POD], deadline=deadline, poll_interval=POLL_INTERVAL)
    classpath, kwargs = original.serialize()
    stored = BaseSerialization.serialize(kwargs)  # the triggerer's database row

    first_run = asyncio.create_task(collect(original))
    await until(lambda: time.time() >= deadline - timeout / 2 and waiting_sim.stats.total >= 2)
    first_run.cancel()  # the triggerer stops, half-way through the wait
    restarted_at = time.time()
    with pytest.raises(asyncio.CancelledError):
        await first_run
    assert active_pollers() == []

    revived = revive(classpath, stored)
    assert revived.deadline == deadline
    events = await collect(revived)
    fired_at = time.time()

    assert [event["status"] for event in events] == ["timeout"]
    when = datetime.fromtimestamp(deadline, tz=timezone.utc).isoformat(timespec="seconds")
    assert f"deadline {when}" in events[0]["message"]
    assert "pod is PROVISIONING" in events[0]["message"]
    assert fired_at >= deadline
    # A deadline recomputed at the restart would fire timeout/2 later than the original one.
    assert fired_at < deadline + timeout / 4
    observations.add(
        request,
        kind="restart",
        timeout=timeout,
        restarted_after=round(restarted_at - (deadline - timeout), 3),
        fired_after_deadline=round(fired_at - deadline, 3),
        requests=waiting_sim.stats.total,
    )


async def test_triggerer_back_after_the_deadline_times_out_without_a_request(
    waiting_sim: PrimeSimulator,
) -> None:
    classpath, kwargs = PodStatusTrigger(pod_ids=[POD], deadline=time.time() - 5).serialize()
    events = await collect(revive(classpath, BaseSerialization.serialize(kwargs)))
    assert [event["status"] for event in events] == ["timeout"]
    assert "the deadline passed before the trigger started" in events[0]["message"]
    assert waiting_sim.stats.total == 0


class ClientLedger:
    """Every AsyncPrimeClient the poller makes, and which of them were closed."""

    def __init__(self) -> None:
        self.made: list[AsyncPrimeClient] = []
        self.closed: list[AsyncPrimeClient] = []

    def factory(self, settings: PrimeApiSettings) -> AsyncPrimeClient:
        client = AsyncPrimeClient(settings)
        self.made.append(client)
        aclose = client.aclose

        async def recorded_aclose() -> None:
            self.closed.append(client)
            await aclose()

        client.aclose = recorded_aclose  # type: ignore[method-assign]
        return client


@pytest.fixture
def ledger(monkeypatch: pytest.MonkeyPatch) -> ClientLedger:
    clients = ClientLedger()
    monkeypatch.setattr(PrimeHook, "async_status_client", clients.factory)
    return clients


@pytest.mark.parametrize(
    "fault", [Fault.slow(5.0, times=None), Fault.hang(times=None)], ids=["slow-response", "no-response"]
)
async def test_trigger_cancelled_mid_request_leaves_no_task_or_connection_behind(
    prime_simulator_factory: Callable[..., PrimeSimulator],
    prime_connect: Callable[..., str],
    ledger: ClientLedger,
    fault: Fault,
    observations: Observations,
    request: pytest.FixtureRequest,
) -> None:
    sim = prime_simulator_factory([fixed_pod(POD)])
    prime_connect(sim, extra=PATIENT)
    sim.inject(fault)
    task = asyncio.create_task(collect(PodStatusTrigger(pod_ids=[POD], deadline=time.time() + 30)))
    await until(lambda: sim.stats.total == 1)
    await until(lambda: len(client_connections(sim.port)) == 1)  # the request is on the wire, unanswered
    tasks_before = len(leftover_tasks())

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert leftover_tasks() == []
    assert active_pollers() == []
    assert len(ledger.made) == 1
    assert ledger.closed == ledger.made
    await until(lambda: client_connections(sim.port) == [])
    assert sim.stats.total == 1  # nothing retried after the cancel
    observations.add(
        request,
        kind="cancel",
        fault=fault.kind.value,
        tasks_before=tasks_before,
        tasks_after=len(leftover_tasks()),
        connections_before=1,
        connections_after=len(client_connections(sim.port)),
        clients_closed=f"{len(ledger.closed)}/{len(ledger.made)}",
        requests=sim.stats.total,
    )


async def test_cancelling_one_of_two_waits_keeps_the_shared_request_for_the_other(
    prime_simulator_factory: Callable[..., PrimeSimulator],
    prime_connect: Callable[..., str],
    ledger: ClientLedger,
) -> None:
    sim = prime_simulator_factory([fixed_pod(POD)])
    prime_connect(sim, extra=PATIENT)
    sim.inject(Fault.slow(0.5, times=1))
    deadline = time.time() + 30
    leaving = asyncio.create_task(collect(PodStatusTrigger(pod_ids=[POD], deadline=deadline)))
    staying = asyncio.create_task(collect(PodStatusTrigger(pod_ids=[POD], deadline=deadline)))
    await until(lambda: sim.stats.total == 1)

    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    events = await staying

    assert [event["status"] for event in events] == ["success"]
    assert sim.stats.total == 1  # the slow answer in flight served the remaining wait
    assert leftover_tasks() == []
    assert active_pollers() == []
    assert ledger.closed == ledger.made
