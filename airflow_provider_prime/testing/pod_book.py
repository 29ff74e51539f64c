"""The live pods of a running simulator: each script with the moment it was added, on one clock.

Test code changes pods (add, remove, pin a state) from its thread while the server thread reads
them, so every access holds one lock. Pod time is ``(clock() - added) * time_scale``. Rendered pod
objects are cached per (phase, progress) as JSON bytes: a poll for 100 pods then costs dictionary
lookups, not 100 serialisations.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable
from typing import Any

from airflow_provider_prime.testing.clock import Clock
from airflow_provider_prime.testing.scenario import (
    Phase,
    PodScript,
    Scenario,
    steady_until,
    timeline_position,
)


class _Entry:
    """A pod in the book; remembers what it reports and for which span of pod time that holds."""

    __slots__ = ("added", "api_keys", "current", "fragments", "hi", "lo", "script", "starts")

    def __init__(self, script: PodScript, added: float) -> None:
        self.script = script
        self.added = added
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
        vanish_at = math.inf if script.vanish_at is None else script.vanish_at
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


def with_timeline(script: PodScript, timeline: Iterable[Phase], **changes: Any) -> PodScript:
    """A copy of ``script`` with another timeline (validated afresh, unlike ``model_copy``)."""
    fields = {name: getattr(script, name) for name in script.model_fields_set}
    fields.update(changes, timeline=tuple(timeline))
    return PodScript(**fields)


class PodBook:
    """The pods a simulator serves, with their clocks."""

    def __init__(self, clock: Clock, time_scale: float = 1.0) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self._clock = clock
        self._scale = time_scale
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    @property
    def time_scale(self) -> float:
        return self._scale

    def load(self, scenario: Scenario) -> None:
        """Serve exactly the pods of ``scenario``, all starting their timelines now."""
        now = self._clock()
        with self._lock:
            self._entries = {pod.pod_id: _Entry(pod, now) for pod in scenario.pods}

    def add(self, script: PodScript) -> None:
        """Add a pod (replacing one with the same id); its timeline starts now."""
        now = self._clock()
        with self._lock:
            self._entries[script.pod_id] = _Entry(script, now)

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
            self._entries[pod_id] = _Entry(pinned, entry.added)

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
                if entry is None or (
                    api_key is not None and entry.api_keys is not None and api_key not in entry.api_keys
                ):
                    continue
                fragment = entry.fragment((now - entry.added) * scale)
                if fragment is not None:
                    out.append(fragment)
        return out
