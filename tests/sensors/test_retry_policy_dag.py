"""PRIME_RETRY_POLICY on a real task run: ``dag.test()`` of ``dags/retry_policy_dag.py`` (3.3+).

A refused key fails on its first try with retries left; a sold-out create is retried after the
policy's no-capacity delay and succeeds on its third try (the task's own one-hour delay would
outlast the test's timeout).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from airflow_provider_prime._compat import RETRY_POLICY
from tests.sensors.dag_runs import DAGS, REPO, airflow_env
from tests.sensors.dags.retry_policy_dag import RESULT_MARK

pytestmark = pytest.mark.skipif(not RETRY_POLICY, reason="Airflow < 3.3 has no retry_policy")


def test_refused_fails_at_once_and_sold_out_retries_on_the_policys_delay(airflow_home) -> None:
    done = subprocess.run(
        [sys.executable, str(DAGS / "retry_policy_dag.py")],
        env=airflow_env(airflow_home),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    assert lines, output[-5000:]
    result = json.loads(lines[-1][len(RESULT_MARK) :])
    assert result["tasks"]["refused"] == {"state": "failed", "try_number": 1}, output[-5000:]
    assert result["tasks"]["sold_out"] == {"state": "success", "try_number": 3}, output[-5000:]
    assert "No GPU capacity" in output
