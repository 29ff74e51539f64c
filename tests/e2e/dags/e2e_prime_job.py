"""Job DAGs for tests/e2e: ``PrimeRunJobOperator`` on the simulator's SSH nodes, params-driven.

Each run says where and what in its conf: ``pod_ids`` (pods a test added, ready) and ``command``
(plain bash; the tests make it wait on files under a temporary directory they control, which the
simulated nodes reach, since they run as local processes). The variants differ only in what a
param cannot change:

* ``e2e_prime_job``: deferred (the triggerer follows the job), no retry.
* ``e2e_prime_job_worker``: followed in the worker, one retry: a worker SIGKILLed mid-job leaves
  the job running, and the retry adopts it.
* ``e2e_prime_job_timeout``: deferred, with an ``execution_timeout`` the job outlives.
* ``e2e_prime_job_teardown``: create a two-node pod (the cluster offer) -> the job on it -> delete
  it in a teardown, whatever the job did.

Polls every second (the default is 10 s) and kills with a 2 s grace: these DAGs only ever run
against the simulator.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag

from airflow_provider_prime.operators.job import PrimeRunJobOperator
from airflow_provider_prime.operators.pod import PrimeCreatePodOperator, PrimeTerminatePodOperator

#: What every job of these DAGs shares: the simulator's SSH connection, fast polls, short kills.
FAST_JOB: dict[str, Any] = {
    "ssh_conn_id": "prime_ssh",
    "prime_conn_id": "prime_default",
    "poll_interval": 1.0,
    "kill_grace": 2.0,
    "unreachable_grace": 60.0,
}
PARAMS = {
    "pod_ids": Param([], type="array", description="The pods to run on (ready)."),
    "command": Param("echo hello from rank $PRIME_NODE_RANK", type="string", description="bash"),
}
#: The job DAGs whose pods a test adds and passes as ``pod_ids``.
POD_ID_DAGS = {
    "e2e_prime_job": {"deferrable": True, "retries": 0},
    "e2e_prime_job_worker": {"deferrable": False, "retries": 1, "retry_delay": timedelta(seconds=1)},
    "e2e_prime_job_timeout": {
        "deferrable": True,
        "retries": 0,
        "execution_timeout": timedelta(seconds=15),
    },
}


def job_on_pod_ids(dag_id: str, **job: Any) -> None:
    @dag(dag_id=dag_id, schedule=None, catchup=False, params=PARAMS, tags=["prime", "e2e"])
    def pipeline() -> None:
        PrimeRunJobOperator(
            task_id="train",
            pod_ids="{{ params.pod_ids }}",
            command="{{ params.command }}",
            **FAST_JOB,
            **job,
        )

    pipeline()


for _dag_id, _job in POD_ID_DAGS.items():
    job_on_pod_ids(_dag_id, **_job)


@dag(
    dag_id="e2e_prime_job_teardown",
    schedule=None,
    catchup=False,
    params={"command": PARAMS["command"]},
    tags=["prime", "e2e"],
)
def job_with_teardown() -> None:
    create_pod = PrimeCreatePodOperator(
        task_id="create_pod",
        gpu_type="H100_80GB",
        gpu_count=16,
        multi_node=True,
        deferrable=True,
        poll_interval=1.0,
        missing_grace=10.0,
        timeout=180.0,
    )
    train = PrimeRunJobOperator(
        task_id="train", pods=create_pod.output, command="{{ params.command }}", deferrable=True, **FAST_JOB
    )
    terminate = PrimeTerminatePodOperator(
        task_id="terminate_pod", pod_ids=create_pod.output["pod_id"], poll_interval=1.0, timeout=60.0
    )
    create_pod >> train >> terminate.as_teardown(setups=create_pod)


job_with_teardown()
