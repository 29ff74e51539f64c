"""Lifecycle DAGs for tests/e2e: the variants of the example's create → train → terminate.

* ``e2e_prime_worker_wait``: the wait runs in the worker (not deferred), one retry: killing the
  worker mid-wait makes the retry adopt the pod.
* ``e2e_prime_no_retry``: the same without retries: a worker killed hard leaves an orphan.
* ``e2e_prime_short_deferral``: a deferred wait of 6 s on a pod that never gets ready.
* ``e2e_prime_mapped``: a mapped task group of three create → train → terminate branches.
* ``e2e_prime_reaper``: the reaper over all of them, no minimum age.

Short intervals throughout: these DAGs only ever run against the simulator.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task, task_group

from airflow_provider_prime.operators.pod import PrimeCreatePodOperator, PrimeTerminatePodOperator
from airflow_provider_prime.operators.reaper import PrimeReapPodsOperator

FAST = {"poll_interval": 1.0, "missing_grace": 10.0}
LIFECYCLE_DAGS = [
    "example_prime_pod_lifecycle",
    "e2e_prime_worker_wait",
    "e2e_prime_no_retry",
    "e2e_prime_short_deferral",
    "e2e_prime_mapped",
]


@task
def train(pods: dict[str, dict[str, Any]]) -> list[str]:
    return [target for pod in pods.values() for target in pod["ssh_connections"]]


def lifecycle(dag_id: str, **create: Any) -> None:
    @dag(dag_id=dag_id, schedule=None, catchup=False, tags=["prime", "e2e"])
    def pipeline() -> None:
        create_pod = PrimeCreatePodOperator(task_id="create_pod", gpu_type="H100_80GB", **FAST, **create)
        terminate = PrimeTerminatePodOperator(
            task_id="terminate_pod", pod_ids=create_pod.output["pod_id"], poll_interval=1.0, timeout=60.0
        )
        create_pod >> train(create_pod.output) >> terminate.as_teardown(setups=create_pod)

    pipeline()


lifecycle(
    "e2e_prime_worker_wait", deferrable=False, timeout=180.0, retries=1, retry_delay=timedelta(seconds=1)
)
lifecycle("e2e_prime_no_retry", deferrable=False, timeout=180.0, retries=0)
lifecycle("e2e_prime_short_deferral", deferrable=True, timeout=6.0)


@dag(dag_id="e2e_prime_mapped", schedule=None, catchup=False, tags=["prime", "e2e"])
def mapped() -> None:
    @task_group
    def branch(gpu_count: int) -> None:
        create_pod = PrimeCreatePodOperator(
            task_id="create_pod",
            gpu_type="H100_80GB",
            gpu_count=gpu_count,
            deferrable=True,
            timeout=180.0,
            **FAST,
        )
        terminate = PrimeTerminatePodOperator(
            task_id="terminate_pod", pod_ids=create_pod.output["pod_id"], poll_interval=1.0, timeout=60.0
        )
        create_pod >> train(create_pod.output) >> terminate.as_teardown(setups=create_pod)

    branch.expand(gpu_count=[1, 1, 1])


mapped()


@dag(dag_id="e2e_prime_reaper", schedule=None, catchup=False, tags=["prime", "e2e"])
def reaper() -> None:
    PrimeReapPodsOperator(task_id="reap", dag_ids=LIFECYCLE_DAGS, min_age=0)


reaper()
