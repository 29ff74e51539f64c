"""The pod lifecycle on real Airflow processes: create, wait, train, terminate, and never left billing.

Every test ends with the simulator's count of pods still billing at zero for the pods it made.
Created pods boot "forever" in the simulator (see ``tests/e2e/conftest.py``) until the test makes
them ready or breaks them, once it has seen the wait where it wants it (deferred, or in a worker).
The lifecycle example's ``train`` runs ``training/train_regression.py`` on every node of the pod
over SSH (the simulator's nodes run it as local processes): the tests that rent its two-node
offer check the job's lines, its result, and that no process is left on the nodes.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from airflow_provider_prime.testing.process import PrimeSimulatorProcess
from scripts.airflow_api import RunWatcher
from scripts.airflow_stack import AirflowStack, wait_until
from tests.e2e.conftest import CRASHED_TASKS_RETRY, ON_KILL_AIRFLOW
from tests.e2e.runs import (
    CREATE,
    STEP_TIMEOUT,
    assert_none_billing,
    billing,
    clear_failed_run,
    kill_task_process,
    last_try_log,
    pod_id_of,
    run_log,
    wait_deferred,
    wait_state,
)
from tests.e2e.task_end import assert_ended_in_triggerer

pytestmark = pytest.mark.e2e

LIFECYCLE = "example_prime_pod_lifecycle"
TRAIN, TERMINATE = "train", "terminate_pod"
#: The lifecycle run's params for the simulator's two-node offer (``sim-h100-80gb-16x-cluster``).
CLUSTER = {"gpu_count": 16, "multi_node": True}
#: The training script's steps (the DAG's ``TRAIN_STEPS``).
STEPS = 30
INSTALLATION_FAILURE = "pip could not build flash-attn: CUDA toolkit not found (e2e)"


# -- the simulator's side -----------------------------------------------------------------------


def name_of(simulator: PrimeSimulatorProcess, pod_id: str) -> str:
    return str(simulator.billing()["pods"][pod_id]["name"])


def creates_of(simulator: PrimeSimulatorProcess, name: str) -> int:
    """How many ``POST /pods/`` made a pod of that name."""
    return int(simulator.billing()["created"].get(name, 0))


def make_ready(simulator: PrimeSimulatorProcess, pod_id: str, nodes: int = 1) -> None:
    simulator.set_pod_state(
        pod_id,
        "ACTIVE",
        installation_status="FINISHED",
        installation_progress=100,
        ssh_nodes=nodes,
        ip_nodes=nodes,
    )


def processes_alive(simulator: PrimeSimulatorProcess, pod_id: str) -> int:
    """Processes still running on the pod's simulated nodes (its SSH nodes' own count)."""
    stats = simulator.node_stats()
    assert stats is not None, "the e2e simulator has SSH nodes"
    return sum(node["processes_alive"] for node in stats["pods"].get(pod_id, []))


# -- Airflow's side ----------------------------------------------------------------------------


def deferred_lifecycle(stack: AirflowStack, conf: dict[str, Any] | None = None) -> tuple[RunWatcher, str]:
    """A run of the example lifecycle DAG whose create is deferred; the watcher and the pod id."""
    watcher = stack.trigger(LIFECYCLE, conf)
    wait_deferred(stack, watcher)
    return watcher, pod_id_of(stack, watcher)


def task_error(stack: AirflowStack, watcher: RunWatcher, task_id: str, try_number: int = 1) -> str:
    """The exception the task failed with, as its log records it."""
    entries = stack.api.task_log_entries(watcher.dag_id, watcher.run_id, task_id, try_number)
    errors = [
        str(detail["exc_value"])
        for entry in entries
        if isinstance(entry, dict)
        for detail in entry.get("error_detail") or []
    ]
    assert errors, f"no error in the log of {task_id}"
    return errors[-1]


def log_events(stack: AirflowStack, watcher: RunWatcher, task_id: str, try_number: int = 1) -> list[str]:
    """The task log's lines as logged (worker and triggerer parts merged by the api-server)."""
    entries = stack.api.task_log_entries(watcher.dag_id, watcher.run_id, task_id, try_number)
    return [str(e.get("event", "")) if isinstance(e, dict) else str(e) for e in entries]


# -- the tests ---------------------------------------------------------------------------------


def test_happy_path_creates_once_waits_deferred_trains_on_both_nodes_and_terminates(
    airflow_stack: AirflowStack, e2e_simulator: PrimeSimulatorProcess
) -> None:
    watcher, pod_id = deferred_lifecycle(airflow_stack, CLUSTER)
    name = name_of(e2e_simulator, pod_id)
    assert billing(e2e_simulator, [pod_id]) == [pod_id]  # billing while it boots

    make_ready(e2e_simulator, pod_id, nodes=2)
    watcher.wait(timeout=STEP_TIMEOUT)

    assert watcher.state == "success", (watcher.history, last_try_log(airflow_stack, watcher, TRAIN))
    assert "deferred" in watcher.states(CREATE)
    assert "deferred" in watcher.states(TRAIN)
    assert watcher.states(TRAIN)[-1] == watcher.states(TERMINATE)[-1] == "success"
    assert_ended_in_triggerer(airflow_stack, LIFECYCLE, watcher.run_id, CREATE)  # no worker resumed it
    handover = airflow_stack.api.xcom(LIFECYCLE, watcher.run_id, CREATE)
    assert set(handover) == {pod_id}
    assert handover[pod_id]["price_hr"] > 0
    assert len(handover[pod_id]["ssh_connections"]) == 2
    job = airflow_stack.api.xcom(LIFECYCLE, watcher.run_id, TRAIN)
    assert [(node["rank"], node["exit_code"]) for node in job["nodes"]] == [(0, 0), (1, 0)]
    assert job["result"]["nodes"] == 2
    assert job["result"]["steps"] == STEPS
    assert job["result"]["final_loss"] < 0.01
    events = log_events(airflow_stack, watcher, TRAIN)
    for rank in (0, 1):  # every step of both ranks reached the task log, each exactly once
        for step in range(1, STEPS + 1):
            prefix = f"[node {rank}] step {step}/{STEPS} loss "
            assert sum(event.startswith(prefix) for event in events) == 1, (prefix, events)
    assert any(event.startswith("[node 1] joined rank 0 at MASTER_ADDR:MASTER_PORT") for event in events)
    report = airflow_stack.api.xcom(LIFECYCLE, watcher.run_id, TERMINATE)
    assert report[pod_id]["status"] in ("TERMINATED", "GONE")
    assert report[pod_id]["cost"] is not None
    assert f"Pod {pod_id}" in run_log(airflow_stack, watcher, TERMINATE)
    assert creates_of(e2e_simulator, name) == 1
    assert_none_billing(e2e_simulator, [pod_id])
    assert processes_alive(e2e_simulator, pod_id) == 0


def test_failed_training_still_terminates_through_the_teardown(
    airflow_stack: AirflowStack, e2e_simulator: PrimeSimulatorProcess
) -> None:
    """Rank 1 fails at step 3: the task fails naming it, rank 0 stops, and the teardown deletes the pod."""
    watcher, pod_id = deferred_lifecycle(airflow_stack, {**CLUSTER, "fail_training": True})
    make_ready(e2e_simulator, pod_id, nodes=2)
    watcher.wait(timeout=STEP_TIMEOUT)

    assert watcher.state == "failed"
    assert watcher.states(CREATE)[-1] == "success"
    assert watcher.states(TRAIN)[-1] == "failed"
    assert watcher.states(TERMINATE)[-1] == "success"
    events = log_events(airflow_stack, watcher, TRAIN)
    assert "[node 1] rank 1: failing at step 3, as TRAIN_FAIL_RANK asks" in events  # as it came
    assert not any(e.startswith(f"[node 0] step {STEPS}/") for e in events)  # rank 0 stopped too
    failure = task_error(airflow_stack, watcher, TRAIN)
    # Rank 0 exits too ("lost rank 1") milliseconds later. The rank whose runner recorded its end
    # first is named: rank 1, unless a loaded machine woke rank 1's runner after rank 0's (a known
    # limit, docs/training.md); either way the message says what happened to rank 1.
    if f"failed on node 1 ({pod_id} node 2" in failure:
        assert "exited with code 3" in failure
        assert "rank 1: failing at step 3" in failure  # its last lines, quoted
    else:
        assert f"failed on node 0 ({pod_id} node 1" in failure, failure
        assert "lost rank 1" in failure
    assert_none_billing(e2e_simulator, [pod_id])
    assert processes_alive(e2e_simulator, pod_id) == 0


def test_failed_installation_fails_the_create_with_the_reason_and_deletes_the_pod(
    airflow_stack: AirflowStack, e2e_simulator: PrimeSimulatorProcess
) -> None:
    watcher, pod_id = deferred_lifecycle(airflow_stack)
    e2e_simulator.set_pod_state(
        pod_id, "ACTIVE", installation_status="ERROR", installation_failure=INSTALLATION_FAILURE
    )
    watcher.wait(timeout=STEP_TIMEOUT)

    assert watcher.state == "failed"
    assert watcher.states(CREATE)[-1] == "failed"
    assert watcher.states(TERMINATE)[-1] == "upstream_failed"  # a teardown skips a failed setup...
    log = run_log(airflow_stack, watcher, CREATE)
    assert INSTALLATION_FAILURE in log
    assert f"Deleting pod {pod_id}" in log
    assert_none_billing(e2e_simulator, [pod_id])  # ...so the create deleted its own pod


def test_a_worker_killed_mid_wait_is_retried_and_the_retry_adopts_the_pod(
    airflow_stack: AirflowStack, e2e_simulator: PrimeSimulatorProcess
) -> None:
    """3.3 retries a task whose process died; 3.1 fails it at once, and clearing it is the retry."""
    watcher = airflow_stack.trigger("e2e_prime_worker_wait")
    wait_state(watcher, CREATE, "running")
    pod_id = pod_id_of(airflow_stack, watcher)
    name = name_of(e2e_simulator, pod_id)
    kill_task_process(watcher, CREATE)
    if not CRASHED_TASKS_RETRY:
        # The clear comes once the run has failed, as a user's would: cleared while the scheduler is
        # still failing the downstream tasks, "train" can be marked upstream_failed after the clear.
        watcher.wait(timeout=STEP_TIMEOUT)
        assert watcher.state == "failed"
        assert watcher.states(CREATE)[-1] == "failed"
        assert watcher.states(TERMINATE)[-1] == "upstream_failed"  # a teardown skips a failed setup
        assert billing(e2e_simulator, [pod_id]) == [pod_id]  # no code of the task ran to delete it
        clear_failed_run(airflow_stack, watcher, CREATE, include_downstream=True)
    watcher.wait(
        lambda w: w.ti(CREATE)["try_number"] == 2 and w.states(CREATE)[-1] == "running",
        timeout=STEP_TIMEOUT,
        what="the second try running",
    )
    assert f"Adopting pod {pod_id} named " in wait_for_log(airflow_stack, watcher, CREATE, 2, "Adopting")
    make_ready(e2e_simulator, pod_id)
    watcher.wait(timeout=STEP_TIMEOUT)

    assert watcher.state == "success", (watcher.history, last_try_log(airflow_stack, watcher, CREATE))
    assert ("up_for_retry" if CRASHED_TASKS_RETRY else "failed") in watcher.states(CREATE)
    assert creates_of(e2e_simulator, name) == 1
    assert_none_billing(e2e_simulator, [pod_id])


def test_marking_the_deferred_create_failed(
    airflow_stack: AirflowStack, e2e_simulator: PrimeSimulatorProcess
) -> None:
    """3.3: the trigger's on_kill deletes the pod. 3.1/3.2: nothing of the task runs; the reaper does it."""
    watcher, pod_id = deferred_lifecycle(airflow_stack)
    airflow_stack.api.request(
        "PATCH",
        f"/dags/{LIFECYCLE}/dagRuns/{watcher.run_id}/taskInstances/{CREATE}",
        json={"new_state": "failed"},
    )
    watcher.wait(timeout=STEP_TIMEOUT)
    assert watcher.state == "failed"
    if ON_KILL_AIRFLOW:
        assert_none_billing(e2e_simulator, [pod_id])  # within [triggerer] on_kill_timeout (30 s)
        return
    time.sleep(5)
    assert billing(e2e_simulator, [pod_id]) == [pod_id]  # what the docs promise: kept until...
    reaper = airflow_stack.trigger("e2e_prime_reaper").wait(timeout=STEP_TIMEOUT)
    assert reaper.state == "success"
    assert pod_id in airflow_stack.api.xcom("e2e_prime_reaper", reaper.run_id, "reap")["deleted"]
    assert_none_billing(e2e_simulator, [pod_id])  # ...the reaper deletes it


def test_a_deferral_timeout_deletes_the_pod(
    airflow_stack: AirflowStack, e2e_simulator: PrimeSimulatorProcess
) -> None:
    watcher = airflow_stack.trigger("e2e_prime_short_deferral")
    pod_id = pod_id_of(airflow_stack, watcher)
    watcher.wait(timeout=STEP_TIMEOUT)

    assert watcher.state == "failed"
    assert "deferred" in watcher.states(CREATE)
    assert watcher.states(CREATE)[-1] == "failed"
    assert "not ready by the deadline" in run_log(airflow_stack, watcher, CREATE)
    assert_none_billing(e2e_simulator, [pod_id])


def test_a_restarted_triggerer_keeps_the_pod_and_the_wait_succeeds(
    airflow_stack: AirflowStack, e2e_simulator: PrimeSimulatorProcess
) -> None:
    watcher, pod_id = deferred_lifecycle(airflow_stack)
    first = watcher.ti(CREATE)["trigger"]["triggerer_id"]
    airflow_stack.components.pop("triggerer").stop(grace=15)  # SIGTERM: a clean restart cancels its triggers
    airflow_stack.start(["triggerer"])
    watcher.wait(
        lambda w: (w.ti(CREATE).get("trigger") or {}).get("triggerer_id") not in (None, first),
        timeout=STEP_TIMEOUT,
        what="the new triggerer taking the trigger over",
    )
    assert billing(e2e_simulator, [pod_id]) == [pod_id]  # not deleted by the restart
    make_ready(e2e_simulator, pod_id)
    watcher.wait(timeout=STEP_TIMEOUT)

    assert watcher.state == "success", watcher.history
    assert watcher.ti(CREATE)["try_number"] == 1
    assert_none_billing(e2e_simulator, [pod_id])


def test_a_mapped_create_with_one_broken_pod_trains_two_and_deletes_all_three(
    airflow_stack: AirflowStack, e2e_simulator: PrimeSimulatorProcess
) -> None:
    dag_id = "e2e_prime_mapped"
    watcher = airflow_stack.trigger(dag_id)
    create, train, terminate = "branch.create_pod", "branch.train", "branch.terminate_pod"
    pod_ids = [pod_id_of(airflow_stack, watcher, create, index) for index in range(3)]
    assert len(set(pod_ids)) == 3
    for index in range(3):  # only then may the triggers fire (see AirflowStack.deferral_processed)
        wait_deferred(airflow_stack, watcher, create, index)
    e2e_simulator.set_pod_state(pod_ids[1], "ERROR")
    for pod_id in (pod_ids[0], pod_ids[2]):
        make_ready(e2e_simulator, pod_id)
    watcher.wait(timeout=STEP_TIMEOUT)

    assert watcher.state == "failed"
    states = mapped_states(airflow_stack, watcher, train)
    assert states == {0: "success", 1: "upstream_failed", 2: "success"}
    assert mapped_states(airflow_stack, watcher, create)[1] == "failed"
    for index in (0, 2):  # the ready ones ended in the triggerer; the broken one resumed a worker
        assert_ended_in_triggerer(airflow_stack, dag_id, watcher.run_id, create, index)
    assert mapped_states(airflow_stack, watcher, terminate) == {
        0: "success",
        1: "upstream_failed",
        2: "success",
    }
    assert_none_billing(e2e_simulator, pod_ids)


def test_the_reaper_deletes_the_pod_of_a_task_killed_hard_and_spares_a_live_wait(
    airflow_stack: AirflowStack, e2e_simulator: PrimeSimulatorProcess
) -> None:
    live, live_pod = deferred_lifecycle(airflow_stack)
    doomed = airflow_stack.trigger("e2e_prime_no_retry")
    wait_state(doomed, CREATE, "running")
    orphan = pod_id_of(airflow_stack, doomed)
    kill_task_process(doomed, CREATE)
    doomed.wait(timeout=STEP_TIMEOUT)
    assert doomed.state == "failed"
    assert billing(e2e_simulator, [orphan]) == [orphan]  # nothing of the task ran to delete it

    reaper = airflow_stack.trigger("e2e_prime_reaper").wait(timeout=STEP_TIMEOUT)

    assert reaper.state == "success"
    report = airflow_stack.api.xcom("e2e_prime_reaper", reaper.run_id, "reap")
    assert orphan in report["deleted"]
    assert live_pod in report["spared"]
    assert_none_billing(e2e_simulator, [orphan])
    assert billing(e2e_simulator, [live_pod]) == [live_pod]
    make_ready(e2e_simulator, live_pod)
    live.wait(timeout=STEP_TIMEOUT)
    assert live.state == "success"
    assert_none_billing(e2e_simulator, [live_pod])


# -- helpers that reach into processes ---------------------------------------------------------


def wait_for_log(stack: AirflowStack, watcher: RunWatcher, task_id: str, try_number: int, text: str) -> str:
    def log_with_text() -> str | None:
        log = run_log(stack, watcher, task_id, try_number)
        return log if text in log else None

    found: str = wait_until(log_with_text, STEP_TIMEOUT, f"{text!r} in the log of {task_id} try {try_number}")
    return found


def mapped_states(stack: AirflowStack, watcher: RunWatcher, task_id: str) -> dict[int, str]:
    path = f"/dags/{watcher.dag_id}/dagRuns/{watcher.run_id}/taskInstances/{task_id}/listMapped"
    body = stack.api.request("GET", path)
    return {int(ti["map_index"]): ti["state"] for ti in body["task_instances"]}
