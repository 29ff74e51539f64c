"""Rent a GPU pod, wait until it is really ready, train on every node of it, give it back: never left billing.

1. ``create_pod`` chooses the cheapest offer for the GPU type and count of the run's params
   (``multi_node=true``: a multi-node offer, one pod with several nodes) and creates the pod, named
   after this task instance, so a retry adopts the pod instead of renting a second one. Its id goes
   to XCom (key ``pod_id``) before the wait, which is deferred to the triggerer (no worker slot held
   while the pod boots). If the wait fails (pod ERROR, installation failure) or times out, or the
   task is killed, the task deletes the pod itself.
2. ``train`` runs ``training/train_regression.py`` (beside this file; pure Python, no GPU needed) on
   every node of the pod with ``PrimeRunJobOperator``: detached on the nodes, followed from the
   triggerer, each node's lines in the task log as they come (``[node 1] step 3/30 loss 0.41``).
   The ranks meet at ``MASTER_ADDR:MASTER_PORT``, which the job sets on every node, and rank 0's
   result (``$PRIME_RESULT_FILE``) is the task's XCom under ``result``. The SSH key comes from the
   Airflow connection ``prime_ssh``. ``fail_training=true`` makes rank 1 exit 3 at step 3: the
   task fails naming rank 1, rank 0 is killed at once, and the teardown still gives the pod back.
3. ``terminate_pod`` is a teardown: it runs once training is done, succeeded or failed, deletes the
   pod, waits until it is gone and logs what it cost. (A teardown does not run when its setup
   failed: that is why ``create_pod`` cleans up after itself.) Had ``create_pod`` only borrowed a
   pod (a ``name=`` of a pod that existed before), it would say so in XCom (``pod_owned``) and the
   teardown would keep that pod.

**How the script reaches the nodes.** ``setup`` writes it into the job's directory with a bash
here-document whose delimiter is quoted (``<<'...'``), so bash expands nothing in it. ``setup``
is a templated field, so Jinja reads the text first: the script must contain no ``{{``, ``{%``
or ``{#`` and no line equal to the delimiter, which :func:`write_file_setup` checks when this file
is parsed (an import error naming the problem, never a silently altered script). A here-document
rather than base64 because the Rendered Template view then shows exactly the code that runs; a
script of your own that needs Jinja's delimiters can be shipped as base64, or put on the image.

What is left for pods nothing above can delete (a worker killed hard): ``example_prime_reaper``.
Nothing here touches the network or a connection until a task runs (reading the script beside
this file is all it does at parse time).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from airflow.sdk import Param, dag

from airflow_provider_prime.operators.job import PrimeRunJobOperator
from airflow_provider_prime.operators.pod import PrimeCreatePodOperator, PrimeTerminatePodOperator

#: The training script, shipped beside the DAG files (``.airflowignore`` keeps it from being parsed).
TRAINING_SCRIPT = Path(__file__).resolve().parent / "training" / "train_regression.py"
#: The here-document's delimiter: no line of a shipped script may be exactly this.
HEREDOC_END = "PRIME_TRAINING_SCRIPT_END"
JINJA_DELIMITERS = ("{{", "{%", "{#")


def write_file_setup(name: str, text: str) -> str:
    """A bash ``setup`` that writes ``text`` to ``name`` in the working directory, unchanged by Jinja
    and by bash. ValueError if Jinja or the here-document would alter it."""
    found = [delimiter for delimiter in JINJA_DELIMITERS if delimiter in text]
    if found:
        raise ValueError(f"{name} contains {', '.join(found)}: Jinja would render it; ship it as base64")
    if HEREDOC_END in text.splitlines():
        raise ValueError(f"{name} has a line {HEREDOC_END!r}, which would end the here-document early")
    return f"cat > {name} <<'{HEREDOC_END}'\n{text.rstrip(chr(10))}\n{HEREDOC_END}\necho wrote {name}\n"


@dag(
    schedule=None,
    catchup=False,
    render_template_as_native_obj=True,
    params={
        "gpu_type": Param("H100_80GB", type="string", description="GPU model to rent."),
        "gpu_count": Param(1, type="integer", minimum=1, description="GPUs per pod (all its nodes)."),
        "multi_node": Param(False, type="boolean", description="Rent a multi-node pod (a cluster)."),
        "fail_training": Param(False, type="boolean", description="Rank 1 fails at step 3 (a demo)."),
    },
    tags=["prime", "example"],
)
def example_prime_pod_lifecycle() -> None:
    create_pod = PrimeCreatePodOperator(
        task_id="create_pod",
        gpu_type="{{ params.gpu_type }}",
        gpu_count="{{ params.gpu_count }}",
        multi_node="{{ params.multi_node }}",
        deferrable=True,
        poll_interval=timedelta(seconds=10),
        timeout=timedelta(minutes=30),
        retries=1,
    )

    train = PrimeRunJobOperator(
        task_id="train",
        pods=create_pod.output,
        ssh_conn_id="prime_ssh",
        deferrable=True,
        setup=write_file_setup("train_regression.py", TRAINING_SCRIPT.read_text(encoding="utf-8")),
        command="python3 train_regression.py",
        env={
            # -1: no rank fails; 1: rank 1 exits 3 at step 3 (see the script's docstring).
            "TRAIN_FAIL_RANK": "{{ 1 if params.fail_training else -1 }}",
            "TRAIN_STEPS": "30",
            "TRAIN_STEP_SECONDS": "0.5",  # a pause per step, so that the log streams
        },
        poll_interval=timedelta(seconds=3),
        timeout=timedelta(minutes=20),
    )

    terminate_pod = PrimeTerminatePodOperator(task_id="terminate_pod", pod_ids=create_pod.output["pod_id"])

    create_pod >> train >> terminate_pod.as_teardown(setups=create_pod)


example_prime_pod_lifecycle()
