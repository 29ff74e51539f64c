"""The production tier's fan-outs: one wait task per id of the run's ``pod_ids`` (ids may repeat).

``ha_fan_out_<n>`` has ``n`` sensors ``wait_000``... started from the triggerer
(``start_from_trigger=True``), each rendering its own id there from the run's ``pod_ids``: no wait
takes a worker slot, so a 200-wait fan-out costs no worker processes at all. The tasks are written
out by a loop instead of mapped because Airflow cannot start mapped tasks in the triggerer yet
(apache/airflow GH-52141, Airflow 3.3.2); a mapped fan-out would start two worker processes per
wait to defer from, which is what ``bench/production.py`` measures and docs/production.md advises
against at this scale. The tier runs on Airflow 3.3+, where the option exists.
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
