"""Ownership records: which task instance of which deployment a user-named pod belongs to.

A derived name (:mod:`.pod_names`) says whose pod it is; a name the user chose says nothing, and
someone else (another deployment on the same key, a person, another task) may create a pod of the
same name at any moment. So the create operator writes a record itself, and a user-named pod is
this task instance's own only on proof:

* the pod's id came back in this try's create answer; or
* the record of this deployment names this task instance (deployment, DAG, run, task, map index:
  :meth:`PodOwner.same_task_instance`) **and this pod id** (written right after the create); or
* the record names this task instance with no pod id yet (written before the create request, whose
  answer may be lost) and exactly one live pod of the name is new (not seen in the lookup before
  the request, where that is known) and was created in the record's window: from
  :data:`CLOCK_SKEW` before it was written to its ``window`` (the create's own time budget,
  :func:`create_window`) plus :data:`CLOCK_SKEW` after (:func:`claim`). Two or more such pods prove
  nothing: none is taken, a person must choose. The window bounds the time in which someone else
  creating the same name is mistaken for this create: two deployments sharing a key must not
  create the same user-chosen name at the same moment.

Timestamps of runs decide nothing. The reaper reads the same records and proofs to judge
user-named pods like derived ones, and whoever deletes the pod deletes its record. A record also
says whether the pod may outlive its run (``outlives_run``): False when the create's DAG has a
teardown :class:`~airflow_provider_prime.operators.pod.PrimeTerminatePodOperator` downstream of it
(the DAG gives the pod back, so after the run a pod left billing is one whose teardown failed or
never ran, and the reaper deletes it); True otherwise, and for records written before the field.
A record without ``written_at`` (written by an earlier version) and without a pod id proves nothing.

The records live in Airflow Variables, written and read through the Task SDK
(:class:`VariableOwnerRecords`), key ``prime_pod_owner__<deployment>__<name>``; tests use
:class:`MemoryOwnerRecords`. A record that cannot be read (not JSON, a field missing or of the
wrong type, another name) counts as no record: nothing is adopted or deleted on its word.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from airflow_provider_prime.models import Pod, PodState
from airflow_provider_prime.operators._arguments import timestamp

#: The prefix of every ownership record's Variable key.
KEY_PREFIX = "prime_pod_owner__"
#: Airflow's limit on a Variable key.
_MAX_KEY = 250
#: Names used in a key as they are; any other name is hashed (a key goes into a URL path).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]+")
#: Seconds the API's clock and a worker's may disagree by (both normally follow NTP): a pod counts
#: as created in a record's window from this long before the record was written to this long
#: after its window ends.
CLOCK_SKEW = 60.0
#: Pod statuses of a pod that is gone or going: never a candidate of a record.
_GONE = frozenset({PodState.TERMINATED.value, PodState.DELETING.value})


class CreateBudget(Protocol):
    """The hook settings that bound how long a create request can take (``PrimeApiSettings``)."""

    @property
    def connect_timeout(self) -> float: ...
    @property
    def read_timeout(self) -> float: ...
    @property
    def max_retries(self) -> int: ...
    @property
    def backoff_max(self) -> float: ...
    @property
    def retry_after_max(self) -> float: ...


def create_window(settings: CreateBudget) -> float:
    """Seconds after its record is written within which a create request can have made its pod.

    The hook sends the POST once it may have arrived, and before that retries only a request that
    provably never left (refused connection, connect timeout) or a 429: at most ``1 + max_retries``
    attempts, each bounded by its connect and read timeouts, with at most ``max_retries`` waits of
    the longer of the backoff cap and the Retry-After cap between them. (An API that creates the pod
    after it stopped answering, later than that, is outside what a client can prove.)
    """
    attempts = 1 + max(int(settings.max_retries), 0)
    per_attempt = float(settings.connect_timeout) + float(settings.read_timeout)
    waits = (attempts - 1) * max(float(settings.backoff_max), float(settings.retry_after_max))
    return attempts * per_attempt + waits


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
    #: Epoch seconds when the record was written before the create request (None: an old record).
    written_at: float | None = None
    #: Seconds after ``written_at`` within which that create can have made the pod (:func:`create_window`).
    window: float | None = None
    #: Whether the pod may outlive its DAG run (no teardown downstream; old records: True). False:
    #: the reaper deletes it once its create succeeded and its run is over.
    outlives_run: bool = True

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
        times = {k: data.get(k) for k in ("written_at", "window")}  # absent from older records
        if not all(_seconds(v) for v in times.values()):
            raise ValueError("an ownership record's written_at and window are non-negative numbers or null")
        written_at, window = (None if v is None else float(v) for v in times.values())
        outlives_run = data.get("outlives_run", True)  # absent from older records: they outlive
        if not isinstance(outlives_run, bool):
            raise ValueError("an ownership record's outlives_run is true or false")
        return cls(
            **{k: data[k] for k in strings},
            map_index=index,
            pod_id=pod_id,
            written_at=written_at,
            window=window,
            outlives_run=outlives_run,
        )

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

    def created_in_window(self, pod: Pod) -> bool:
        """Whether ``pod`` was created when this record's create could have made it (see the module)."""
        created = timestamp(pod.created_at)
        if self.written_at is None or self.window is None or created is None:
            return False
        moment = created.timestamp()
        return self.written_at - CLOCK_SKEW <= moment <= self.written_at + self.window + CLOCK_SKEW

    def window_over(self, now: float) -> bool:
        """Whether no pod created from now on can be this record's create's (old records: True)."""
        if self.written_at is None or self.window is None:
            return True
        return now > self.written_at + self.window + CLOCK_SKEW


def _seconds(value: object) -> bool:
    """Whether ``value`` is null or a non-negative number (not a bool)."""
    if value is None:
        return True
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class Claim:
    """What a record proves among the live pods of its name: the pod, or why none.

    ``pod``: the pod the record proves its task instance's. ``candidates``: with no pod proven,
    the pods its create may have made when there are several (a person must choose).
    """

    pod: Pod | None
    why: str
    candidates: tuple[Pod, ...] = ()


def claim(record: PodOwner, pods: Iterable[Pod], seen: Collection[str] = ()) -> Claim:
    """The live pod of ``record.name`` that ``record`` proves its own, if any (see the module).

    ``seen``: the ids the task's lookup found before its create request (a pod listed then is not
    the create's). A record with a pod id proves that pod only; one without proves the single
    live pod that is not in ``seen`` and was created in its window.
    """
    live = [p for p in pods if p.name == record.name and p.status not in _GONE]
    if record.pod_id is not None:
        for pod in live:
            if pod.id == record.pod_id:
                return Claim(pod, f"its ownership record names pod {pod.id}")
        return Claim(None, f"its ownership record names pod {record.pod_id}, which is not live")
    if record.written_at is None or record.window is None:
        return Claim(None, "its ownership record names no pod and no time (written by an older version)")
    fresh = [p for p in live if p.id not in seen and record.created_in_window(p)]
    if len(fresh) == 1:
        return Claim(fresh[0], f"the one pod created in its create's window ({window_text(record)})")
    if not fresh:
        return Claim(None, f"no pod of the name was created in its create's window ({window_text(record)})")
    ids = ", ".join(p.id for p in fresh)
    return Claim(
        None,
        f"{len(fresh)} pods of the name were created in its create's window ({ids}): which one is its "
        "create's cannot be told, a person must choose",
        tuple(fresh),
    )


def window_text(record: PodOwner) -> str:
    """The record's window as a log says it."""
    if record.written_at is None or record.window is None:
        return "unknown"
    return f"{record.window:.0f} s from {record.written_at:.0f}, give or take {CLOCK_SKEW:.0f} s"


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
