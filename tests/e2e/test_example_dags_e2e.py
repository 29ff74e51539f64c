"""The example DAGs on real Airflow processes, against the simulator over HTTP.

What only a real Airflow proves: the sensor defers; the triggerer process picks the trigger up
from the metadata database and polls the API while no worker runs the task; the trigger's event
resumes the sensor and its XCom reaches the training task; a pod that fails fails the sensor with
the platform's reason; and a triggerer that dies mid-wait is replaced without losing the wait.

Pods are added "booting" (far from ready) and made ready or broken by the test once it has seen
the sensor deferred, so every run takes the deferred path whatever the machine's speed.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from airflow_provider_prime.testing.process import PrimeSimulatorProcess
from scripts.airflow_api import AirflowApiError, RunWatcher
from scripts.airflow_stack import AirflowStack, wait_until
from tests.e2e.conftest import DAG_IDS, SENSOR_OVERRIDES
from tests.e2e.pods import INSTALLATION_FAILURE, add_booting_pods, as_list, make_ready, timestamp
from tests.e2e.task_end import assert_ended_in_triggerer

pytestmark = pytest.mark.e2e

WAIT_AND_TRAIN = "example_prime_wait_and_train"
SENSOR = "wait_for_pods"
TRIGGER_CLASS = "airflow_provider_prime.triggers.pod_status.PodStatusTrigger"
#: Generous bound for one step of a run: two cores are shared with everything else.
STEP_TIMEOUT = 120.0


def status_requests_for(simulator: PrimeSimulatorProcess, pod_id: str) -> int:
    return int(simulator.stats_snapshot()["by_pod_id"].get(pod_id, 0))


def triggerer_of(watcher: RunWatcher) -> int | None:
    """The id of the triggerer job running the sensor's trigger, as the api-server reports it."""
    trigger = watcher.task_instances.get(SENSOR, {}).get("trigger") or {}
    triggerer_id = trigger.get("triggerer_id")
    return int(triggerer_id) if triggerer_id is not None else None


def wait_deferred(stack: AirflowStack, watcher: RunWatcher) -> dict[str, Any]:
    """Wait until the sensor is DEFERRED, a triggerer has its trigger and the scheduler has seen
    the deferring worker process end (so the trigger may fire without racing it); the task instance."""
    watcher.wait(
        lambda w: (
            w.states(SENSOR)[-1:] == ["deferred"]
            and triggerer_of(w) is not None
            and stack.deferral_processed(w.dag_id, w.run_id, SENSOR)
        ),
        timeout=STEP_TIMEOUT,
        what="the sensor deferred to a triggerer",
    )
    return watcher.ti(SENSOR)


def assert_polled_while_deferred(watcher: RunWatcher, simulator: PrimeSimulatorProcess, pod_id: str) -> None:
    """A status request for ``pod_id`` arrives while the sensor stays deferred: the trigger's own,
    since no worker runs a deferred task."""
    before = status_requests_for(simulator, pod_id)
    states_before = list(watcher.states(SENSOR))
    wait_until(lambda: status_requests_for(simulator, pod_id) > before, 60, f"a status request for {pod_id}")
    watcher.poll()
    assert watcher.states(SENSOR) == states_before == [*states_before[:-1], "deferred"]


def assert_trigger_fired_in(stack: AirflowStack, watcher: RunWatcher, triggerer_id: int | None) -> None:
    """The trigger ran, and fired, in that triggerer job: the log file it wrote carries the job's id.

    (Our trigger's own last line before the event is not always in the file on Airflow 3.1, so the
    check is its progress line plus Airflow's "Trigger fired event".)
    """
    logs = stack.task_log_files(watcher.dag_id, watcher.run_id, SENSOR)
    trigger_log = logs[f"attempt=1.log.trigger.{triggerer_id}.log"]
    assert "Waiting for pods" in trigger_log
    assert "Trigger fired event" in trigger_log


def live_triggerers(stack: AirflowStack) -> set[int]:
    return {int(job["id"]) for job in stack.api.jobs("TriggererJob", alive=True)}


def test_sensor_defers_to_the_triggerer_and_hands_ssh_targets_to_training(
    airflow_stack: AirflowStack, e2e_simulator: PrimeSimulatorProcess, pod_prefix: str
) -> None:
    single, cluster = f"{pod_prefix}-single", f"{pod_prefix}-cluster"
    add_booting_pods(e2e_simulator, {single: 1, cluster: 2})

    watcher = airflow_stack.trigger(WAIT_AND_TRAIN, {"pod_ids": [single, cluster]})
    sensor = wait_deferred(airflow_stack, watcher)
    assert sensor["trigger"]["classpath"] == TRIGGER_CLASS
    triggerer = sensor["trigger"]["triggerer_id"]
    assert triggerer in live_triggerers(airflow_stack)
    assert_polled_while_deferred(watcher, e2e_simulator, single)

    make_ready(e2e_simulator, single, 1)
    make_ready(e2e_simulator, cluster, 2)
    watcher.wait(timeout=STEP_TIMEOUT)

    assert watcher.state == "success", watcher.history
    assert "deferred" in watcher.states(SENSOR)
    assert watcher.states(SENSOR)[-1] == watcher.states("train")[-1] == "success"
    # The trigger ran in that triggerer: its log file carries the triggerer job's id.
    assert_trigger_fired_in(airflow_stack, watcher, triggerer)
    # ...and ended the task there: no worker process resumed the sensor.
    assert_ended_in_triggerer(airflow_stack, WAIT_AND_TRAIN, watcher.run_id, SENSOR)

    reported = {pod["podId"]: pod for pod in e2e_simulator.pods()}
    handover = airflow_stack.api.xcom(WAIT_AND_TRAIN, watcher.run_id, SENSOR)
    assert set(handover) == {single, cluster}
    for pod_id, nodes in ((single, 1), (cluster, 2)):
        targets = handover[pod_id]["ssh_connections"]
        assert targets == as_list(reported[pod_id]["sshConnection"])
        assert len(targets) == nodes
        assert all(targets)
        assert handover[pod_id]["status"] == "ACTIVE"
        assert handover[pod_id]["installation_status"] == "FINISHED"

    commands = airflow_stack.api.xcom(WAIT_AND_TRAIN, watcher.run_id, "train")
    for pod_id in (single, cluster):
        targets = handover[pod_id]["ssh_connections"]
        assert len(commands[pod_id]) == len(targets)
        for rank, (command, target) in enumerate(zip(commands[pod_id], targets, strict=True)):
            assert command.startswith(f"ssh {target} ")
            assert f"--nnodes={len(targets)} --node-rank={rank} " in command


def test_failed_installation_fails_the_sensor_with_the_platform_reason(
    airflow_stack: AirflowStack, e2e_simulator: PrimeSimulatorProcess, pod_prefix: str
) -> None:
    healthy, broken = f"{pod_prefix}-healthy", f"{pod_prefix}-broken"
    add_booting_pods(e2e_simulator, {healthy: 1, broken: 1})

    watcher = airflow_stack.trigger(WAIT_AND_TRAIN, {"pod_ids": [healthy, broken]})
    wait_deferred(airflow_stack, watcher)
    make_ready(e2e_simulator, healthy, 1)
    e2e_simulator.set_pod_state(
        broken, "ACTIVE", installation_status="ERROR", installation_failure=INSTALLATION_FAILURE
    )
    watcher.wait(timeout=STEP_TIMEOUT)

    assert watcher.state == "failed"
    assert "deferred" in watcher.states(SENSOR)
    assert watcher.states(SENSOR)[-1] == "failed"
    assert watcher.states("train")[-1] == "upstream_failed"
    log = airflow_stack.api.task_log(WAIT_AND_TRAIN, watcher.run_id, SENSOR)
    assert INSTALLATION_FAILURE in log
    assert broken in log
    # ...and deleted nothing (the sensor does not own pods): both pods are still there.
    assert {healthy, broken} <= {pod["podId"] for pod in e2e_simulator.pods()}


def test_restarted_triggerer_resumes_the_wait_before_the_original_deadline(
    airflow_stack: AirflowStack, e2e_simulator: PrimeSimulatorProcess, pod_prefix: str
) -> None:
    pod = f"{pod_prefix}-single"
    add_booting_pods(e2e_simulator, {pod: 1})

    watcher = airflow_stack.trigger(WAIT_AND_TRAIN, {"pod_ids": [pod]})
    first = wait_deferred(airflow_stack, watcher)["trigger"]["triggerer_id"]
    assert_polled_while_deferred(watcher, e2e_simulator, pod)  # the first triggerer is at work
    airflow_stack.kill("triggerer")  # SIGKILL to its process group: a crash, no clean hand-over
    airflow_stack.start(["triggerer"])
    # The new triggerer adopts the trigger once the dead one's heartbeat has gone stale.
    watcher.wait(
        lambda w: triggerer_of(w) not in (None, first),
        timeout=STEP_TIMEOUT,
        what="another triggerer taking the trigger over",
    )
    second = triggerer_of(watcher)
    assert second in live_triggerers(airflow_stack)
    assert first not in live_triggerers(airflow_stack)
    assert_polled_while_deferred(watcher, e2e_simulator, pod)

    make_ready(e2e_simulator, pod, 1)
    watcher.wait(timeout=STEP_TIMEOUT)

    assert watcher.state == "success", watcher.history
    sensor = watcher.ti(SENSOR)
    assert sensor["try_number"] == 1  # the same attempt went on: nothing was retried
    run = airflow_stack.api.dag_run(WAIT_AND_TRAIN, watcher.run_id)
    deadline = timestamp(run["start_date"]) + timedelta(seconds=SENSOR_OVERRIDES["timeout"])
    assert timestamp(sensor["end_date"]) < deadline
    assert_trigger_fired_in(airflow_stack, watcher, second)
    assert watcher.states("train")[-1] == "success"


def test_the_api_key_never_leaves_the_connection(
    airflow_stack: AirflowStack, e2e_simulator: PrimeSimulatorProcess
) -> None:
    """After the runs above: no log file, task instance (trigger kwargs included) or XCom has the key."""
    key = e2e_simulator.api_key
    logs = list(airflow_stack.log_dir.rglob("*.log"))
    assert any("trigger" in path.name for path in logs)  # the runs above left their logs
    for path in logs:
        assert key not in path.read_text(errors="replace"), path
    for dag_id in DAG_IDS:
        for run in airflow_stack.api.request("GET", f"/dags/{dag_id}/dagRuns")["dag_runs"]:
            tis = airflow_stack.api.task_instances(dag_id, run["dag_run_id"])
            assert key not in json.dumps(tis)
            for task_id in tis:
                try:
                    xcom = airflow_stack.api.xcom(dag_id, run["dag_run_id"], task_id)
                except AirflowApiError as error:
                    if error.status_code != 404:  # 404: the task returned nothing
                        raise
                    continue
                assert key not in json.dumps(xcom)
