"""Capacity DAGs for tests/e2e: a create that waits for capacity, deferred, and one that falls back.

* ``e2e_prime_capacity_wait``: one H100, waiting up to 3 minutes for capacity in the triggerer.
* ``e2e_prime_capacity_fallback``: H100, or else A100, whichever fits first in that order.

Both give the pod back with a teardown. Short intervals: these DAGs only run against the simulator.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag

from airflow_provider_prime.operators.pod import PrimeCreatePodOperator, PrimeTerminatePodOperator

FAST: dict[str, Any] = {"poll_interval": 1.0, "missing_grace": 10.0, "timeout": 180.0, "deferrable": True}


def capacity(dag_id: str, **create: Any) -> None:
    @dag(dag_id=dag_id, schedule=None, catchup=False, tags=["prime", "e2e"])
    def pipeline() -> None:
        create_pod = PrimeCreatePodOperator(task_id="create_pod", gpu_count=1, **FAST, **create)
        terminate = PrimeTerminatePodOperator(
            task_id="terminate_pod", pod_ids=create_pod.output["pod_id"], poll_interval=1.0, timeout=60.0
        )
        create_pod >> terminate.as_teardown(setups=create_pod)

    pipeline()


capacity("e2e_prime_capacity_wait", gpu_type="H100_80GB", wait_for_capacity=timedelta(minutes=3))
capacity("e2e_prime_capacity_fallback", gpu_type=["H100_80GB", "A100_80GB"])
