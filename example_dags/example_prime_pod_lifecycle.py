"""Rent a GPU pod, wait until it is really ready, train on it, give it back: never left billing.

1. ``create_pod`` chooses the cheapest offer for the GPU type and count of the run's params and
   creates the pod, named after this task instance, so a retry adopts the pod instead of renting
   a second one. Its id goes to XCom (key ``pod_id``) before the wait, which is deferred to the
   triggerer (no worker slot held while the pod boots). If the wait fails (pod ERROR, installation
   failure) or times out, or the task is killed, the task deletes the pod itself.
2. ``train`` gets the pod's SSH target per node from the create task's return value (the same shape
   as ``PodStatusSensor``'s, plus ``price_hr``). ``fail_training=true`` makes it fail, to watch the
   teardown at work.
3. ``terminate_pod`` is a teardown: it runs once training is done, succeeded or failed, deletes the
   pod, waits until it is gone and logs what it cost. (A teardown does not run when its setup
   failed: that is why ``create_pod`` cleans up after itself.) Had ``create_pod`` only borrowed a
   pod (a ``name=`` of a pod that existed before), it would say so in XCom (``pod_owned``) and the
   teardown would keep that pod.

What is left for pods nothing above can delete (a worker killed hard): ``example_prime_reaper``.
Nothing here touches the network or a connection until a task runs.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, task

from airflow_provider_prime.operators.pod import PrimeCreatePodOperator, PrimeTerminatePodOperator


@dag(
    schedule=None,
    catchup=False,
    render_template_as_native_obj=True,
    params={
        "gpu_type": Param("H100_80GB", type="string", description="GPU model to rent."),
        "gpu_count": Param(1, type="integer", minimum=1, description="GPUs per pod."),
        "fail_training": Param(False, type="boolean", description="Make training fail (a demo)."),
    },
    tags=["prime", "example"],
)
def example_prime_pod_lifecycle() -> None:
    create_pod = PrimeCreatePodOperator(
        task_id="create_pod",
        gpu_type="{{ params.gpu_type }}",
        gpu_count="{{ params.gpu_count }}",
        deferrable=True,
        poll_interval=timedelta(seconds=10),
        timeout=timedelta(minutes=30),
        retries=1,
    )

    @task
    def train(pods: dict[str, dict[str, Any]], fail_training: bool = False) -> list[str]:
        """Where the job would run: one SSH target per node of the pod."""
        if fail_training:
            raise RuntimeError("training failed (fail_training=true)")
        targets = [target for pod in pods.values() for target in pod["ssh_connections"]]
        for rank, target in enumerate(targets):
            print(f"node {rank}: ssh {target} python train.py")  # e.g. SSHOperator / SSHHook here
        return targets

    terminate_pod = PrimeTerminatePodOperator(task_id="terminate_pod", pod_ids=create_pod.output["pod_id"])

    trained = train(create_pod.output, fail_training="{{ params.fail_training }}")
    create_pod >> trained >> terminate_pod.as_teardown(setups=create_pod)


example_prime_pod_lifecycle()
