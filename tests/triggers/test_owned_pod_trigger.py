"""OwnedPodTrigger.on_kill over real HTTP: it deletes only when Airflow says the task was stopped.

Airflow 3.3 cancels a trigger with its "user action" message, then calls ``on_kill``, both when a
user stops the deferred task and when a live triggerer loses its triggers to another one (its
heartbeat went stale). The tests do what the triggerer does (cancel the running trigger, then
``on_kill`` under ``[triggerer] on_kill_timeout``, then ``cleanup``) with Airflow's answers faked
in the Task SDK's own types (``tests/triggers/supervisor.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from airflow.sdk.api.datamodels._generated import TaskInstanceState
from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType

from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.testing import STATUS_PATH, Fault, fixed_pod, ready_pod
from airflow_provider_prime.triggers import task_state
from airflow_provider_prime.triggers.pod_lifecycle import OwnedPodTrigger
from tests.simulated import until
from tests.triggers.supervisor import NO_ANSWER, ErrorResponse, airflow_told

POLL = 0.05
#: Airflow 3.3's default [triggerer] on_kill_timeout: on_kill is cancelled past it.
ON_KILL_TIMEOUT = 30.0
#: The message of Airflow 3.3's cancel of a trigger it drops (``_USER_ACTION_CANCEL_MSG``).
USER_ACTION = "__airflow_user_action__"


def owned(pod_ids: list[str], **kwargs: Any) -> OwnedPodTrigger:
    return OwnedPodTrigger(
        pod_ids=pod_ids,
        deadline=time.time() + 60,
        prime_conn_id="prime_default",
        poll_interval=POLL,
        **kwargs,
    )


async def first_event(trigger: OwnedPodTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return dict(event.payload)
    raise AssertionError("no event")


async def cancelled_by_airflow(sim: Any, trigger: OwnedPodTrigger) -> None:
    """Run the wait until it has polled, then what the 3.3 triggerer does to a trigger it drops."""
    task = asyncio.ensure_future(first_event(trigger))
    await until(lambda: any(r.path == STATUS_PATH for r in sim.stats.log))
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await asyncio.wait_for(trigger.on_kill(), ON_KILL_TIMEOUT)
    await trigger.cleanup()


def deletes(sim: Any) -> list[str]:
    """The pods a DELETE was sent for (``DELETE /api/v1/pods/{id}``), in order."""
    return [r.path.rstrip("/").rpartition("/")[2] for r in sim.stats.log if r.method == "DELETE"]


def billing(sim: Any) -> list[str]:
    return [pod_id for pod_id, pod in sim.billing()["pods"].items() if pod["billing"]]


def give_back(*pod_ids: str) -> None:
    """What the teardown does with a pod the task kept: delete it."""
    hook = PrimeHook("prime_default")
    for pod_id in pod_ids:
        hook.delete_pod(pod_id)


async def test_a_trigger_moved_to_another_triggerer_keeps_its_pod_and_the_wait_goes_on_there(
    prime_simulator_factory, prime_connect, monkeypatch, logs
):
    sim = prime_simulator_factory(ready_pod("p", ready_at=40))
    prime_connect(sim)
    stale = owned(["p"])
    airflow_told(monkeypatch, stale, TaskInstanceState.DEFERRED)  # the other triggerer runs it now
    await cancelled_by_airflow(sim, stale)
    assert deletes(sim) == []
    assert billing(sim) == ["p"]
    assert any("keeping pod(s) p" in e["event"] and "moved" in e["event"] for e in logs)

    _, kwargs = stale.serialize()  # what the other triggerer builds from the database
    event = await first_event(OwnedPodTrigger(**kwargs))
    assert event["status"] == "success"
    assert deletes(sim) == []

    give_back("p")
    await until(lambda: billing(sim) == [])


@pytest.mark.parametrize(
    "state",
    [
        TaskInstanceState.DEFERRED,  # still waiting (moved; or a new try deferred on the pod)
        TaskInstanceState.SCHEDULED,  # the other triggerer's event resumed it on a worker...
        TaskInstanceState.QUEUED,
        TaskInstanceState.RUNNING,  # ...which adopts or hands over the pod now
        TaskInstanceState.SUCCESS,  # handed over to the tasks downstream
    ],
    ids=str,
)
async def test_a_task_instance_that_may_use_the_pod_keeps_it(
    prime_simulator_factory, prime_connect, monkeypatch, state
):
    sim = prime_simulator_factory(fixed_pod("p", "PROVISIONING"))
    prime_connect(sim)
    trigger = owned(["p"])
    supervisor = airflow_told(monkeypatch, trigger, state)
    await cancelled_by_airflow(sim, trigger)
    assert len(supervisor.asked_states) == 1
    assert deletes(sim) == []
    assert billing(sim) == ["p"]
    give_back("p")
    await until(lambda: billing(sim) == [])


@pytest.mark.parametrize(
    "state",
    [TaskInstanceState.FAILED, TaskInstanceState.UP_FOR_RETRY, None],  # marked failed, ..., cleared
    ids=str,
)
async def test_a_task_the_user_stopped_deletes_its_pods(
    prime_simulator_factory, prime_connect, monkeypatch, logs, state
):
    sim = prime_simulator_factory(fixed_pod("p", "PROVISIONING"), fixed_pod("q", "PROVISIONING"))
    prime_connect(sim)
    trigger = owned(["p", "q"])
    airflow_told(monkeypatch, trigger, state, map_index=2)
    await cancelled_by_airflow(sim, trigger)
    assert sorted(deletes(sim)) == ["p", "q"]
    assert any("Task stopped while waiting" in e["event"] for e in logs)
    await until(lambda: billing(sim) == [])


async def test_a_deleted_run_deletes_the_pod(prime_simulator_factory, prime_connect, monkeypatch):
    from airflow.sdk.execution_time.comms import TaskStatesResult

    sim = prime_simulator_factory(fixed_pod("p", "PROVISIONING"))
    prime_connect(sim)
    trigger = owned(["p"])
    airflow_told(monkeypatch, trigger, TaskStatesResult(task_states={}))
    await cancelled_by_airflow(sim, trigger)
    assert deletes(sim) == ["p"]
    await until(lambda: billing(sim) == [])


@pytest.mark.parametrize(
    "answer",
    [
        ErrorResponse(error=ErrorType.API_SERVER_ERROR, detail={"status_code": 503}),
        AirflowRuntimeError(ErrorResponse(error=ErrorType.GENERIC_ERROR)),
        NO_ANSWER,
    ],
    ids=["ErrorResponse", "error frame", "no answer"],
)
async def test_when_airflow_cannot_say_the_pod_is_kept_and_the_backstop_named(
    prime_simulator_factory, prime_connect, monkeypatch, logs, answer
):
    monkeypatch.setattr(task_state, "STATE_QUESTION_TIMEOUT", 0.2)
    sim = prime_simulator_factory(fixed_pod("p", "PROVISIONING"))
    prime_connect(sim)
    trigger = owned(["p"])
    airflow_told(monkeypatch, trigger, answer)
    await cancelled_by_airflow(sim, trigger)
    assert deletes(sim) == []
    (line,) = [e for e in logs if "keeping pod(s) p" in e["event"]]
    assert line["log_level"] == "warning"
    assert "reaper" in line["event"]
    give_back("p")
    await until(lambda: billing(sim) == [])


async def test_without_a_task_instance_nothing_is_deleted(prime_simulator_factory, prime_connect):
    sim = prime_simulator_factory(fixed_pod("p", "PROVISIONING"))
    prime_connect(sim)
    trigger = owned(["p"])  # no task_instance: not run by a 3.3 triggerer
    await cancelled_by_airflow(sim, trigger)
    assert deletes(sim) == []
    give_back("p")
    await until(lambda: billing(sim) == [])


async def test_terminate_on_kill_off_asks_nothing_and_deletes_nothing(
    prime_simulator_factory, prime_connect, monkeypatch
):
    sim = prime_simulator_factory(fixed_pod("p", "PROVISIONING"))
    prime_connect(sim)
    trigger = owned(["p"], terminate_on_kill=False)
    supervisor = airflow_told(monkeypatch, trigger, TaskInstanceState.FAILED)
    await cancelled_by_airflow(sim, trigger)
    assert supervisor.asked_states == []
    assert deletes(sim) == []
    give_back("p")
    await until(lambda: billing(sim) == [])


async def test_one_short_attempt_per_pod_all_at_once_then_the_backstop_is_named(
    prime_simulator_factory, prime_connect, monkeypatch, logs
):
    budget = 1.0
    monkeypatch.setattr(task_state, "ON_KILL_DELETE_TIMEOUT", budget)
    sim = prime_simulator_factory(*(fixed_pod(p, "PROVISIONING") for p in "abc"))
    prime_connect(sim)
    sim.inject(Fault.hang(method="DELETE", times=None))
    trigger = owned(["a", "b", "c"])
    airflow_told(monkeypatch, trigger, TaskInstanceState.FAILED)
    started = time.monotonic()
    await cancelled_by_airflow(sim, trigger)
    took = time.monotonic() - started
    # One attempt each (no retry, no Retry-After wait), all three at once: about one budget, not three.
    assert sorted(deletes(sim)) == ["a", "b", "c"]
    assert took < 2 * budget + 1.0, took
    failed = sorted(e["event"].split()[4] for e in logs if e["event"].startswith("Could not delete pod"))
    assert failed == ["a", "b", "c"]
    assert all("reaper" in e["event"] for e in logs if e["event"].startswith("Could not delete pod"))
    sim.clear_faults()
    give_back("a", "b", "c")
    await until(lambda: billing(sim) == [])


async def test_airflows_repeated_cancels_do_not_stop_on_kill_midway(
    prime_simulator_factory, prime_connect, monkeypatch, logs
):
    """Airflow 3.3 cancels a dropped trigger's task again at every sync with its supervisor (about
    once a second) until it has ended; a cancel reaching on_kill ends it silently. Seen end to end:
    the answer took 4.4 s (a cold in-process API server), and the delete after it never ran."""
    sim = prime_simulator_factory(fixed_pod("p", "PROVISIONING"))
    prime_connect(sim)
    trigger = owned(["p"])
    supervisor = airflow_told(monkeypatch, trigger, TaskInstanceState.FAILED)
    supervisor.gate = asyncio.Event()

    async def airflows_handler() -> None:  # run_trigger's, after the first "user action" cancel
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(trigger.on_kill(), ON_KILL_TIMEOUT)

    handler = asyncio.ensure_future(airflows_handler())
    await until(lambda: supervisor.asked_states)
    handler.cancel(USER_ACTION)  # a sync while the supervisor is still answering
    await asyncio.sleep(0)
    supervisor.gate.set()
    while not handler.done():  # and a sync at every turn until the trigger has ended
        handler.cancel(USER_ACTION)
        await asyncio.sleep(0.01)
    # On Python 3.10 asyncio.wait_for gives up on a cancel that its inner task swallows, so Airflow's
    # handler may end first; the delete still runs to its end in on_kill's own task.
    await until(lambda: any(e["event"] == "Deleted pod p" for e in logs))
    assert deletes(sim) == ["p"]
    await until(lambda: billing(sim) == [])


def test_the_on_kill_budget_fits_well_within_airflows_on_kill_timeout(monkeypatch):
    ask, delete = task_state.on_kill_budget()
    assert ask >= 10  # a cold in-process API server took 5.2 s to answer in the end-to-end test
    assert ask + delete + 1.0 <= ON_KILL_TIMEOUT * 0.75  # + 1: the hard bound around each delete
    monkeypatch.setenv("AIRFLOW__TRIGGERER__ON_KILL_TIMEOUT", "6")
    ask, delete = task_state.on_kill_budget()
    assert ask + delete <= 6 * 0.75
