"""PrimeJobTrigger over real SSH to the simulator's nodes: restarts, moves and user kills.

The job is launched by the operator (which defers); the trigger is then rebuilt from its serialized
kwargs, as a triggerer does, and run on the test's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_prime.operators.job import PrimeRunJobOperator
from airflow_provider_prime.testing import PrimeSimulator, fixed_pod
from airflow_provider_prime.testing.pytest_plugin import SshKeyPair
from airflow_provider_prime.triggers.job import PrimeJobTrigger
from tests.job.job_harness import alive, context, job_simulator, text, wait_until
from tests.operators.conftest import TaskDeferred
from tests.simulated import until
from tests.triggers.supervisor import TaskInstanceState, airflow_told

POD = "pod-trig"


@pytest.fixture
def sim(
    prime_simulator_factory: Any,
    prime_connect: Any,
    prime_ssh_key: SshKeyPair,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[PrimeSimulator]:
    simulator = job_simulator(
        prime_simulator_factory, prime_connect, prime_ssh_key, monkeypatch, fixed_pod(POD, nodes=2)
    )
    yield simulator
    wait_until(lambda: alive(simulator) == 0, "no process alive on any node")


async def deferred(command: str) -> tuple[PrimeRunJobOperator, dict[str, Any]]:
    """Launch ``command`` on both nodes through the operator (in a thread: a worker runs no event
    loop of its own); the kwargs of the trigger it defers to."""
    operator = PrimeRunJobOperator(
        task_id="train", pod_ids=[POD], command=command, deferrable=True, poll_interval=0.2
    )
    with pytest.raises(TaskDeferred) as raised:
        await asyncio.to_thread(operator.execute, context())
    _, kwargs = raised.value.trigger.serialize()
    return operator, {**kwargs, "not_before": None}


async def first_event(trigger: PrimeJobTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return dict(event.payload)
    raise AssertionError("no event")


def lines_of(logs: list[dict[str, Any]], rank: int) -> list[str]:
    return [line for line in text(logs) if line.startswith(f"[node {rank}] line")]


async def test_a_restarted_trigger_shows_every_line_exactly_once_and_the_job_finishes(
    sim: PrimeSimulator, tmp_path: Path, logs: list[dict[str, Any]]
) -> None:
    go = tmp_path / "go"
    command = (
        f"for i in 1 2 3 4 5; do echo line $i; done; while [ ! -f {go} ]; do sleep 0.05; done; "
        "seq -f 'line %g' 6 10"
    )
    operator, kwargs = await deferred(command)
    first = asyncio.ensure_future(first_event(PrimeJobTrigger(**kwargs)))
    await until(lambda: len(lines_of(logs, 0)) == 5 and len(lines_of(logs, 1)) == 5, timeout=30)
    first.cancel()  # the triggerer restarts (or the trigger moves): the job runs on
    with pytest.raises(asyncio.CancelledError):
        await first
    assert alive(sim) >= 2
    go.touch()
    event = await first_event(PrimeJobTrigger(**kwargs))  # the next triggerer, from the same kwargs
    assert event["status"] == "done"
    assert [n["exit_code"] for n in operator.execute_complete(context(), event)["nodes"]] == [0, 0]
    for rank in (0, 1):
        assert lines_of(logs, rank) == [f"[node {rank}] line {i}" for i in range(1, 11)]


async def test_on_kill_kills_the_job_when_airflow_says_the_task_was_stopped(
    sim: PrimeSimulator, monkeypatch: pytest.MonkeyPatch, logs: list[dict[str, Any]]
) -> None:
    _, kwargs = await deferred("echo up; sleep 1000")
    trigger = PrimeJobTrigger(**kwargs)
    airflow_told(monkeypatch, trigger, TaskInstanceState.FAILED)
    running = asyncio.ensure_future(first_event(trigger))
    await until(lambda: "[node 1] up" in text(logs) and "[node 0] up" in text(logs), timeout=30)
    running.cancel()
    await trigger.on_kill()
    assert alive(sim) == 0
    assert any("killing the job on every node" in line for line in text(logs))


@pytest.mark.parametrize("state", [TaskInstanceState.DEFERRED, TaskInstanceState.RUNNING])
async def test_on_kill_keeps_the_job_while_the_task_waits_or_runs_elsewhere(
    sim: PrimeSimulator, monkeypatch: pytest.MonkeyPatch, state: TaskInstanceState
) -> None:
    _, kwargs = await deferred("sleep 1000")
    trigger = PrimeJobTrigger(**kwargs)
    supervisor = airflow_told(monkeypatch, trigger, state)
    await trigger.on_kill()
    assert supervisor.asked_states  # it asked Airflow before deciding
    assert alive(sim) >= 2  # the job runs on: the trigger moved, or a worker follows it
    killer = PrimeJobTrigger(**kwargs)
    airflow_told(monkeypatch, killer, TaskInstanceState.FAILED)
    await killer.on_kill()


async def test_a_node_whose_host_key_changed_fails_the_job_at_once(
    sim: PrimeSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, kwargs = await deferred("sleep 1000")
    assert kwargs["pins"], "the worker pinned the nodes' host keys"
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfJ9mT0m1m0oV2k9hM0d3a3a1cF0f7a0p2iCq9nL1rW"
    pins = dict.fromkeys(kwargs["pins"], other)
    event = await first_event(PrimeJobTrigger(**{**kwargs, "pins": pins}))  # the grace is 120 s
    assert event["status"] == "failed"
    assert "host key" in event["message"]
    killer = PrimeJobTrigger(**kwargs)
    airflow_told(monkeypatch, killer, TaskInstanceState.FAILED)
    await killer.on_kill()


async def test_a_successful_command_ends_the_task_in_the_triggerer_with_the_result_a_worker_returns(
    sim: PrimeSimulator, monkeypatch: pytest.MonkeyPatch, logs: list[dict[str, Any]]
) -> None:
    """``end_from_trigger``: the result is pushed as the worker's return value would be, the end
    line logged here, and a bare ``TaskSuccessEvent`` ends the task with no worker."""
    from airflow.sdk.bases.xcom import BaseXCom
    from airflow.sdk.execution_time.comms import SetXCom
    from airflow.triggers.base import TaskSuccessEvent

    from airflow_provider_prime.triggers import task_end

    monkeypatch.setattr(task_end, "success_listeners", lambda: False)
    command = 'echo hi; [ "$PRIME_NODE_RANK" = 0 ] && echo \'{"loss": 0.5}\' > "$PRIME_RESULT_FILE"; true'
    operator, kwargs = await deferred(command)
    assert kwargs.get("end_from_trigger") is task_end.ends_in_triggerer(operator)
    ended = PrimeJobTrigger(**{**kwargs, "end_from_trigger": True})
    supervisor = airflow_told(monkeypatch, ended, TaskInstanceState.DEFERRED)

    (event,) = [event async for event in ended.run()]  # exactly one event

    assert isinstance(event, TaskSuccessEvent), event
    assert [line for line in text(logs) if line.startswith("The job succeeded")] == [
        "The job succeeded on 2 node(s)"
    ]  # the line execute_complete logs, in the trigger's (the task's) log
    (push,) = [q for q in supervisor.questions if isinstance(q, SetXCom)]
    # The same job read again by a trigger that does not end the task: the worker's return value.
    again = await first_event(PrimeJobTrigger(**kwargs | {"end_from_trigger": False}))
    returned = operator.execute_complete(context(), again)
    assert returned["result"] == {"loss": 0.5}
    assert BaseXCom.deserialize_value(push) == returned


async def test_a_setup_phase_never_ends_the_task_in_the_triggerer(sim: PrimeSimulator) -> None:
    operator = PrimeRunJobOperator(
        task_id="train", pod_ids=[POD], setup="true", command="true", deferrable=True, poll_interval=0.2
    )
    with pytest.raises(TaskDeferred) as raised:
        await asyncio.to_thread(operator.execute, context())
    _, kwargs = raised.value.trigger.serialize()
    assert kwargs["phase"] == "setup"
    assert "end_from_trigger" not in kwargs
    operator.on_kill()  # the setup is not followed here: stop it
