"""The create operator's own wait in the worker quotes the failed pod's log tail (default 50 lines).

The deferred wait is the trigger's (``tests/sensors/test_pod_log_tail.py``, and on real Airflow
``tests/e2e/test_pod_log_e2e.py``); this is the worker's driver in ``PrimeCreatePodOperator``.
"""

from __future__ import annotations

import pytest

from airflow_provider_prime.exceptions import PrimePodFailedError
from airflow_provider_prime.testing import CreateLifecycle
from tests.operators.conftest import TaskInstance, account, billing_after_deletes, create, make_context

FAILURE = "pip could not build flash-attn: CUDA toolkit not found (pod log)"


def test_a_failed_installation_in_the_worker_quotes_the_pods_log(lifecycle_sim) -> None:
    sim = lifecycle_sim(CreateLifecycle(active_after=1, installed_after=2, installation_failure=FAILURE))
    ti = TaskInstance()
    with pytest.raises(PrimePodFailedError) as caught:
        create().execute(make_context(ti))
    pod_id = ti.xcom["pod_id"]
    message = str(caught.value)
    assert f"installation ERROR: {FAILURE}" in message
    assert f"of pod {pod_id}'s log:\n" in message
    assert message.rstrip().endswith(f"ERROR: {FAILURE}")
    assert sim.api_key not in message
    assert sim.stats.by_path[f"/api/v1/pods/{pod_id}/log"] == 1
    assert account(sim)["deleted"]  # the failure still deletes the pod
    assert billing_after_deletes(sim) == []
