"""The production tier's fan-outs: one wait task per id of the run's ``pod_ids`` (ids may repeat).

``ha_fan_out_<n>`` has ``n`` sensors ``wait_000``... started from the triggerer
(``start_from_trigger=True``), each rendering its own id there from the run's ``pod_ids``: no wait
takes a worker slot while it waits (each resumes on a worker for a moment once its pod is ready).
The tasks are written out by a loop instead of mapped because Airflow cannot start mapped tasks in
the triggerer yet (apache/airflow#48009, the GH-52141 TODO in Airflow 3.3.2's MappedOperator); a
mapped fan-out would also start a worker process per wait just to defer, which
``bench/production.py`` measures and docs/production.md advises against at this scale. The tier
runs on Airflow 3.3+, where the option exists.
"""

from __future__ import annotations

from airflow.sdk import DAG

from airflow_provider_prime.sensors.pod_status import PodStatusSensor
from tests.ha.wait_options import FAN_OUTS, TIMEOUT, fan_out_dag_id, params, sensor_options, wait_task_id

for waits in FAN_OUTS:
    # max_active_tasks: deferred waits count as active; the default 16 would hold the rest back.
    with DAG(fan_out_dag_id(waits), schedule=None, params=params(), max_active_tasks=4 * waits):
        for index in range(waits):
            PodStatusSensor(
                task_id=wait_task_id(index),
                pod_ids=f"{{{{ params.pod_ids[{index}] }}}}",
                timeout=TIMEOUT,
                **sensor_options("triggerer"),
            )
