"""Started by capacity: an asset watched by PrimeCapacityEventTrigger, a DAG run per appearance.

The wish fits only the simulator's ``sim-l40s-1x`` (L40S in Europe at most $1/h), whose stock
``tests/e2e/test_capacity_event_e2e.py`` turns off and on; the trigger polls every second. The one
task returns the cloud id the event named, so the test can see what the run was told.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, AssetWatcher, dag, task

from airflow_provider_prime.triggers.capacity_event import PrimeCapacityEventTrigger

CAPACITY = Asset(
    "e2e_prime_l40s_capacity",
    watchers=[
        AssetWatcher(
            name="e2e_prime_l40s_capacity_watcher",
            trigger=PrimeCapacityEventTrigger(
                gpu_type="L40S_48GB", gpu_count=1, regions=["europe"], max_price=1.0, poll_interval=1.0
            ),
        )
    ],
)


@dag(schedule=[CAPACITY], catchup=False, tags=["prime", "e2e"])
def e2e_prime_capacity_event() -> None:
    @task
    def what_appeared(*, triggering_asset_events: Any = None) -> str | None:
        for events in (triggering_asset_events or {}).values():
            for event in events:
                payload = (event.extra or {}).get("payload") or {}
                return str(payload.get("cloud_id"))
        return None

    what_appeared()


e2e_prime_capacity_event()
