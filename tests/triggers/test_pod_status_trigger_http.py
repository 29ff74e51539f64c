"""PodStatusTrigger and its shared poller over real HTTP, against the simulator on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.testing import (
    DEFAULT_INSTALLATION_FAILURE,
    STATUS_PATH,
    Fault,
    ManualClock,
    failing_pod,
    fixed_pod,
    install_failure_pod,
    ready_pod,
    vanishing_pod,
)
from airflow_provider_prime.triggers.pod_lifecycle import OwnedPodTrigger
from airflow_provider_prime.triggers.pod_status import PodStatusTrigger
from airflow_provider_prime.triggers.polling import active_pollers
from tests.simulated import advance_per_request, until

POLL = 0.05


def trigger(
    pod_ids, conn_id: str = "prime_default", timeout: float = 10.0, **kwargs: Any
) -> PodStatusTrigger:
    return PodStatusTrigger(
        pod_ids=list(pod_ids),
        deadline=time.time() + timeout,
        prime_conn_id=conn_id,
        poll_interval=POLL,
        **kwargs,
    )


async def the_event(t: PodStatusTrigger) -> dict[str, Any]:
    (event,) = [event.payload async for event in t.run()]
    return event


@contextlib.asynccontextmanager
async def driven(sim, clock: ManualClock, step: float) -> AsyncIterator[None]:
    """Within the block, every request moves the simulator's pods ``step`` seconds forward."""
    task = asyncio.create_task(advance_per_request(sim, clock, step))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def status_requests(sim) -> list[Any]:
    return [r for r in sim.stats.log if r.path == STATUS_PATH]


async def test_success_after_the_pods_lifecycle(prime_simulator_factory, prime_connect):
    clock = ManualClock()
    sim = prime_simulator_factory(
        ready_pod("single", ready_at=10), ready_pod("multi", ready_at=12, nodes=2), clock=clock
    )
    prime_connect(sim)
    async with driven(sim, clock, step=1):
        event = await the_event(trigger(["single", "multi"]))
    assert event["status"] == "success"
    assert len(event["pods"]["multi"]["ssh_connections"]) == 2
    assert all(event["pods"]["multi"]["ssh_connections"])
    assert event["pods"]["single"]["installation_status"] == "FINISHED"
    assert len(status_requests(sim)) >= 12  # it waited through the whole lifecycle, one poll a step


async def test_installation_failure_fails_with_the_platform_text(prime_simulator_factory, prime_connect):
    sim = prime_simulator_factory(ready_pod("good", ready_at=2), install_failure_pod("bad", fail_at=4))
    prime_connect(sim)
    event = await the_event(trigger(["good", "bad"]))
    assert event["status"] == "failed"
    assert event["error_type"] == "PrimePodFailedError"
    assert f"bad: pod is ACTIVE, installation ERROR: {DEFAULT_INSTALLATION_FAILURE}" in event["message"]


async def test_pod_in_error_fails(prime_simulator_factory, prime_connect):
    prime_connect(prime_simulator_factory(failing_pod("doomed", fail_at=2)))
    event = await the_event(trigger(["doomed"]))
    assert event["status"] == "failed"
    assert "doomed: pod is ERROR" in event["message"]


async def test_vanished_pod_fails_as_not_found(prime_simulator_factory, prime_connect):
    prime_connect(prime_simulator_factory(vanishing_pod("ghost", vanish_at=1)))
    event = await the_event(trigger(["ghost"], missing_grace=0.2))
    assert event["status"] == "failed"
    assert "ghost: not found or not visible to this API key" in event["message"]


async def test_timeout_at_the_deadline(prime_simulator_factory, prime_connect):
    prime_connect(prime_simulator_factory(fixed_pod("stuck", "PROVISIONING")))
    event = await the_event(trigger(["stuck"], timeout=2.0))
    assert event["status"] == "timeout"
    assert "stuck: pod is PROVISIONING" in event["message"]


async def test_deadline_in_the_past_makes_no_request(prime_simulator_factory, prime_connect):
    sim = prime_simulator_factory(fixed_pod("p"))
    prime_connect(sim)
    event = await the_event(trigger(["p"], timeout=-5))
    assert event["status"] == "timeout"
    assert sim.stats.total == 0


async def test_transient_errors_then_success(prime_simulator_factory, prime_connect):
    sim = prime_simulator_factory(fixed_pod("p"))
    prime_connect(sim)
    sim.inject(
        Fault.server_error(503, times=2),
        Fault.server_error(502, html=True, times=1),
        Fault.rate_limited(retry_after=0.01, times=2),
    )
    event = await the_event(trigger(["p"]))
    assert event["status"] == "success"
    codes = sim.stats.by_status
    assert (codes[503], codes[502], codes[429], codes[200]) == (2, 1, 2, 1)


async def test_wrong_key_fails_with_an_actionable_message(prime_simulator_factory, prime_connect):
    sim = prime_simulator_factory(fixed_pod("p"))
    prime_connect(sim, api_key="pk-wrong-key-123")
    event = await the_event(trigger(["p"]))
    assert event["status"] == "failed"
    assert event["error_type"] == "PrimeAuthError"
    assert "401" in event["message"]
    assert "pk-wrong-key-123" not in event["message"]
    assert sim.stats.by_status[401] == 1  # no retry on 401


async def test_cancel_mid_request_leaves_no_task(prime_simulator_factory, prime_connect):
    sim = prime_simulator_factory(fixed_pod("p"))
    prime_connect(sim)
    sim.inject(Fault.hang(times=None))
    task = asyncio.create_task(the_event(trigger(["p"])))
    await until(lambda: sim.stats.total >= 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert active_pollers() == []
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_triggers_on_one_connection_share_one_request_per_tick(prime_simulator_factory, prime_connect):
    clock = ManualClock()
    sim = prime_simulator_factory(*(ready_pod(pid, ready_at=10) for pid in "abc"), clock=clock)
    prime_connect(sim)
    async with driven(sim, clock, step=1):
        results = await asyncio.gather(*(the_event(trigger(ids)) for ids in (["a"], ["b", "a"], ["c"])))
    assert [event["status"] for event in results] == ["success"] * 3
    requests = status_requests(sim)
    assert len(requests) >= 10
    union = [r for r in requests if sorted(r.pod_ids) == ["a", "b", "c"]]
    # Every request is one tick for all three triggers, except at most a join fetch for late joiners.
    assert len(union) >= len(requests) - 1


async def test_each_connection_polls_separately(prime_simulator_factory, prime_connect):
    sim = prime_simulator_factory(
        ready_pod("mine", ready_at=6), ready_pod("theirs", ready_at=6), api_keys=("k-one", "k-two")
    )
    prime_connect(sim, conn_id="prime_one", api_key="k-one")
    prime_connect(sim, conn_id="prime_two", api_key="k-two")
    one, two = await asyncio.gather(
        the_event(trigger(["mine"], conn_id="prime_one")), the_event(trigger(["theirs"], conn_id="prime_two"))
    )
    assert one["status"] == two["status"] == "success"
    for request in status_requests(sim):
        assert request.pod_ids == (("mine",) if request.api_key == "k-one" else ("theirs",))
    assert set(sim.stats.by_key) == {"k-one", "k-two"}


@pytest.mark.parametrize(
    "bad_answer",
    [
        Fault.malformed_json(path=STATUS_PATH),
        Fault.http_error(401, path=STATUS_PATH),
        Fault.http_error(404, body_shape="detail", message="Not Found", path=STATUS_PATH),
    ],
    ids=["garbled 200", "lone 401", "lone 404"],
)
async def test_one_bad_answer_to_the_shared_request_fails_none_of_five_deferred_creates(
    prime_simulator_factory, prime_connect, bad_answer
):
    """Five creates deferred on one poller; its one status request gets one bad answer. Before, all
    five failed (and each create then deleted its healthy pod); now the poller asks again."""
    clock = ManualClock()
    ids = [f"pod-{i}" for i in range(5)]
    sim = prime_simulator_factory(*(ready_pod(pid, ready_at=6) for pid in ids), clock=clock)
    prime_connect(sim)
    sim.inject(bad_answer)
    waits = [OwnedPodTrigger(pod_ids=[pid], deadline=time.time() + 20, poll_interval=POLL) for pid in ids]
    async with driven(sim, clock, step=1):
        results = await asyncio.gather(*(the_event(t) for t in waits))
    assert [event["status"] for event in results] == ["success"] * 5
    (struck,) = [r for r in status_requests(sim) if r.note]  # the bad answer was one shared request
    assert sorted(struck.pod_ids) == ids
    assert active_pollers() == []
    assert not [r for r in sim.stats.log if r.method == "DELETE"]
    hook = PrimeHook("prime_default")
    for pid in ids:  # the creates hand the pods over; the teardown gives them back
        hook.delete_pod(pid)
    clock.advance(60)  # past the simulator's DELETING phase
    assert [p for p, bill in sim.billing()["pods"].items() if bill["billing"]] == []
