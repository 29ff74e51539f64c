"""A DAG with a deferrable PodStatusSensor run by ``dag.test()`` against the simulator.

``dag.test()`` needs a metadata database, so each run happens in a child process whose
``AIRFLOW_HOME`` is a temporary directory migrated once per session (``dag_runs.py``).
The trigger runs in line, as ``dag.test()`` does it, over real HTTP to the simulator.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_prime.testing import (
    DEFAULT_INSTALLATION_FAILURE,
    STATUS_PATH,
    ManualClock,
    install_failure_pod,
    ready_pod,
)
from tests.sensors.dag_runs import DAGS, REPO, airflow_env
from tests.sensors.dags.pod_wait_dag import RESULT_MARK
from tests.simulated import connection_env

RUN_TIMEOUT = 180


@pytest.fixture
def run_dag(airflow_home: Path) -> Callable[..., tuple[dict[str, Any], str]]:
    """``run(simulator, clock, pod_ids)`` -> (result, combined output) of one ``dag.test()`` run.

    The simulator's pods stand still on a manual clock until the sensor has checked once and the
    trigger has polled once; then their time jumps past every scripted transition. So the sensor
    always defers, and the trigger (not the first check) is what sees the pods become ready or break.
    """

    def run(sim: Any, clock: ManualClock, pod_ids: list[str]) -> tuple[dict[str, Any], str]:
        env = airflow_env(airflow_home) | connection_env(sim.base_url, sim.api_key)
        child = subprocess.Popen(
            [sys.executable, str(DAGS / "pod_wait_dag.py"), *pod_ids],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        released = threading.Event()

        def release() -> None:
            while child.poll() is None and not released.is_set():
                if sim.stats.by_path[STATUS_PATH] >= 2:
                    clock.advance(3600)
                    released.set()
                time.sleep(0.05)

        watcher = threading.Thread(target=release, daemon=True)
        watcher.start()
        try:
            output, _ = child.communicate(timeout=RUN_TIMEOUT)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
            released.set()
            watcher.join()
        lines = [line for line in output.splitlines() if line.startswith(RESULT_MARK)]
        assert lines, output[-5000:]
        return json.loads(lines[-1][len(RESULT_MARK) :]), output

    return run


def test_deferred_sensor_hands_the_pods_to_the_downstream_task(prime_simulator_factory, run_dag):
    clock = ManualClock()
    sim = prime_simulator_factory(
        ready_pod("single", ready_at=60), ready_pod("multi", ready_at=90, nodes=2), clock=clock
    )
    result, output = run_dag(sim, clock, ["single", "multi"])

    assert result["dag_run"] == "success", output[-5000:]
    assert result["tasks"] == {"wait_for_pods": "success", "train": "success"}
    assert "running trigger in line" in output  # the sensor really deferred to the trigger
    handover = result["xcoms"]["wait_for_pods"]
    assert set(handover) == {"single", "multi"}
    assert handover["multi"]["installation_status"] == "FINISHED"
    trained_on = result["xcoms"]["train"]
    assert trained_on == {pid: handover[pid]["ssh_connections"] for pid in ("single", "multi")}
    assert len(trained_on["multi"]) == 2
    assert all(trained_on["multi"])
    assert sim.api_key not in output


def test_broken_pod_fails_the_task_with_the_platform_reason(prime_simulator_factory, run_dag):
    clock = ManualClock()
    sim = prime_simulator_factory(
        ready_pod("good", ready_at=5), install_failure_pod("bad", fail_at=60), clock=clock
    )
    result, output = run_dag(sim, clock, ["good", "bad"])

    assert result["dag_run"] == "failed", output[-5000:]
    assert result["tasks"]["wait_for_pods"] == "failed"
    assert result["tasks"]["train"] == "upstream_failed"
    assert "running trigger in line" in output
    assert "PrimePodFailedError" in output
    assert f"bad: pod is ACTIVE, installation ERROR: {DEFAULT_INSTALLATION_FAILURE}" in output
    assert "train" not in result["xcoms"]
    # the tail of the pod's own log, read by the trigger, in the failure (good's is not read)
    assert "of pod bad's log:" in output
    assert f"  | [+   60.0s] ERROR: {DEFAULT_INSTALLATION_FAILURE}" in output
    assert sim.stats.by_path["/api/v1/pods/good/log"] == 0
    assert sim.api_key not in output
