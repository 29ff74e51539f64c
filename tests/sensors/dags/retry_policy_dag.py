"""A DAG for ``dag.test()`` proving PRIME_RETRY_POLICY on a real task run (Airflow 3.3+).

``test_retry_policy_dag.py`` runs this file as a script in a child process (as
``pod_wait_dag.py``). ``refused`` raises ``PrimeAuthError`` with 3 retries left: the policy fails it
at once. ``sold_out`` raises ``PrimeSoldOutError`` on its first two tries and succeeds on the
third: retried after the policy's no-capacity delay (1 s here), not the task's own hour. It prints
one JSON line: each task's state and try number.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_prime.exceptions import PrimeAuthError, PrimeSoldOutError
from airflow_provider_prime.retry import prime_retry_policy

RESULT_MARK = "RETRY-DAG-RESULT "

with DAG(
    dag_id="prime_retry_policy_dag_test",
    schedule=None,
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    default_args={
        "retries": 3,
        "retry_delay": timedelta(hours=1),  # a retry on this delay would outlast the test
        "retry_policy": prime_retry_policy(no_capacity_delay=timedelta(seconds=1)),
    },
) as dag:

    @task
    def refused() -> None:
        raise PrimeAuthError("HTTP 401 while creating pod 'x': check the API key")

    @task
    def sold_out(**context: Any) -> str:
        if context["ti"].try_number < 3:
            raise PrimeSoldOutError("Offer h100-x is out of stock")
        return "created"

    refused()
    sold_out()


def main() -> None:
    from airflow.utils.session import create_session

    run = dag.test()
    with create_session() as session:
        tis = run.get_task_instances(session=session)
        result = {ti.task_id: {"state": str(ti.state), "try_number": ti.try_number} for ti in tis}
    print(RESULT_MARK + json.dumps({"dag_run": str(run.state), "tasks": result}), flush=True)


if __name__ == "__main__":
    main()
