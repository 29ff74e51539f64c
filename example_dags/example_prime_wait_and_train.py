"""Wait for Prime Intellect GPU pods, then hand their SSH targets to a training step.

The sensor defers: while the pods boot and install, the wait runs in Airflow's triggerer and holds
no worker slot. When every pod is ACTIVE, installed and reachable over SSH, the sensor's XCom
(``wait_for_pods.output``) maps each pod id to its status, provider, IPs and one SSH connection per
node, which the training step turns into the commands it would run on each node.

Which pods: the ``pod_ids`` param of the run (trigger form or ``conf``), else the Airflow Variable
``prime_pod_ids`` (a JSON list), else the pods of the local simulator's ``demo`` scenario.
Nothing here touches the network or a connection until a task runs.
"""

from __future__ import annotations

import shlex
from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, task

from airflow_provider_prime.sensors.pod_status import PodStatusSensor

#: The pods of `make demo`'s simulator scenario, used when neither the run nor a Variable names any.
DEMO_POD_IDS = ["pod-demo-single", "pod-demo-cluster"]
#: Rendered when the sensor runs (never at parse time): the param, else the Variable, else the demo.
POD_IDS = "{{ params.pod_ids or var.json.get('prime_pod_ids', demo_pod_ids) }}"


@dag(
    schedule=None,
    catchup=False,
    render_template_as_native_obj=True,  # POD_IDS renders to a list, not to its text
    user_defined_macros={"demo_pod_ids": DEMO_POD_IDS},
    params={
        "pod_ids": Param(
            [],
            type="array",
            items={"type": "string"},
            description="Pod ids to wait for; empty: the Variable prime_pod_ids, else the demo pods.",
        )
    },
    tags=["prime", "example"],
)
def example_prime_wait_and_train() -> None:
    wait_for_pods = PodStatusSensor(
        task_id="wait_for_pods",
        pod_ids=POD_IDS,
        prime_conn_id="prime_default",
        deferrable=True,
        poke_interval=timedelta(seconds=10),
        timeout=timedelta(minutes=30),
    )

    @task
    def train(pods: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
        """One command per node: rank 0 of each pod is the rendezvous host of its torchrun job."""
        commands: dict[str, list[str]] = {}
        for pod_id, pod in pods.items():
            nodes = pod["ssh_connections"]  # "root@203.0.113.7 -p 22", one per node
            master = pod["ips"][0] or nodes[0].split()[0].split("@")[-1]
            commands[pod_id] = [
                f"ssh {target} "
                + shlex.quote(
                    f"torchrun --nnodes={len(nodes)} --node-rank={rank} "
                    f"--master-addr={master} --master-port=29500 train.py"
                )
                for rank, target in enumerate(nodes)
            ]
            print(f"{pod_id} ({pod['provider_type']}, {len(nodes)} node(s)):")
            for command in commands[pod_id]:
                print(f"  {command}")  # a real DAG runs these, e.g. with SSHOperator / SSHHook
        return commands

    train(wait_for_pods.output)


example_prime_wait_and_train()
