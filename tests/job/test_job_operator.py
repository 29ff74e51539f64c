"""PrimeRunJobOperator over real SSH to the simulator's nodes: launch, follow, adopt, fail, kill.

Each test rents nothing: the simulator's pods are ready from the start, with a real SSH server per
node on loopback (commands run as local processes in each node's own home). Every test ends with no
process alive on any node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_prime._compat import AirflowTaskTimeout
from airflow_provider_prime.exceptions import PrimeConfigError, PrimeJobFailedError, PrimePodFailedError
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.operators import job as job_module
from airflow_provider_prime.operators.job import PrimeRunJobOperator
from airflow_provider_prime.testing import PrimeSimulator, fixed_pod, ready_pod
from airflow_provider_prime.testing.pytest_plugin import SshKeyPair
from airflow_provider_prime.triggers.job import PrimeJobTrigger
from tests.job.job_harness import (
    Running,
    TaskInstance,
    alive,
    context,
    job_simulator,
    launches,
    probes,
    text,
    wait_until,
)
from tests.operators.conftest import TaskDeferred

POD = "pod-train"
STARTED = {"[node 0] started", "[node 1] started"}
RESULT = 'if [ "$NODE_RANK" = 0 ]; then echo \'{"loss": 0.25}\' > "$PRIME_RESULT_FILE"; fi'


@pytest.fixture
def sim(
    prime_simulator_factory: Any,
    prime_connect: Any,
    prime_ssh_key: SshKeyPair,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[PrimeSimulator]:
    simulator = job_simulator(
        prime_simulator_factory,
        prime_connect,
        prime_ssh_key,
        monkeypatch,
        fixed_pod(POD, nodes=2),
        ready_pod("pod-booting", ready_at=3600.0),
    )
    yield simulator
    wait_until(lambda: alive(simulator) == 0, "no process alive on any node")


def job(**kwargs: Any) -> PrimeRunJobOperator:
    kwargs.setdefault("pod_ids", [POD])
    kwargs.setdefault("poll_interval", 0.2)
    kwargs.setdefault("deferrable", False)
    return PrimeRunJobOperator(task_id=kwargs.pop("task_id", "train"), **kwargs)


def test_a_job_runs_on_every_node_with_its_rank_and_returns_rank_0s_result(
    sim: PrimeSimulator, logs: list[dict[str, Any]]
) -> None:
    command = f'echo "rank $NODE_RANK of $NNODES, master $MASTER_ADDR:$MASTER_PORT"; {RESULT}'
    result = job(command=command).execute(context())
    assert result["result"] == {"loss": 0.25}
    assert [(n["rank"], n["exit_code"]) for n in result["nodes"]] == [(0, 0), (1, 0)]
    lines = text(logs)
    master = sim_master(sim)
    for rank in (0, 1):
        assert f"[node {rank}] rank {rank} of 2, master {master}:29500" in lines
        assert sum(line.startswith(f"[node {rank}] rank") for line in lines) == 1  # exactly once


def sim_master(sim: PrimeSimulator) -> str:
    status = PrimeHook().get_pods_status([POD])[0]
    return str(status.ip[0] if isinstance(status.ip, list) else status.ip)


def test_the_first_failing_rank_fails_the_task_and_the_other_ranks_are_killed(
    sim: PrimeSimulator, prime_ssh_key: SshKeyPair
) -> None:
    command = 'if [ "$NODE_RANK" = 1 ]; then echo "rank 1 gives up"; exit 7; fi; echo waiting; sleep 1000'
    with pytest.raises(PrimeJobFailedError) as failed:
        job(command=command).execute(context())
    message = str(failed.value)
    assert "node 1" in message
    assert "code 7" in message
    assert "rank 1 gives up" in message
    assert alive(sim) == 0  # rank 0's sleep was killed before the task reported


def test_setup_succeeds_on_every_node_before_the_command_starts_anywhere(
    sim: PrimeSimulator, tmp_path: Path, prime_ssh_key: SshKeyPair
) -> None:
    marker = tmp_path / "setup-of-rank-1"
    setup = f'if [ "$NODE_RANK" = 1 ]; then sleep 1; touch {marker}; fi; echo set up'
    command = f'[ -f {marker} ] && echo "rank $NODE_RANK saw rank 1 set up"'
    result = job(command=command, setup=setup).execute(context())
    assert [n["exit_code"] for n in result["nodes"]] == [0, 0]
    assert launches(sim, POD, prime_ssh_key, "setup") == [1, 1]


def test_a_setup_that_fails_on_one_node_fails_the_task_and_launches_no_command(
    sim: PrimeSimulator, prime_ssh_key: SshKeyPair
) -> None:
    setup = 'if [ "$NODE_RANK" = 1 ]; then echo "no disk"; exit 5; fi; sleep 1000'
    with pytest.raises(PrimeJobFailedError, match=r"setup failed on node 1.*code 5"):
        job(command="echo never", setup=setup).execute(context())
    assert launches(sim, POD, prime_ssh_key) == [0, 0]


def test_a_retry_adopts_the_running_job_and_the_log_goes_on_where_it_was(
    sim: PrimeSimulator, tmp_path: Path, prime_ssh_key: SshKeyPair, logs: list[dict[str, Any]]
) -> None:
    go = tmp_path / "go"
    command = f"echo before; while [ ! -f {go} ]; do sleep 0.05; done; echo after"
    with pytest.raises(TaskDeferred):  # the first try launches, defers, and its worker goes away
        job(command=command, deferrable=True).execute(context())
    retry = Running(lambda: job(command=command).execute(context(TaskInstance(try_number=2))))
    wait_until(lambda: any("adopting the job" in line for line in text(logs)), "the retry adopts")
    go.touch()
    result = retry.join()
    assert retry.error is None, retry.error
    assert [n["exit_code"] for n in result["nodes"]] == [0, 0]
    assert launches(sim, POD, prime_ssh_key) == [1, 1]
    lines = text(logs)
    assert lines.count("[node 0] after") == 1
    assert lines.count("[node 0] before") == 1  # read by the retry once: the first try logged nothing


def test_a_job_that_succeeded_returns_its_result_and_runs_nothing(
    sim: PrimeSimulator, prime_ssh_key: SshKeyPair, logs: list[dict[str, Any]]
) -> None:
    first = job(command=f"echo once; {RESULT}").execute(context())
    again = job(command=f"echo once; {RESULT}").execute(context(TaskInstance(try_number=2)))
    assert again["result"] == first["result"] == {"loss": 0.25}
    assert launches(sim, POD, prime_ssh_key) == [1, 1]
    assert any("already succeeded" in line for line in text(logs))


def test_if_running_restart_kills_the_running_job_and_launches_it_again(
    sim: PrimeSimulator, prime_ssh_key: SshKeyPair
) -> None:
    with pytest.raises(TaskDeferred):
        job(command="sleep 1000", deferrable=True).execute(context())
    result = job(command="echo fresh", if_running="restart").execute(context(TaskInstance(try_number=2)))
    assert [n["exit_code"] for n in result["nodes"]] == [0, 0]
    assert launches(sim, POD, prime_ssh_key) == [2, 2]


def test_a_deferred_job_is_followed_by_the_trigger_and_ends_with_the_xcom(
    sim: PrimeSimulator, logs: list[dict[str, Any]]
) -> None:
    operator = job(command=f'for i in 1 2 3; do echo "step $i"; done; {RESULT}', deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context())
    trigger = deferred.value.trigger
    assert isinstance(trigger, PrimeJobTrigger)
    _, kwargs = trigger.serialize()
    revived = PrimeJobTrigger(**{**kwargs, "not_before": None})  # as the triggerer rebuilds it
    event = asyncio.run(first_event(revived))
    result = operator.execute_complete(context(), event)
    assert result["result"] == {"loss": 0.25}
    lines = text(logs)
    for rank in (0, 1):
        assert [line for line in lines if line.startswith(f"[node {rank}] step")] == [
            f"[node {rank}] step {i}" for i in (1, 2, 3)
        ]


async def first_event(trigger: PrimeJobTrigger) -> Any:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("no event")


def test_a_pod_deleted_under_a_running_job_fails_it_with_the_pods_state(
    sim: PrimeSimulator, logs: list[dict[str, Any]]
) -> None:
    running = Running(lambda: job(command="echo started; sleep 1000").execute(context()))
    wait_until(
        lambda: {"[node 0] started", "[node 1] started"} <= set(text(logs)), "the job runs on both nodes"
    )
    PrimeHook().delete_pod(POD)
    running.join()
    assert isinstance(running.error, PrimePodFailedError), running.error
    assert POD in str(running.error)


def test_the_timeout_kills_the_job_and_fails_the_task(sim: PrimeSimulator) -> None:
    with pytest.raises(AirflowTaskTimeout, match="still running on: node 0"):
        job(command="sleep 1000", timeout=1.5).execute(context())
    assert alive(sim) == 0


def test_on_kill_kills_the_job_on_every_node(
    sim: PrimeSimulator, logs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kill path, not its 4 s budget, is under test: a loaded CI machine may need longer to dial.
    monkeypatch.setattr(job_module, "ON_KILL_BUDGET", 30.0)
    operator = job(command="echo started; sleep 1000")
    running = Running(lambda: operator.execute(context()))
    wait_until(
        lambda: {"[node 0] started", "[node 1] started"} <= set(text(logs)), "the job runs on both nodes"
    )
    operator.on_kill()  # what SIGTERM or execution_timeout calls in the worker
    # The job is dead when on_kill returns; the task's own poll of that moment (a short script per
    # node, not the job) may still be ending: seen on a loaded machine, gone within 250 ms.
    assert "Killed the job's processes on node(s) 0, 1 (the task was killed)" in text(logs)
    wait_until(lambda: alive(sim) == 0, "nothing alive on the nodes once on_kill returned")
    running.join()
    assert isinstance(running.error, PrimeJobFailedError)
    assert "killed" in str(running.error)


def test_a_flood_of_output_is_capped_and_the_skipped_lines_are_counted(
    sim: PrimeSimulator, logs: list[dict[str, Any]]
) -> None:
    job(command="seq 1 200000", max_lines=50, poll_interval=1.0).execute(context())
    lines = [line for line in text(logs) if line.startswith("[node 0]")]
    assert len(lines) < 2000
    assert any("skipped" in line and "the whole log is at" in line for line in lines)
    assert lines[-1] == "[node 0] 200000"


def test_an_env_naming_a_job_variable_is_refused_before_anything_runs(
    sim: PrimeSimulator, prime_ssh_key: SshKeyPair
) -> None:
    with pytest.raises(PrimeConfigError, match="MASTER_ADDR"):
        job(command="true", env={"MASTER_ADDR": "10.0.0.1"}).execute(context())
    assert all(probe.absent for probe in probes(sim, POD, prime_ssh_key))


def test_a_pod_that_is_not_ready_is_refused_naming_it(sim: PrimeSimulator) -> None:
    with pytest.raises(PrimeConfigError, match="pod-booting"):
        job(command="true", pod_ids=["pod-booting"]).execute(context())


def test_exactly_one_of_pods_and_pod_ids() -> None:
    with pytest.raises(PrimeConfigError, match="exactly one"):
        PrimeRunJobOperator(task_id="t", command="true")
    with pytest.raises(PrimeConfigError, match="exactly one"):
        PrimeRunJobOperator(task_id="t", command="true", pods={}, pod_ids=["p"])


def test_airflow_failing_the_deferred_task_itself_kills_the_job(sim: PrimeSimulator) -> None:
    operator = job(command="echo started; sleep 1000", deferrable=True)
    with pytest.raises(TaskDeferred):
        operator.execute(context())
    wait_until(lambda: alive(sim) >= 2, "the job runs")
    resumed = job(command="echo started; sleep 1000", deferrable=True)  # a new worker process
    with pytest.raises(Exception, match="Trigger"):
        resumed.resume_execution("__fail__", {"error": "Trigger timeout"}, context())  # type: ignore[arg-type]
    assert alive(sim) == 0


def test_a_mapped_creates_list_of_handovers_gives_ranks_in_order(
    sim: PrimeSimulator, prime_simulator_factory: Any
) -> None:
    from airflow_provider_prime.job_nodes import handover_of

    statuses = {s.pod_id: s for s in PrimeHook().get_pods_status([POD])}
    handover = handover_of([POD], statuses)
    result = job(pod_ids=None, pods=[handover], command='echo "rank $NODE_RANK"').execute(context())
    assert [n["rank"] for n in result["nodes"]] == [0, 1]


def test_without_asyncssh_the_operator_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_asyncssh(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "asyncssh" or name.startswith("asyncssh."):
            raise ImportError("No module named 'asyncssh'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_asyncssh)
    with pytest.raises(PrimeConfigError, match=r"airflow-provider-prime\[ssh\]"):
        job(command="true")


def test_a_trigger_that_could_not_follow_the_job_has_it_killed_by_the_resumed_task(
    sim: PrimeSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    operator = job(command="echo started; sleep 1000", deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context())
    _, kwargs = deferred.value.trigger.serialize()
    wait_until(lambda: alive(sim) >= 2, "the job runs")
    # The triggerer has no such SSH connection: the trigger fails before following anything.
    event = asyncio.run(
        first_event(PrimeJobTrigger(**{**kwargs, "ssh_conn_id": "nowhere", "not_before": None}))
    )
    assert event["status"] == "failed"
    assert "nowhere" in event["message"]
    with pytest.raises(PrimeConfigError, match="nowhere"):
        job(command="echo started; sleep 1000", deferrable=True).execute_complete(context(), event)
    assert alive(sim) == 0
