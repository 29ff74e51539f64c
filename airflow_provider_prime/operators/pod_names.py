"""The names this provider gives the pods it creates, and how the reaper recognises them.

A pod's name is the only identity that survives a lost create answer, a killed worker and a retry:
Prime has no idempotency key, so "the pod of this task instance" is "the live pod with this name".
The name is derived from this deployment's identity (:mod:`airflow_provider_prime.deployment`) and
``(dag_id, run_id, task_id, map_index)``, and looks like
``airflow-train-3f9a1c8d2e4b7a10c5f3e9d1a2b4c6d8e0f1a3``: the marker ``airflow-``, a readable slug
of the task id (at most 20 characters), a hyphen, then 30 hex digits:

* 6 of a hash of the deployment: pods of another deployment sharing the key are never adopted,
  and its reaper leaves them alone;
* 12 of a hash of the DAG id (48 bits: among 10,000 DAG ids, the chance that any two share it is
  about 2 in 10 million);
* 12 of a hash of the whole task instance, deployment included.

At most 59 characters (:data:`MAX_NAME_LENGTH`), lowercase letters, digits and hyphens only, so it
fits any plausible name rule (a DNS label, 63).

The reaper cannot read the run back out of a hash, so it goes the other way: it asks Airflow which
task instances exist, derives their names and compares (see :mod:`.reaper`). The deployment and
DAG tags tell it whose pod it is and which DAG it came from without asking Airflow about every DAG.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

#: The prefix of every name this provider derives.
MARKER = "airflow-"
#: Characters of the task id kept in the name, for a human reading the pod list.
SLUG_LENGTH = 20
_DEPLOYMENT_TAG = 6
_DAG_TAG = 12
_TI_TAG = 12
#: The longest name :func:`derived_pod_name` gives.
MAX_NAME_LENGTH = len(MARKER) + SLUG_LENGTH + 1 + _DEPLOYMENT_TAG + _DAG_TAG + _TI_TAG
_DERIVED = re.compile(
    rf"{MARKER}[a-z0-9-]{{1,{SLUG_LENGTH}}}-(?P<deployment>[0-9a-f]{{{_DEPLOYMENT_TAG}}})"
    rf"(?P<dag>[0-9a-f]{{{_DAG_TAG}}})[0-9a-f]{{{_TI_TAG}}}"
)


@dataclass(frozen=True)
class DerivedName:
    """What a derived name says about its pod: whose deployment and which DAG (as tags)."""

    deployment_tag: str
    dag_tag: str


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()


def deployment_tag(deployment: str) -> str:
    """The part of a derived name that identifies the deployment."""
    return _digest("deployment", deployment)[:_DEPLOYMENT_TAG]


def dag_tag(dag_id: str) -> str:
    """The part of a derived name that identifies the DAG."""
    return _digest(dag_id)[:_DAG_TAG]


def derived_pod_name(
    dag_id: str, run_id: str, task_id: str, map_index: int | None = -1, *, deployment: str
) -> str:
    """The name of the pod of one task instance of one deployment (the same for every try of it)."""
    index = -1 if map_index is None else int(map_index)
    slug = re.sub(r"[^a-z0-9]+", "-", task_id.lower()).strip("-")[:SLUG_LENGTH].strip("-") or "task"
    ti_tag = _digest(deployment, dag_id, run_id, task_id, index)[:_TI_TAG]
    return f"{MARKER}{slug}-{deployment_tag(deployment)}{dag_tag(dag_id)}{ti_tag}"


def parse_derived_name(name: str | None) -> DerivedName | None:
    """The tags of a derived name, or ``None`` for any other name (a user's own, or an older scheme)."""
    match = _DERIVED.fullmatch(name or "")
    return DerivedName(match["deployment"], match["dag"]) if match else None
