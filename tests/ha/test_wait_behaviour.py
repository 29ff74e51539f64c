"""The sensor's behaviours on the production stack, run both ways a wait can start.

``worker``: the classic deferral (a first poke on a worker, then the triggerer). ``triggerer``:
``start_from_trigger=True``, the wait starting in the triggerer with its templated ``pod_ids``
rendered there; where Airflow or the sensor cannot do that, it falls back to the worker, and the
same assertions hold. Readiness, fail-fast, timeout, the XCom's shape and soft_fail must not depend
on where the wait started.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_prime.sensors.pod_status import PodStatusSensor
from airflow_provider_prime.testing.process import PrimeSimulatorProcess
from scripts.airflow_api import RunWatcher
from scripts.airflow_stack import AirflowStack
from tests.e2e.pods import INSTALLATION_FAILURE, add_booting_pods, as_list, make_ready
from tests.ha.runs import STEP_TIMEOUT
from tests.ha.wait_options import SENSOR_HAS_START_FROM_TRIGGER, START_MODES

pytestmark = pytest.mark.ha

#: Whether this Airflow and this sensor start waits in the triggerer (else: the worker fallback).
STARTS_IN_TRIGGERER = SENSOR_HAS_START_FROM_TRIGGER and bool(
    PodStatusSensor(task_id="probe", pod_ids="probe", start_from_trigger=True).start_from_trigger
)


def wait_deferred(stack: AirflowStack, watcher: RunWatcher, start: str, task_id: str = "wait") -> None:
    """Wait until the sensor is DEFERRED on a triggerer and, when a worker deferred it, until the
    scheduler has seen that worker end (see ``AirflowStack.deferral_processed``)."""

    def deferred(w: RunWatcher) -> bool:
        trigger = w.task_instances.get(task_id, {}).get("trigger") or {}
        on_triggerer = w.states(task_id)[-1:] == ["deferred"] and trigger.get("triggerer_id") is not None
        if not on_triggerer:
            return False
        return started_in_triggerer(start) or stack.deferral_processed(w.dag_id, w.run_id, task_id)

    watcher.wait(deferred, timeout=STEP_TIMEOUT, what=f"{task_id} deferred to a triggerer")


def started_in_triggerer(start: str) -> bool:
    return start == "triggerer" and STARTS_IN_TRIGGERER


def assert_started_where_expected(stack: AirflowStack, watcher: RunWatcher, start: str) -> None:
    """A wait that starts in the triggerer has no worker log until it resumes; a classic one has."""
    logs = stack.task_log_files(watcher.dag_id, watcher.run_id, "wait")
    assert ("attempt=1.log" in logs) is not started_in_triggerer(start), sorted(logs)


def start_waiting(
    stack: AirflowStack, simulator: PrimeSimulatorProcess, start: str, nodes_by_pod: dict[str, int]
) -> RunWatcher:
    """A run of ``ha_wait_<start>`` for booting pods, once its wait is deferred on a triggerer."""
    add_booting_pods(simulator, nodes_by_pod)
    watcher = stack.trigger(f"ha_wait_{start}", {"pod_ids": list(nodes_by_pod)})
    wait_deferred(stack, watcher, start)
    assert_started_where_expected(stack, watcher, start)
    return watcher


@pytest.mark.parametrize("start", START_MODES)
def test_ready_pods_hand_their_ssh_targets_over(
    ha_stack: AirflowStack, ha_simulator: PrimeSimulatorProcess, pod_prefix: str, start: str
) -> None:
    single, cluster = f"{pod_prefix}-single", f"{pod_prefix}-cluster"
    watcher = start_waiting(ha_stack, ha_simulator, start, {single: 1, cluster: 2})

    make_ready(ha_simulator, single, 1)
    make_ready(ha_simulator, cluster, 2)
    watcher.wait(timeout=STEP_TIMEOUT)

    assert watcher.state == "success", watcher.history
    reported = {pod["podId"]: pod for pod in ha_simulator.pods()}
    handover: dict[str, Any] = ha_stack.api.xcom(watcher.dag_id, watcher.run_id, "wait")
    assert set(handover) == {single, cluster}
    for pod_id, nodes in ((single, 1), (cluster, 2)):
        entry = handover[pod_id]
        assert set(entry) == {"status", "installation_status", "provider_type", "nodes"} | {
            "ssh_connections",
            "ips",
        }
        assert entry["ssh_connections"] == as_list(reported[pod_id]["sshConnection"])
        assert len(entry["ssh_connections"]) == len(entry["ips"]) == len(entry["nodes"]) == nodes
        assert (entry["status"], entry["installation_status"]) == ("ACTIVE", "FINISHED")


@pytest.mark.parametrize("start", START_MODES)
def test_a_failed_installation_fails_the_wait_at_once_with_the_reason(
    ha_stack: AirflowStack, ha_simulator: PrimeSimulatorProcess, pod_prefix: str, start: str
) -> None:
    healthy, broken = f"{pod_prefix}-healthy", f"{pod_prefix}-broken"
    watcher = start_waiting(ha_stack, ha_simulator, start, {healthy: 1, broken: 1})
    ha_simulator.set_pod_state(
        broken, "ACTIVE", installation_status="ERROR", installation_failure=INSTALLATION_FAILURE
    )
    watcher.wait(timeout=STEP_TIMEOUT)

    assert watcher.state == "failed"
    assert watcher.states("wait")[-1] == "failed"
    assert watcher.ti("wait")["try_number"] == 1  # failed for good, not retried
    log = ha_stack.api.task_log(watcher.dag_id, watcher.run_id, "wait")
    assert INSTALLATION_FAILURE in log
    assert broken in log


@pytest.mark.parametrize("start", START_MODES)
def test_a_timeout_fails_the_wait_and_soft_fail_skips_it(
    ha_stack: AirflowStack, ha_simulator: PrimeSimulatorProcess, pod_prefix: str, start: str
) -> None:
    never = f"{pod_prefix}-never"
    add_booting_pods(ha_simulator, {never: 1})
    watcher = ha_stack.trigger(f"ha_timeout_{start}", {"pod_ids": [never]})
    watcher.wait(timeout=STEP_TIMEOUT)

    assert watcher.states("wait")[-1] == "failed"
    assert watcher.states("wait_soft")[-1] == "skipped"
    assert "deferred" in watcher.states("wait")
    log = ha_stack.api.task_log(watcher.dag_id, watcher.run_id, "wait")
    assert "not ready by the deadline" in log
    assert never in log
