"""The live pods of a running simulator: each script with the moment it was added, on one clock.

Test code changes pods (add, remove, pin a state) from its thread while the server thread reads
them, so every access holds one lock. Pod time is ``(clock() - added) * time_scale``. Rendered pod
objects are cached per (phase, progress) as JSON bytes: a poll for 100 pods then costs dictionary
lookups, not 100 serialisations.

The book also answers the whole-pod endpoints (list, get, history) and keeps what billing needs:
when each pod was added (its creation), who owns it, whether a DELETE reached it. Timestamps on
the wire are the simulator's wall time at creation plus pod seconds, so a history item's
``terminatedAt - createdAt`` is the time it was billed for.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from airflow_provider_prime.testing.clock import Clock
from airflow_provider_prime.testing.scenario import (
    Phase,
    PodScript,
    Scenario,
    steady_until,
    timeline_position,
)
from airflow_provider_prime.testing.shapes import history_item, pod_object

#: Status of a pod from its deletion until it is terminated, and after.
DELETING = "DELETING"
TERMINATED = "TERMINATED"


def served(script: PodScript) -> PodScript:
    """The script as served: from ``deleted_at`` on, the pod reports DELETING (then it is gone).

    Idempotent, so a script that already went through it (a pinned or re-added pod) is unchanged.
    """
    if script.deleted_at is None:
        return script
    at = script.deleted_at
    index, progress = script.position(at)
    kept = [phase for phase in script.timeline if phase.at < at]
    deleting = script.timeline[index].model_copy(
        update={"at": at, "status": DELETING, "installation_progress": progress}
    )
    return with_timeline(script, [*kept, deleting])


@dataclass(frozen=True)
class Billed:
    """What one pod has cost so far (pod seconds from creation to termination, or to now)."""

    pod_id: str
    name: str
    origin: str
    status: str
    price_hr: float | None
    seconds: float
    billing: bool
    deleted: bool

    @property
    def cost(self) -> float:
        return (self.price_hr or 0.0) * self.seconds / 3600


class _Entry:
    """A pod in the book; remembers what it reports and for which span of pod time that holds."""

    __slots__ = (
        "added",
        "api_keys",
        "created",
        "current",
        "deleted",
        "fragments",
        "hi",
        "lo",
        "origin",
        "owner",
        "script",
        "starts",
    )

    def __init__(
        self,
        script: PodScript,
        added: float,
        *,
        created: float,
        origin: str = "scenario",
        owner: str = "",
        deleted: bool = False,
    ) -> None:
        script = served(script)
        self.script = script
        self.added = added
        self.created = created  # wall-clock epoch seconds of the creation
        self.origin = origin  # "scenario", "control" (added by a test) or "api" (POST /pods/)
        self.owner = owner
        self.deleted = deleted  # a DELETE request reached it
        self.starts = [phase.at for phase in script.timeline]
        self.api_keys = None if script.api_keys is None else frozenset(script.api_keys)
        self.fragments: dict[tuple[int, int | None], bytes] = {}
        self.lo = self.hi = 0.0  # [lo, hi): pod times for which ``current`` is the answer
        self.current: bytes | None = None

    def fragment(self, t: float) -> bytes | None:
        """The pod's JSON object at pod time ``t``, or None while it is not listed."""
        if self.lo <= t < self.hi:
            return self.current
        script = self.script
        vanish_at = script.billed_until()
        current: bytes | None = None
        if t < script.visible_from:
            lo, hi = -math.inf, script.visible_from
        elif t >= vanish_at:
            lo, hi = vanish_at, math.inf
        else:
            position = timeline_position(script.timeline, self.starts, t)
            current = self.fragments.get(position)
            if current is None:
                current = self.fragments[position] = json.dumps(script.render(*position)).encode()
            index = position[0]
            lo = max(self.starts[index] if index else -math.inf, script.visible_from)
            hi = min(steady_until(script.timeline, index), vanish_at)  # -inf: progress moves, no caching
        self.lo, self.hi, self.current = lo, hi, current
        return current

    def copy(self, script: PodScript, **changes: Any) -> _Entry:
        """This entry with another script (and other bookkeeping given in ``changes``)."""
        fields = {
            "created": self.created,
            "origin": self.origin,
            "owner": self.owner,
            "deleted": self.deleted,
        }
        return _Entry(script, self.added, **{**fields, **changes})

    def status(self, t: float) -> str:
        """The pod's status at pod time ``t``, TERMINATED once deleted (whether listed or not)."""
        terminated_at = self.script.terminated_at
        if terminated_at is not None and t >= terminated_at:
            return TERMINATED
        return self.script.timeline[self.script.position(t)[0]].status

    def pod(self, t: float, now_wall: float) -> dict[str, Any]:
        """The ``Pod`` object at pod time ``t`` (a terminated pod keeps its last fields, no addresses)."""
        script = self.script
        report = script.render(*script.position(t))
        terminated_at = script.terminated_at
        ended = terminated_at is not None and t >= terminated_at
        if ended:
            report.update(status=TERMINATED, sshConnection=None, ip=None)
        return pod_object(
            script,
            report,
            created_at=self.created,
            updated_at=now_wall,
            terminated_at=self.created + terminated_at if ended and terminated_at is not None else None,
            owner=self.owner,
        )

    def billed(self, t: float) -> Billed:
        script = self.script
        end = script.billed_until()
        return Billed(
            pod_id=script.pod_id,
            name=script.display_name,
            origin=self.origin,
            status=self.status(t),
            price_hr=script.price_hr,
            seconds=max(min(t, end), 0.0),
            billing=t < end,
            deleted=self.deleted,
        )


def _reported(ssh: Any, nodes: int) -> tuple[bool, ...]:
    """Per node, whether an ``sshConnection`` value (text, a list with nulls, or null) names it."""
    if isinstance(ssh, str):
        given = [bool(ssh.strip())]
    elif isinstance(ssh, list):
        given = [isinstance(value, str) and bool(value.strip()) for value in ssh]
    else:
        given = []
    return tuple(given[:nodes] + [False] * (nodes - len(given)))


def _fields(script: PodScript) -> dict[str, Any]:
    return {name: getattr(script, name) for name in script.model_fields_set}


def _sees(entry: _Entry, api_key: str | None) -> bool:
    return api_key is None or entry.api_keys is None or api_key in entry.api_keys


def with_timeline(script: PodScript, timeline: Iterable[Phase], **changes: Any) -> PodScript:
    """A copy of ``script`` with another timeline (validated afresh, unlike ``model_copy``)."""
    fields = _fields(script)
    fields.update(changes, timeline=tuple(timeline))
    return PodScript(**fields)


class PodBook:
    """The pods a simulator serves, with their clocks."""

    def __init__(self, clock: Clock, time_scale: float = 1.0, owner: str = "") -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self._clock = clock
        self._scale = time_scale
        self._owner = owner
        self._epoch = time.time() - clock()  # wall time = epoch + clock()
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    @property
    def time_scale(self) -> float:
        return self._scale

    def load(self, scenario: Scenario) -> None:
        """Serve exactly the pods of ``scenario``, all starting their timelines now."""
        now = self._clock()
        with self._lock:
            self._entries = {
                pod.pod_id: _Entry(pod, now, created=self._epoch + now, owner=self._owner)
                for pod in scenario.pods
            }

    def add(self, script: PodScript, *, origin: str = "control", owner: str | None = None) -> None:
        """Add a pod (replacing one with the same id); its timeline starts now."""
        now = self._clock()
        entry = _Entry(script, now, created=self._epoch + now, origin=origin, owner=owner or self._owner)
        with self._lock:
            self._entries[script.pod_id] = entry

    def delete(self, pod_id: str, deleting_for: float, api_key: str | None = None) -> str | None:
        """Delete a pod as ``DELETE /pods/{id}`` does; its status after the call, None if unknown.

        A pod already deleting or terminated is left as it is (deleting twice succeeds).
        """
        with self._lock:
            found = self._at(pod_id, api_key)
            if found is None:
                return None
            entry, t, _ = found
            if entry.script.deleted_at is not None and t >= entry.script.deleted_at:
                return entry.status(t)
            changes = {"deleted_at": t, "deleting_for": deleting_for}
            script = PodScript(**{**_fields(entry.script), **changes})
            self._entries[pod_id] = entry = entry.copy(script, deleted=True)
            return entry.status(t)

    def pod(
        self, pod_id: str, api_key: str | None = None, *, terminated: bool = True
    ) -> dict[str, Any] | None:
        """``GET /pods/{id}``: the pod now; None if unknown, hidden, or terminated (``terminated`` False)."""
        with self._lock:
            found = self._at(pod_id, api_key)
            if found is None:
                return None
            entry, t, now = found
            ended = entry.script.terminated_at is not None and t >= entry.script.terminated_at
            if t < entry.script.visible_from or (ended and not terminated):
                return None
            return entry.pod(t, self._epoch + now)

    def _at(self, pod_id: str, api_key: str | None) -> tuple[_Entry, float, float] | None:
        """(entry, its pod time, the clock) of a pod this key sees and that has not vanished."""
        now = self._clock()
        entry = self._entries.get(pod_id)
        if entry is None or not _sees(entry, api_key):
            return None
        t = (now - entry.added) * self._scale
        if entry.script.vanish_at is not None and t >= entry.script.vanish_at:
            return None
        return entry, t, now

    def listed(self, api_key: str | None = None) -> list[dict[str, Any]]:
        """``GET /pods/``: every pod listed now (not terminated), oldest first."""
        now = self._clock()
        with self._lock:
            entries = [entry for entry in self._entries.values() if _sees(entry, api_key)]
            pods = []
            for entry in sorted(entries, key=lambda e: e.added):
                t = (now - entry.added) * self._scale
                if entry.script.visible_at(t):
                    pods.append(entry.pod(t, self._epoch + now))
            return pods

    def history(self, api_key: str | None = None) -> list[dict[str, Any]]:
        """``GET /pods/history``: every terminated pod, with what it was billed."""
        now = self._clock()
        items = []
        with self._lock:
            for entry in self._entries.values():
                terminated_at = entry.script.terminated_at
                t = (now - entry.added) * self._scale
                if not _sees(entry, api_key) or terminated_at is None or t < terminated_at:
                    continue
                items.append(
                    history_item(
                        entry.script,
                        created_at=entry.created,
                        terminated_at=entry.created + terminated_at,
                        owner=entry.owner,
                        billed=entry.billed(t).cost,
                    )
                )
        return items

    def billed(self) -> list[Billed]:
        """What every pod has cost so far, in the order they were added."""
        now = self._clock()
        with self._lock:
            entries = sorted(self._entries.values(), key=lambda e: e.added)
            return [entry.billed((now - entry.added) * self._scale) for entry in entries]

    def remove(self, pod_id: str) -> bool:
        """Forget a pod: from now on it is absent from every answer. False if there was none."""
        with self._lock:
            return self._entries.pop(pod_id, None) is not None

    def pin(self, pod_id: str, phase: Phase) -> None:
        """Make a pod report ``phase`` from now on, whatever its timeline said (KeyError if unknown)."""
        with self._lock:
            entry = self._entries[pod_id]
            timeline = [phase.model_copy(update={"at": 0.0})]
            pinned = with_timeline(entry.script, timeline, vanish_at=None, visible_from=0.0)
            self._entries[pod_id] = entry.copy(pinned)

    def ssh_views(self) -> dict[str, tuple[str, tuple[bool, ...]]]:
        """Every pod's status now and, per node, whether the API reports its SSH connection.

        What a simulator's SSH nodes follow (:mod:`~airflow_provider_prime.testing.ssh_pods`). A
        pod that vanished is left out, as if removed; a terminated one is TERMINATED.
        """
        now = self._clock()
        views: dict[str, tuple[str, tuple[bool, ...]]] = {}
        with self._lock:
            for pod_id, entry in self._entries.items():
                script = entry.script
                t = (now - entry.added) * self._scale
                if script.vanish_at is not None and t >= script.vanish_at:
                    continue
                status = entry.status(t)
                ssh = None if status == TERMINATED else script.render(*script.position(t))["sshConnection"]
                views[pod_id] = (status, _reported(ssh, script.nodes))
        return views

    def scripts(self) -> list[PodScript]:
        with self._lock:
            return [entry.script for entry in self._entries.values()]

    def pod_time(self, pod_id: str) -> float:
        """Seconds of pod time since the pod was added (KeyError if unknown)."""
        with self._lock:
            added = self._entries[pod_id].added
        return (self._clock() - added) * self._scale

    def report(self, pod_ids: Iterable[str], api_key: str | None = None) -> list[dict[str, Any]]:
        """The pod objects the API returns now for these ids, each once, unknown or hidden ones left out.

        ``api_key`` None ignores per-key visibility (for control and debugging views).
        """
        return [json.loads(fragment) for fragment in self.report_json(pod_ids, api_key)]

    def report_json(self, pod_ids: Iterable[str], api_key: str | None = None) -> list[bytes]:
        """:meth:`report` as one serialised JSON object per pod."""
        now = self._clock()
        out = []
        with self._lock:
            entries, scale = self._entries, self._scale
            for pod_id in dict.fromkeys(pod_ids):
                entry = entries.get(pod_id)
                if entry is None or not _sees(entry, api_key):
                    continue
                fragment = entry.fragment((now - entry.added) * scale)
                if fragment is not None:
                    out.append(fragment)
        return out
