"""The environment of every node of a job: rank, node list, master address, and the user's ``env``.

Set on every node, beside the names SkyPilot and dstack use for the same things:

=======================  ==========================================  =================================
Variable                 Value                                       SkyPilot / dstack
=======================  ==========================================  =================================
``PRIME_NODE_RANK``      this node's rank, 0 to N-1                  ``SKYPILOT_NODE_RANK`` /
                                                                     ``DSTACK_NODE_RANK``
``PRIME_NUM_NODES``      N, the number of nodes                      ``SKYPILOT_NUM_NODES`` /
                                                                     ``DSTACK_NODES_NUM``
``PRIME_NODE_IPS``       every node's address in rank order,         ``SKYPILOT_NODE_IPS`` /
                         comma-separated (theirs: one per line)      ``DSTACK_NODES_IPS``
``PRIME_MASTER_ADDR``    rank 0's address                            (first node IP) /
                                                                     ``DSTACK_MASTER_NODE_IP``
``PRIME_MASTER_PORT``    ``master_port=``, default 29500             (none) / (none)
``PRIME_GPUS_PER_NODE``  ``gpus_per_node=``, else counted on the     ``SKYPILOT_NUM_GPUS_PER_NODE`` /
                         node at launch (``nvidia-smi -L``; 0)       ``DSTACK_GPUS_PER_NODE``
``PRIME_JOB_ID``         the job id, the same for every try          ``SKYPILOT_TASK_ID`` /
                                                                     ``DSTACK_RUN_NAME``
``PRIME_JOB_DIR``        the job's directory on the node (absolute)  (none) / (none)
``PRIME_RESULT_FILE``    ``$PRIME_JOB_DIR/result.json``: rank 0's    (none) / (none)
                         JSON result goes there
``MASTER_ADDR``          = ``PRIME_MASTER_ADDR`` (torchrun's name)   (none) / (none)
``MASTER_PORT``          = ``PRIME_MASTER_PORT`` (torchrun's name)   (none) / (none)
``NODE_RANK``            = ``PRIME_NODE_RANK`` (torchrun's name)     (none) / (none)
``NNODES``               = ``PRIME_NUM_NODES`` (torchrun's name)     (none) / (none)
=======================  ==========================================  =================================

So ``torchrun --nnodes=$NNODES --node-rank=$NODE_RANK --nproc-per-node=$PRIME_GPUS_PER_NODE
--master-addr=$MASTER_ADDR --master-port=$MASTER_PORT train.py`` works unchanged on every node.

**A node's address** is its private ``ip`` when the platform gives one, else its SSH host: nodes
of one pod reach each other on the private network, and the SSH host may be a public address
that forwards only the SSH port. ``PRIME_MASTER_ADDR`` is rank 0's address.

**The user's env** is set on top, but may not name any variable above: those are derived from the
pods and the operator's parameters (``master_port=``, ``gpus_per_node=``), and a value that
differed between nodes, or from the pods, would split the rendezvous in a way that only shows as
a hang. Such an ``env`` is refused with :class:`.PrimeConfigError` saying what to set instead.
Names must be valid shell names; values are turned into text (``None`` is refused).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from airflow_provider_prime.exceptions import PrimeConfigError
from airflow_provider_prime.job_nodes import JobNode

#: torchrun's default rendezvous port, also ``PRIME_MASTER_PORT``'s.
DEFAULT_MASTER_PORT = 29500
#: The file, in the job directory, that rank 0 may write its JSON result to.
RESULT_FILE_NAME = "result.json"
#: The variables the job sets; a user's ``env`` may not override them. The value says what to
#: set instead.
JOB_VARIABLES: Mapping[str, str] = {
    "PRIME_NODE_RANK": "the rank follows the order of the pods",
    "PRIME_NUM_NODES": "the pods decide it",
    "PRIME_NODE_IPS": "the pods decide it",
    "PRIME_MASTER_ADDR": "rank 0's address is used",
    "PRIME_MASTER_PORT": "pass master_port=",
    "PRIME_GPUS_PER_NODE": "pass gpus_per_node=",
    "PRIME_JOB_ID": "it is derived from the task instance",
    "PRIME_JOB_DIR": "it is derived from the job id",
    "PRIME_RESULT_FILE": "it is in the job directory",
    "MASTER_ADDR": "rank 0's address is used",
    "MASTER_PORT": "pass master_port=",
    "NODE_RANK": "the rank follows the order of the pods",
    "NNODES": "the pods decide it",
}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def user_env(env: Mapping[str, object] | None) -> dict[str, str]:
    """The user's ``env`` as text, checked: shell names only, no job variable, no ``None``."""
    checked: dict[str, str] = {}
    for name, value in (env or {}).items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise PrimeConfigError(
                f"env: {name!r} is not a valid environment variable name (letters, digits and '_', "
                "not starting with a digit)"
            )
        if name in JOB_VARIABLES:
            raise PrimeConfigError(
                f"env: {name} is set by the job on every node and may not be overridden "
                f"({JOB_VARIABLES[name]})"
            )
        if value is None:
            raise PrimeConfigError(f"env: {name} is None; give it a value or leave it out")
        text = value if isinstance(value, str) else str(value)
        if "\0" in text:  # bash drops it: the node would get another value than the one given
            raise PrimeConfigError(f"env: {name} holds a NUL byte, which no environment variable can")
        checked[name] = text
    return checked


def node_env(
    nodes: Sequence[JobNode],
    rank: int,
    *,
    job_id: str,
    job_dir: str,
    master_port: int = DEFAULT_MASTER_PORT,
    gpus_per_node: int | None = None,
    env: Mapping[str, object] | None = None,
) -> dict[str, str]:
    """The environment of the node of ``rank``: the job's variables, then the user's ``env``.

    ``PRIME_GPUS_PER_NODE`` is left out when ``gpus_per_node`` is ``None``: the node then counts
    its GPUs at launch (``nvidia-smi -L``; 0 without it). ``PRIME_JOB_DIR`` is ``job_dir`` as given;
    a relative one is made absolute on the node at launch, as is ``PRIME_RESULT_FILE``.
    """
    if not nodes:
        raise PrimeConfigError("A job needs at least one node")
    if not 0 <= rank < len(nodes):
        raise PrimeConfigError(f"rank {rank} is not a node of this job (0 to {len(nodes) - 1})")
    if not 1 <= int(master_port) <= 65535:
        raise PrimeConfigError(f"master_port must be a TCP port (1 to 65535), not {master_port}")
    if gpus_per_node is not None and int(gpus_per_node) < 0:
        raise PrimeConfigError(f"gpus_per_node must be 0 or more, not {gpus_per_node}")
    master = nodes[0].address
    values = {
        "PRIME_NODE_RANK": str(rank),
        "PRIME_NUM_NODES": str(len(nodes)),
        "PRIME_NODE_IPS": ",".join(node.address for node in nodes),
        "PRIME_MASTER_ADDR": master,
        "PRIME_MASTER_PORT": str(int(master_port)),
        "PRIME_JOB_ID": job_id,
        "PRIME_JOB_DIR": job_dir,
        "PRIME_RESULT_FILE": f"{job_dir.rstrip('/')}/{RESULT_FILE_NAME}",
        "MASTER_ADDR": master,
        "MASTER_PORT": str(int(master_port)),
        "NODE_RANK": str(rank),
        "NNODES": str(len(nodes)),
    }
    if gpus_per_node is not None:
        values["PRIME_GPUS_PER_NODE"] = str(int(gpus_per_node))
    values.update(user_env(env))
    return values


__all__ = ["DEFAULT_MASTER_PORT", "JOB_VARIABLES", "RESULT_FILE_NAME", "node_env", "user_env"]
