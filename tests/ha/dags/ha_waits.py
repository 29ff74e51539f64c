"""DAGs of the production tier (tests/ha): pod waits at scale and the sensor's behaviours.

Each exists once per way a wait can start (``ha_<name>_<start>``):

* ``worker``: the classic deferral, a first poke on a worker that then defers to the triggerer;
* ``triggerer``: ``start_from_trigger=True``, where the wait starts in the triggerer and takes no
  worker slot (Airflow 3.3+; elsewhere the sensor falls back to the worker's first poke, and a
  sensor without the option runs these DAGs the classic way).

``ha_wait_*`` waits for all the run's pods in one sensor; ``ha_timeout_*`` has two sensors that
time out, one with ``soft_fail``. Intervals are short so that the tier runs in minutes. The mapped
fan-out is in ``ha_fan_out.py``.
"""

from __future__ import annotations

from airflow.sdk import DAG

from airflow_provider_prime.sensors.pod_status import PodStatusSensor
from tests.ha.wait_options import SHORT_TIMEOUT, START_MODES, TIMEOUT, params, sensor_options

for start in START_MODES:
    with DAG(f"ha_wait_{start}", schedule=None, params=params(), render_template_as_native_obj=True):
        PodStatusSensor(
            task_id="wait", pod_ids="{{ params.pod_ids }}", timeout=TIMEOUT, **sensor_options(start)
        )

    with DAG(f"ha_timeout_{start}", schedule=None, params=params(), render_template_as_native_obj=True):
        for soft_fail in (False, True):
            PodStatusSensor(
                task_id="wait_soft" if soft_fail else "wait",
                pod_ids="{{ params.pod_ids }}",
                timeout=SHORT_TIMEOUT,
                soft_fail=soft_fail,
                **sensor_options(start),
            )
