"""Maintenance: delete the pods that nothing else will (a worker killed hard, a lost deferral).

``PrimeCreatePodOperator`` deletes its pod on every exit it lives to see and the teardown deletes
it after training; what neither can catch is a task that died without running any code (SIGKILL,
out of memory, a lost machine), a deferred task marked failed on Airflow 3.1/3.2, or a DAG run
deleted while its pod ran. Every hour this DAG lists this deployment's pods (derived names, and
names you chose that the create operator recorded), asks Airflow which task instances of
``dag_ids`` are still alive, and reports the pods of the others. Pods of another deployment, of
other DAGs, pods you created yourself and pods younger than ``min_age`` are left alone.

A dry run by default: paused when first deployed, and even when turned on it only reports what it
would delete. Turn it on once ``dag_ids`` lists your DAGs that create pods, read its report, then
set the ``dry_run`` param to false (or trigger it with ``{"dry_run": false}``) to delete.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag

from airflow_provider_prime.operators.reaper import PrimeReapPodsOperator


@dag(
    schedule=timedelta(hours=1),
    start_date=datetime(2025, 1, 1),
    catchup=False,
    is_paused_upon_creation=True,
    max_active_runs=1,
    render_template_as_native_obj=True,
    params={
        "dag_ids": Param(["example_prime_pod_lifecycle"], type="array", items={"type": "string"}),
        "dry_run": Param(True, type="boolean", description="Only report what would be deleted."),
        "min_age_minutes": Param(10, type="number", minimum=0, description="Spare younger pods."),
    },
    tags=["prime", "example", "maintenance"],
)
def example_prime_reaper() -> None:
    PrimeReapPodsOperator(
        task_id="reap_orphan_pods",
        dag_ids="{{ params.dag_ids }}",
        dry_run="{{ params.dry_run }}",
        min_age="{{ params.min_age_minutes * 60 }}",
    )


example_prime_reaper()
