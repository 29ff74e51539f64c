"""The live pods of a running simulator: each script with the moment it was added, on one clock.

Test code changes pods (add, remove, pin a state) from its thread while the server thread reads
them, so every access holds one lock. Pod time is ``(clock() - added) * time_scale``. Rendered pod
objects are cached per (phase, progress) as JSON bytes: a poll for 100 pods then costs dictionary
lookups, not 100 serialisations.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from typing import Any

from airflow_provider_prime.testing.clock import Clock
from airflow_provider_prime.testing.scenario import Phase, PodScript, Scenario


class _Entry:
    __slots__ = ("added", "fragments", "script")

    def __init__(self, script: PodScript, added: float) -> None:
        self.script = script
        self.added = added
        self.fragments: dict[tuple[int, int | None], bytes] = {}


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
            entries = self._entries
            for pod_id in dict.fromkeys(pod_ids):
                entry = entries.get(pod_id)
                if entry is None:
                    continue
                script = entry.script
                t = (now - entry.added) * self._scale
                if not script.visible_at(t) or (api_key is not None and not script.visible_to(api_key)):
                    continue
                position = script.position(t)
                fragment = entry.fragments.get(position)
                if fragment is None:
                    fragment = json.dumps(script.render(*position)).encode()
                    entry.fragments[position] = fragment
                out.append(fragment)
        return out
