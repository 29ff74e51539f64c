"""Start training when GPUs become available: a DAG scheduled on capacity, not on a clock.

``H100_CAPACITY`` is an asset watched by :class:`PrimeCapacityEventTrigger`: in the triggerer it
polls Prime Intellect's availability once a minute (one request per minute for every watcher and
deferred create asking the same thing) and fires **once each time** an offer fitting ``WISH``
appears: 8 H100 (else 8 H200) in Europe at most $20/h, i.e. $2.50 per GPU-hour. While capacity
stays, nothing more fires; when it goes and comes back, the DAG runs again. The trigger remembers
what it saw (the asset's state store on Airflow 3.3, a Variable below), so a triggerer restart does
not start a run for capacity already seen. See docs/capacity-events.md.

Each run:

1. ``what_appeared`` logs the event's payload (offer, price, region, stock) and returns it.
2. ``create_pod`` rents a pod for the same wish: the cheapest fitting offer at that moment, which
   may differ from the event's if the market moved (to pin the event's own offer, pass
   ``cloud_id=`` from ``what_appeared``'s result). Deferred while the pod boots.
3. ``terminate_pod`` is the teardown: the pod is deleted however the run ends.

Nothing here touches the network at parse time: the trigger only validates the wish.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, AssetWatcher, dag, task

from airflow_provider_prime.operators.pod import PrimeCreatePodOperator, PrimeTerminatePodOperator
from airflow_provider_prime.triggers.capacity_event import PrimeCapacityEventTrigger

#: What to rent: the same wish for the watcher and the create.
WISH: dict[str, Any] = {"gpu_count": 8, "regions": ["europe"], "max_price": 20.0}

H100_CAPACITY = Asset(
    "prime_h100x8_europe_capacity",
    watchers=[
        AssetWatcher(
            name="prime_h100x8_europe_watcher",
            trigger=PrimeCapacityEventTrigger(gpu_type=["H100_80GB", "H200_141GB"], poll_interval=60, **WISH),
        )
    ],
)


@dag(schedule=[H100_CAPACITY], catchup=False, max_active_runs=1, tags=["prime", "example"])
def example_prime_capacity_event() -> None:
    @task
    def what_appeared(*, triggering_asset_events: Any = None) -> dict[str, Any]:
        """The payload of the event that started this run (``{}`` for a run started by hand)."""
        for events in (triggering_asset_events or {}).values():
            for event in events:
                payload: dict[str, Any] = dict((event.extra or {}).get("payload") or {})
                print(
                    f"Capacity appeared: {payload.get('gpu_type')} x{payload.get('gpu_count')} in "
                    f"{payload.get('country') or payload.get('region')}, ${payload.get('price')}/h, "
                    f"stock {payload.get('stock_status')}, cloud_id {payload.get('cloud_id')}"
                )
                return payload
        return {}

    create_pod = PrimeCreatePodOperator(
        task_id="create_pod",
        gpu_type="{{ ti.xcom_pull(task_ids='what_appeared').get('gpu_type') or 'H100_80GB' }}",
        deferrable=True,
        poll_interval=timedelta(seconds=15),
        timeout=timedelta(minutes=30),
        **WISH,
    )
    terminate_pod = PrimeTerminatePodOperator(task_id="terminate_pod", pod_ids=create_pod.output["pod_id"])

    what_appeared() >> create_pod >> terminate_pod.as_teardown(setups=create_pod)


example_prime_capacity_event()
