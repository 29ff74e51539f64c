"""Wait for Prime Intellect GPU pods, then hand their SSH targets to a training step.

The sensor defers: while the pods boot and install, the wait runs in Airflow's triggerer and holds
no worker slot. When every pod is ACTIVE, installed and reachable over SSH, the sensor's XCom
(``wait_for_pods.output``) maps each pod id to its status, provider, IPs, one SSH connection per
node and, per node, the parsed ``user``/``host``/``port``. The training step turns it into the
commands it would run on each node; ``run_on_every_node`` runs a command on every node with
Airflow's SSH provider (``airflow_provider_prime.ssh.ssh_hook``) when the run's ``run_over_ssh``
param is true (the local simulator's pods have no SSH server, so by default it only says what it
would run).

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
        ),
        "run_over_ssh": Param(False, type="boolean", description="Really run ssh_command on every node."),
        "ssh_command": Param("nvidia-smi -L", type="string", description="The command to run on every node."),
        "ssh_conn_id": Param(
            "prime_ssh",
            type="string",
            description="SSH connection holding the private key (its host is ignored).",
        ),
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
            nodes = pod["ssh_connections"]  # "root@203.0.113.7 -p 22", one per node (None: no SSH)
            master = pod["ips"][0] or pod["nodes"][0]["host"]  # one entry per node, never an empty list
            commands[pod_id] = [
                f"ssh {target} "
                + shlex.quote(
                    f"torchrun --nnodes={len(nodes)} --node-rank={rank} "
                    f"--master-addr={master} --master-port=29500 train.py"
                )
                if target
                else f"# node {rank} has no SSH connection"
                for rank, target in enumerate(nodes)
            ]
            print(f"{pod_id} ({pod['provider_type']}, {len(nodes)} node(s)):")
            for command in commands[pod_id]:
                print(f"  {command}")  # a real DAG runs these, e.g. with SSHOperator / SSHHook
        return commands

    @task
    def run_on_every_node(
        pods: dict[str, dict[str, Any]], params: dict[str, Any] | None = None
    ) -> dict[str, list[int | None]]:
        """``params.ssh_command`` on every node through Airflow's SSHHook; exit status per node."""
        params = params or {}
        statuses: dict[str, list[int | None]] = {}
        for pod_id, pod in pods.items():
            statuses[pod_id] = []
            for rank, node in enumerate(pod["nodes"]):  # user, host, port parsed from the platform
                if not node["host"] or not params.get("run_over_ssh"):
                    print(f"{pod_id} node {rank}: would run {params.get('ssh_command')!r} on {node}")
                    statuses[pod_id].append(None)
                    continue
                from airflow_provider_prime.ssh import ssh_hook  # needs apache-airflow-providers-ssh

                hook = ssh_hook(node, ssh_conn_id=params["ssh_conn_id"] or None)
                with hook.get_conn() as client:
                    status, stdout, _ = hook.exec_ssh_client_command(
                        client, params["ssh_command"], get_pty=False, environment=None
                    )
                print(f"{pod_id} node {rank} ({node['host']}): exit {status}\n{stdout.decode()}")
                statuses[pod_id].append(status)
        return statuses

    train(wait_for_pods.output)
    run_on_every_node(wait_for_pods.output)


example_prime_wait_and_train()
