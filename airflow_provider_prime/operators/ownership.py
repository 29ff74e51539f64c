"""Ownership records: which task instance of which deployment a user-named pod belongs to.

A derived name (:mod:`.pod_names`) says whose pod it is; a name the user chose says nothing. So
the create operator writes a record itself: before its create request (``pod_id`` still ``None``:
the create may reach the server even if its answer is lost) and again with the pod id after it. A
pod found by name is this task instance's own only when its record names the same deployment, DAG,
run, task and map index (:meth:`PodOwner.same_task_instance`); timestamps decide nothing. The
reaper reads the same records to judge user-named pods like derived ones, and whoever deletes the
pod deletes its record.

The records live in Airflow Variables, written and read through the Task SDK
(:class:`VariableOwnerRecords`), key ``prime_pod_owner__<deployment>__<name>``; tests use
:class:`MemoryOwnerRecords`. A record that cannot be read (not JSON, a field missing or of the
wrong type, another name) counts as no record: nothing is adopted or deleted on its word.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

#: The prefix of every ownership record's Variable key.
KEY_PREFIX = "prime_pod_owner__"
#: Airflow's limit on a Variable key.
_MAX_KEY = 250
#: Names used in a key as they are; any other name is hashed (a key goes into a URL path).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True)
class PodOwner:
    """The task instance that created (or is creating) the pod ``name``; ``pod_id`` once known."""

    deployment: str
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    name: str
    pod_id: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PodOwner:
        """The record in ``text``; :class:`ValueError` when it is not one (see :func:`parse_owner`)."""
        data: Any = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("an ownership record is a JSON object")
        strings = ("deployment", "dag_id", "run_id", "task_id", "name")
        if not all(isinstance(data.get(k), str) and data[k] for k in strings):
            raise ValueError(f"an ownership record needs the non-empty strings {', '.join(strings)}")
        index, pod_id = data.get("map_index"), data.get("pod_id")
        if not isinstance(index, int) or isinstance(index, bool):
            raise ValueError("an ownership record's map_index is an integer")
        if pod_id is not None and not (isinstance(pod_id, str) and pod_id):
            raise ValueError("an ownership record's pod_id is a non-empty string or null")
        return cls(**{k: data[k] for k in strings}, map_index=index, pod_id=pod_id)

    def with_pod_id(self, pod_id: str) -> PodOwner:
        return replace(self, pod_id=pod_id)

    def same_task_instance(self, other: PodOwner) -> bool:
        """Whether both name one task instance of one deployment (the pod id aside)."""
        return (self.deployment, self.dag_id, self.run_id, self.task_id, self.map_index) == (
            other.deployment,
            other.dag_id,
            other.run_id,
            other.task_id,
            other.map_index,
        )

    def describe(self) -> str:
        index = "" if self.map_index < 0 else f"[{self.map_index}]"
        return f"{self.dag_id} / {self.run_id} / {self.task_id}{index}"


def parse_owner(text: object) -> PodOwner | None:
    """The record in ``text``, or ``None`` when there is none to read (never raises)."""
    if not isinstance(text, str):
        return None
    try:
        return PodOwner.from_json(text)
    except (ValueError, TypeError):
        return None


def record_key(deployment: str, name: str) -> str:
    """The Variable key of the record of pod ``name`` in ``deployment``.

    ``prime_pod_owner__<deployment>__<name>``; a name with other characters than letters, digits,
    ``.``, ``_`` and ``-`` (a key goes into a URL path), or too long for Airflow's 250, is replaced
    by ``~`` and a hash of it (``~`` is in no plain name, so the two kinds of key never meet).
    """
    key = f"{KEY_PREFIX}{deployment}__{name}"
    if _PLAIN_NAME.fullmatch(name) and len(key) <= _MAX_KEY:
        return key
    return f"{KEY_PREFIX}{deployment}__~{hashlib.sha256(name.encode()).hexdigest()}"


class OwnerRecords(Protocol):
    """Where ownership records are kept."""

    def get(self, deployment: str, name: str) -> PodOwner | None: ...

    def put(self, owner: PodOwner) -> None: ...

    def delete(self, deployment: str, name: str) -> None: ...


def _matching(owner: PodOwner | None, deployment: str, name: str) -> PodOwner | None:
    if owner is None or owner.deployment != deployment or owner.name != name:
        return None
    return owner


class VariableOwnerRecords:
    """Ownership records in Airflow Variables, through the Task SDK (so only inside a running task).

    Checked in a real task on Airflow 3.1.0 and 3.3.2. A lookup of a name without a record is a
    missing Variable: Airflow 3.1's own client logs it as an error line ("Variable not found"),
    which is expected and harmless.
    """

    def get(self, deployment: str, name: str) -> PodOwner | None:
        from airflow.sdk import Variable

        return _matching(
            parse_owner(Variable.get(record_key(deployment, name), default=None)), deployment, name
        )

    def put(self, owner: PodOwner) -> None:
        from airflow.sdk import Variable

        Variable.set(
            record_key(owner.deployment, owner.name),
            owner.to_json(),
            description=f"airflow-provider-prime: pod {owner.name!r} belongs to {owner.describe()}",
        )

    def delete(self, deployment: str, name: str) -> None:
        from airflow.sdk import Variable

        key = record_key(deployment, name)
        if Variable.get(key, default=None) is not None:
            Variable.delete(key)


class MemoryOwnerRecords:
    """Ownership records in a dict, as JSON text like the real store (tests, the model test)."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}

    def get(self, deployment: str, name: str) -> PodOwner | None:
        return _matching(parse_owner(self.texts.get(record_key(deployment, name))), deployment, name)

    def put(self, owner: PodOwner) -> None:
        self.texts[record_key(owner.deployment, owner.name)] = owner.to_json()

    def delete(self, deployment: str, name: str) -> None:
        self.texts.pop(record_key(deployment, name), None)
