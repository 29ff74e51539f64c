"""The production tier's mapped fan-out: one wait per id of the run's ``pod_ids`` (ids may repeat).

Mapped waits defer from a worker: Airflow cannot start mapped tasks in the triggerer yet
(apache/airflow GH-52141), so this DAG is the same whatever the sensor supports. Its own file keeps
the DAG parse that every one of its worker processes makes small.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_prime.sensors.pod_status import PodStatusSensor
from tests.ha.wait_options import TIMEOUT, params, sensor_options

with DAG("ha_fan_out", schedule=None, params=params(), max_active_tasks=1024):

    @task
    def pod_list(**context: Any) -> list[str]:
        return list(context["params"]["pod_ids"])

    PodStatusSensor.partial(task_id="wait", timeout=TIMEOUT, **sensor_options()).expand(pod_ids=pod_list())
