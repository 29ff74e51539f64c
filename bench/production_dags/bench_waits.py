"""The DAGs of bench/production.py: ``WIDTH`` pod waits per run, started one of two ways.

``bench_waits_triggerer`` starts every wait in the triggerer (``start_from_trigger=True``: no
worker process to start, on Airflow 3.3+) and ends it there (no worker process to end);
``bench_waits_resume`` starts them in the triggerer but ends each on a worker, as before the waits
could end in the triggerer; ``bench_waits_worker`` defers them the classic way, after a first poke
on a worker, and ends them on a worker. A run waits for pods ``<prefix>-000`` to ``<prefix>-<WIDTH-1>``
(``prefix`` is the run's param), so a case of N waits is N / WIDTH runs over N distinct pods.

Waits are separate tasks, not one mapped task: Airflow cannot start mapped tasks in the triggerer
yet. A run is kept to ``WIDTH`` tasks because Airflow hands the whole serialized DAG to the
triggerer with every wait it starts there (to render its templates), so the cost of starting a wait
grows with the size of its DAG.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from airflow.sdk import DAG, Param

from airflow_provider_prime.sensors.pod_status import PodStatusSensor

#: Waits per run.
WIDTH = 50
#: Seconds between two polls (the benchmark's interval; its environment may change it).
POKE_INTERVAL = float(os.environ.get("BENCH_POKE_INTERVAL", "5"))
TIMEOUT = 3600.0
HAS_START_FROM_TRIGGER = "start_from_trigger" in inspect.signature(PodStatusSensor).parameters


def pod_id(prefix: str, index: int) -> str:
    return f"{prefix}-{index:03d}"


def resume_on_a_worker(context: Any) -> None:
    """A success callback that does nothing. A task with one resumes on a worker when its pods are
    ready (Airflow runs no success callback for a task its trigger ends): today's ending, to
    measure against the waits that end in the triggerer."""


for start in ("triggerer", "worker", "resume"):
    options: dict[str, Any] = {"poke_interval": POKE_INTERVAL, "timeout": TIMEOUT, "deferrable": True}
    if HAS_START_FROM_TRIGGER:
        options["start_from_trigger"] = start in ("triggerer", "resume")
    if start == "resume":
        options["on_success_callback"] = resume_on_a_worker
    with DAG(
        f"bench_waits_{start}",
        schedule=None,
        params={"prefix": Param("bench", type="string")},
        max_active_runs=1000,
        max_active_tasks=1000,
    ):
        for index in range(WIDTH):
            pod_ids = pod_id("{{ params.prefix }}", index)
            PodStatusSensor(task_id=f"wait_{index:03d}", pod_ids=pod_ids, **options)
