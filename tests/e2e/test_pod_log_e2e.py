"""The pod's log on real Airflow processes: a failed install's failure and task log quote its tail.

The lifecycle example's create waits deferred; the simulator then fails the pod's installation.
The trigger fails the wait; the task resumes in a worker, which reads the tail of the pod's log
(``GET /pods/{id}/log``; never the triggerer, whose event Airflow stores) before deleting the pod,
and the failure the task raises, as the task log records it, carries it; the API key is in
neither. The pod is deleted by the create itself, so nothing bills.
"""

from __future__ import annotations

import pytest

from airflow_provider_prime.testing.process import PrimeSimulatorProcess
from scripts.airflow_stack import AirflowStack
from tests.e2e.runs import CREATE, STEP_TIMEOUT, assert_none_billing, pod_id_of, run_log, wait_deferred

pytestmark = pytest.mark.e2e

LIFECYCLE = "example_prime_pod_lifecycle"
INSTALLATION_FAILURE = "pip could not build flash-attn: CUDA toolkit not found (e2e, pod log)"


def test_a_failed_install_quotes_the_pods_log_tail_in_the_failure_and_the_task_log(
    airflow_stack: AirflowStack, e2e_simulator: PrimeSimulatorProcess
) -> None:
    watcher = airflow_stack.trigger(LIFECYCLE)
    wait_deferred(airflow_stack, watcher)
    pod_id = pod_id_of(airflow_stack, watcher)
    e2e_simulator.set_pod_state(
        pod_id, "ACTIVE", installation_status="ERROR", installation_failure=INSTALLATION_FAILURE
    )
    watcher.wait(timeout=STEP_TIMEOUT)

    assert watcher.state == "failed"
    assert watcher.states(CREATE)[-1] == "failed"
    entries = airflow_stack.api.task_log_entries(watcher.dag_id, watcher.run_id, CREATE, 1)
    errors = [
        str(detail["exc_value"])
        for entry in entries
        if isinstance(entry, dict)
        for detail in entry.get("error_detail") or []
    ]
    assert errors, f"no error in the log of {CREATE}"
    failure = errors[-1]
    assert f"installation ERROR: {INSTALLATION_FAILURE}" in failure
    assert f"of pod {pod_id}'s log:\n" in failure, failure
    assert f"  | [+    0.0s] ERROR: {INSTALLATION_FAILURE}" in failure, failure
    log = run_log(airflow_stack, watcher, CREATE)
    assert f"of pod {pod_id}'s log:" in log  # the task log has it too
    assert e2e_simulator.api_key not in log
    assert_none_billing(e2e_simulator, [pod_id])
