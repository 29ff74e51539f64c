"""The whole pattern around pods that already exist: wait for them, train, then a place for teardown.

The provider does not own pods: it never creates, stops or deletes them. They belong to whoever
started them (you, a script, another DAG), may be shared with other jobs, and keep billing until
their owner terminates them. So the teardown step below deletes nothing; it marks the spot where a
DAG that does own its pods calls its own teardown.

Pod ids: the ``pod_ids`` param, else the Variable ``prime_pod_ids`` (a JSON list), else the demo
pods of the local simulator.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, task, teardown

from airflow_provider_prime.sensors.pod_status import PodStatusSensor

DEMO_POD_IDS = ["pod-demo-single", "pod-demo-cluster"]
#: Rendered when a task runs: the param, else the Variable, else the demo pods.
POD_IDS = "{{ params.pod_ids or var.json.get('prime_pod_ids', demo_pod_ids) }}"


@dag(
    schedule=None,
    catchup=False,
    render_template_as_native_obj=True,
    user_defined_macros={"demo_pod_ids": DEMO_POD_IDS},
    params={"pod_ids": Param([], type="array", items={"type": "string"}, description="Pods to use.")},
    tags=["prime", "example"],
)
def example_prime_pod_lifecycle() -> None:
    # 1. Wait: deferred to the triggerer; fails at once with the platform's reason if a pod breaks.
    wait_for_pods = PodStatusSensor(
        task_id="wait_for_pods",
        pod_ids=POD_IDS,
        deferrable=True,
        poke_interval=timedelta(seconds=10),
        timeout=timedelta(minutes=30),
    )

    # 2. Work: everything a node needs to be reached is in the sensor's XCom.
    @task
    def train(pods: dict[str, dict[str, Any]]) -> None:
        for pod_id, pod in pods.items():
            for rank, target in enumerate(pod["ssh_connections"]):
                print(f"{pod_id} node {rank}: ssh {target}")  # run the job on the node here

    # 3. TEARDOWN. As an Airflow teardown task it runs once everything before it is done, whether
    #    that succeeded or failed (like trigger rule all_done), and the run still fails when the wait
    #    or the training failed. It deletes nothing by default: the pods are not this DAG's.
    @teardown
    def release_pods(pod_ids: list[str]) -> None:
        for pod_id in pod_ids:
            print(f"Leaving pod {pod_id} as it is: this DAG does not own it.")
            # If this DAG owns its pods, terminate them here with your own tooling, e.g. a call to
            # the Prime API's DELETE /api/v1/pods/{pod_id} or your infrastructure code.

    wait_for_pods >> train(wait_for_pods.output) >> release_pods(POD_IDS)


example_prime_pod_lifecycle()
