"""A small DAG for ``dag.test()``: a deferrable PodStatusSensor, then a task reading its XCom.

``test_dag_test.py`` runs this file as a script (``python pod_wait_dag.py POD_ID...``) in a child
process whose ``AIRFLOW_HOME`` holds a migrated SQLite database, whose DAGs folder is this
directory (Airflow 3.2+ ``dag.test()`` syncs the DAG from its bundle) and whose ``prime_default``
connection points at a simulator. The child keeps Airflow's global state (configuration, ORM,
in-process execution API) away from the rest of the test session. It prints one JSON line: the
DAG run state, each task's state, and the ``return_value`` XComs.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_prime.sensors.pod_status import PodStatusSensor

RESULT_MARK = "DAG-TEST-RESULT "


with DAG(
    dag_id="prime_sensor_dag_test",
    schedule=None,
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    params={"pod_ids": []},
    render_template_as_native_obj=True,
) as dag:
    wait = PodStatusSensor(
        task_id="wait_for_pods",
        pod_ids="{{ params.pod_ids }}",
        deferrable=True,
        poke_interval=0.1,
        timeout=60,
    )

    @task
    def train(pods: dict[str, Any]) -> dict[str, Any]:
        return {pod_id: entry["ssh_connections"] for pod_id, entry in pods.items()}

    train(wait.output)


def serialize_for_airflow_3_1() -> None:
    """Airflow 3.1's ``dag.test()`` needs the DAG in the database already (3.2+ syncs it itself)."""
    from argparse import Namespace

    from airflow import __version__
    from packaging.version import Version

    if Version(__version__) >= Version("3.2"):
        return
    from airflow.cli.commands.dag_command import dag_reserialize

    dag_reserialize(Namespace(bundle_name=None))


def main(pod_ids: list[str]) -> None:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    serialize_for_airflow_3_1()
    run = dag.test(run_conf={"pod_ids": pod_ids})
    with create_session() as session:
        states = {ti.task_id: str(ti.state) for ti in run.get_task_instances(session=session)}
        query = XComModel.get_many(run_id=run.run_id, dag_ids=dag.dag_id, key="return_value")
        xcoms = {row.task_id: XComModel.deserialize_value(row) for row in session.scalars(query)}
    result = {"dag_run": str(run.state), "tasks": states, "xcoms": xcoms}
    print(RESULT_MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
