"""What the simulator was asked: counters and a bounded request log, for assertions and benchmarks.

The server thread records, test code reads: every access goes through one lock, and reads return
copies. Control requests (``/_sim/...``) are not counted. A request whose connection was dropped
or left hanging by a fault has status :data:`NO_RESPONSE` (0).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_prime.testing.ssh_farm import FarmStats

#: The status recorded for a request that got no HTTP response (dropped or hung connection).
NO_RESPONSE = 0
#: The key recorded for a request without a bearer token.
NO_KEY = ""


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the simulator saw it."""

    time: float  # epoch seconds when it arrived
    method: str
    path: str
    pod_ids: tuple[str, ...]
    api_key: str  # the bearer token presented ("" if none), accepted or not
    status: int  # HTTP status sent, NO_RESPONSE if none
    note: str | None = None  # the fault that shaped the reply, if any


class SimulatorStats:
    """Thread-safe request counters and a log of the last ``log_size`` requests."""

    def __init__(self, log_size: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._log: deque[RequestRecord] = deque(maxlen=log_size)
        self._total = 0
        self._by_path: Counter[str] = Counter()
        self._by_method_path: Counter[str] = Counter()
        self._by_pod_id: Counter[str] = Counter()
        self._by_key: Counter[str] = Counter()
        self._by_status: Counter[int] = Counter()
        #: Where :attr:`nodes` comes from: set by a simulator with SSH nodes.
        self.nodes_source: Callable[[], FarmStats] | None = None

    def record(
        self,
        method: str,
        path: str,
        pod_ids: Iterable[str],
        api_key: str,
        status: int,
        note: str | None = None,
    ) -> None:
        entry = RequestRecord(time.time(), method, path, tuple(pod_ids), api_key, status, note)
        with self._lock:
            self._total += 1
            self._by_path[path] += 1
            self._by_method_path[f"{method} {path}"] += 1
            self._by_pod_id.update(entry.pod_ids)
            self._by_key[api_key] += 1
            self._by_status[status] += 1
            self._log.append(entry)

    def reset(self) -> None:
        """Forget everything recorded so far."""
        with self._lock:
            self._total = 0
            counters = (self._by_path, self._by_method_path, self._by_pod_id, self._by_key, self._by_status)
            for counter in counters:
                counter.clear()
            self._log.clear()

    @property
    def total(self) -> int:
        """Requests recorded (control requests excluded)."""
        with self._lock:
            return self._total

    @property
    def by_path(self) -> Counter[str]:
        with self._lock:
            return Counter(self._by_path)

    @property
    def by_method_path(self) -> Counter[str]:
        """Requests per ``"METHOD path"`` (e.g. ``"POST /api/v1/pods/"``), paths as sent."""
        with self._lock:
            return Counter(self._by_method_path)

    @property
    def by_pod_id(self) -> Counter[str]:
        """How many requests asked for each pod id (each occurrence of ``pod_ids=`` counts)."""
        with self._lock:
            return Counter(self._by_pod_id)

    @property
    def by_key(self) -> Counter[str]:
        """Requests per presented bearer token (``""`` when none)."""
        with self._lock:
            return Counter(self._by_key)

    @property
    def by_status(self) -> Counter[int]:
        with self._lock:
            return Counter(self._by_status)

    @property
    def nodes(self) -> FarmStats | None:
        """The SSH nodes' counters (launches and processes alive per node), None without SSH nodes.

        Read once removals under way have finished, and not cleared by :meth:`reset`: a node counts
        from its creation to the simulator's end, a removed pod's nodes included.
        """
        source = self.nodes_source
        return None if source is None else source()

    @property
    def log(self) -> list[RequestRecord]:
        """The most recent requests, oldest first."""
        with self._lock:
            return list(self._log)

    def snapshot(self, log_limit: int | None = 0) -> dict[str, Any]:
        """All counters as plain JSON data, with the last ``log_limit`` log entries (None: all)."""
        with self._lock:
            log = list(self._log)
            data: dict[str, Any] = {
                "total": self._total,
                "by_path": dict(self._by_path),
                "by_method_path": dict(self._by_method_path),
                "by_pod_id": dict(self._by_pod_id),
                "by_key": dict(self._by_key),
                "by_status": {str(status): count for status, count in self._by_status.items()},
            }
        if log_limit is None or log_limit > 0:
            tail = log if log_limit is None else log[-log_limit:]
            data["log"] = [{**asdict(entry), "pod_ids": list(entry.pod_ids)} for entry in tail]
        return data
