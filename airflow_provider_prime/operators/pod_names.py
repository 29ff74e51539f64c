"""The names this provider gives the pods it creates, and how the reaper recognises them.

A pod's name is the only identity that survives a lost create answer, a killed worker and a retry:
Prime has no idempotency key, so "the pod of this task instance" is "the live pod with this name".
The name is derived from ``(dag_id, run_id, task_id, map_index)`` and looks like
``airflow-train-3f9a1c8d2e4b7a10c5``: the marker ``airflow-``, a readable slug of the task id, then
six hex digits of a hash of the DAG id and ten of a hash of the whole task-instance key. At most
49 characters, lowercase letters, digits and hyphens only, so it fits any plausible name rule.

The reaper cannot read the run back out of a hash, so it goes the other way: it asks Airflow which
task instances exist, derives their names and compares (see :mod:`.reaper`). The DAG hash tells it
which DAG a pod came from without asking Airflow about every DAG.
"""

from __future__ import annotations

import hashlib
import json
import re

#: The prefix of every name this provider derives; pods named otherwise are never reaped.
MARKER = "airflow-"
#: Characters of the task id kept in the name, for a human reading the pod list.
SLUG_LENGTH = 20
_DAG_HASH = 6
_TI_HASH = 10
_DERIVED = re.compile(
    rf"{MARKER}[a-z0-9-]{{1,{SLUG_LENGTH}}}-(?P<dag>[0-9a-f]{{{_DAG_HASH}}})[0-9a-f]{{{_TI_HASH}}}"
)


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()


def dag_hash(dag_id: str) -> str:
    """The part of a derived name that identifies the DAG."""
    return _digest(dag_id)[:_DAG_HASH]


def derived_pod_name(dag_id: str, run_id: str, task_id: str, map_index: int | None = -1) -> str:
    """The name of the pod of one task instance (the same for every try of it)."""
    index = -1 if map_index is None else int(map_index)
    slug = re.sub(r"[^a-z0-9]+", "-", task_id.lower()).strip("-")[:SLUG_LENGTH].strip("-") or "task"
    return f"{MARKER}{slug}-{dag_hash(dag_id)}{_digest(dag_id, run_id, task_id, index)[:_TI_HASH]}"


def dag_hash_of(name: str | None) -> str | None:
    """The DAG hash of a derived name, or ``None`` for any other name (a user's own)."""
    match = _DERIVED.fullmatch(name or "")
    return match["dag"] if match else None
