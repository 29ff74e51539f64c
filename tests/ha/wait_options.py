"""How the production tier's DAGs (tests/ha/dags) wait: intervals, timeouts, the ways to start.

Kept out of the DAG folder so that both DAG files, and the tests, import one definition.
"""

from __future__ import annotations

import inspect
from typing import Any

from airflow.sdk import Param

from airflow_provider_prime.sensors.pod_status import PodStatusSensor

#: The sensors' poke (and trigger poll) interval, seconds.
POKE_INTERVAL = 2.0
#: Timeout of the waits expected to succeed or fail: ample for two loaded cores, and the bound the
#: fan-out tests hold every wait's end to (a wait that moved triggerers keeps it).
TIMEOUT = 600.0
#: Timeout of the waits expected to time out.
SHORT_TIMEOUT = 8.0
START_MODES = ("worker", "triggerer")
#: Sizes of the fan-out DAGs (``ha_fan_out_<n>``): the scale test's 200 waits, the failover's 20
#: (one triggerer can hold them all once the other is dead), the 429 storm's 10.
FAN_OUTS = (200, 20, 10)
#: Whether this sensor has the ``start_from_trigger`` option at all.
SENSOR_HAS_START_FROM_TRIGGER = "start_from_trigger" in inspect.signature(PodStatusSensor).parameters
#: How long a pod may be missing from the API's answer (none is, in these tests).
MISSING_GRACE = 60.0


def fan_out_dag_id(waits: int) -> str:
    return f"ha_fan_out_{waits}"


def wait_task_id(index: int) -> str:
    return f"wait_{index:03d}"


def params() -> dict[str, Param]:
    return {"pod_ids": Param([], type="array", items={"type": "string"}, description="Pods to wait for.")}


def sensor_options(start: str | None = None) -> dict[str, Any]:
    options: dict[str, Any] = {"poke_interval": POKE_INTERVAL, "deferrable": True}
    options["missing_grace"] = MISSING_GRACE
    if SENSOR_HAS_START_FROM_TRIGGER and start is not None:
        options["start_from_trigger"] = start == "triggerer"
    return options
