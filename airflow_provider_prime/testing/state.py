"""Everything a simulator knows, and the operations tests use to steer it while it serves.

:class:`SimulatorState` is the part of :class:`~airflow_provider_prime.testing.PrimeSimulator`
that has nothing to do with sockets: the pods and their clock, the armed faults, the statistics.
The HTTP control endpoints (``/_sim/...``) call the very same methods, so in-process and
out-of-process steering behave alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow_provider_prime.testing.builtin import resolve_scenario
from airflow_provider_prime.testing.clock import Clock, real_clock
from airflow_provider_prime.testing.faults import Fault, FaultBook
from airflow_provider_prime.testing.pod_book import PodBook
from airflow_provider_prime.testing.scenario import Phase, PodScript, Scenario
from airflow_provider_prime.testing.stats import SimulatorStats

#: The API key a simulator accepts unless told otherwise.
DEFAULT_API_KEY = "test-key"
#: Most pod ids one status request may carry before the simulator answers 422.
DEFAULT_MAX_POD_IDS = 100

ScenarioSpec = Scenario | Mapping[str, Any] | str | Path | None


class SimulatorState:
    """Pods, faults and statistics of one simulator, safe to steer from any thread."""

    def __init__(
        self,
        scenario: ScenarioSpec = None,
        *,
        api_keys: Sequence[str] = (DEFAULT_API_KEY,),
        time_scale: float = 1.0,
        clock: Clock | None = None,
        max_pod_ids: int | None = DEFAULT_MAX_POD_IDS,
        log_size: int = 10_000,
    ) -> None:
        if not api_keys or any(not key for key in api_keys):
            raise ValueError("the simulator needs at least one non-empty API key")
        self.api_keys: tuple[str, ...] = tuple(api_keys)
        self.max_pod_ids = max_pod_ids
        self.clock: Clock = clock or real_clock
        self.pods = PodBook(self.clock, time_scale)
        self.fault_book = FaultBook()
        self.stats = SimulatorStats(log_size)
        self._scenario = resolve_scenario(scenario)
        self.pods.load(self._scenario)

    @property
    def api_key(self) -> str:
        """The first accepted API key (the one to configure a connection with)."""
        return self.api_keys[0]

    @property
    def scenario(self) -> Scenario:
        """The scenario last loaded (pods added or changed since are not part of it)."""
        return self._scenario

    @property
    def time_scale(self) -> float:
        return self.pods.time_scale

    # pods ------------------------------------------------------------------------------------------

    def set_scenario(self, scenario: ScenarioSpec) -> Scenario:
        """Serve another scenario (object, plain data, built-in name or JSON file); clocks start now."""
        self._scenario = resolve_scenario(scenario)
        self.pods.load(self._scenario)
        return self._scenario

    def add_pod(self, *scripts: PodScript) -> None:
        """Add pods (replacing any with the same id); their timelines start now."""
        for script in scripts:
            self.pods.add(script)

    def remove_pod(self, pod_id: str) -> bool:
        """Make a pod vanish from every answer from now on. False if it did not exist."""
        return self.pods.remove(pod_id)

    def set_pod_state(self, pod_id: str, status: str | None = None, **fields: Any) -> Phase:
        """Pin what a pod reports from now on; fields not given keep their current value.

        ``fields`` are :class:`Phase` fields (``installation_status``, ``installation_progress``,
        ``installation_failure``, ``ssh_nodes``, ``ip_nodes``, ``ssh_connection``, ``ip``,
        ``extra_fields``). The pod stops following its timeline. Raises KeyError for an unknown pod.
        """
        script = next((s for s in self.pods.scripts() if s.pod_id == pod_id), None)
        if script is None:
            raise KeyError(pod_id)
        index, progress = script.position(self.pods.pod_time(pod_id))
        current = script.timeline[index]
        base = current.model_dump(exclude_unset=True)
        base["installation_progress"] = progress
        if status is not None:
            fields["status"] = status
        for count, verbatim in (("ssh_nodes", "ssh_connection"), ("ip_nodes", "ip")):
            if count in fields:  # a new node count replaces a verbatim value of the current phase
                base.pop(verbatim, None)
        phase = Phase(**{**base, **fields, "at": 0.0})
        self.pods.pin(pod_id, phase)
        return phase

    def pod_status(self, pod_id: str, api_key: str | None = None) -> dict[str, Any] | None:
        """What the status endpoint reports for ``pod_id`` now (None if absent), as plain JSON data."""
        found = self.pods.report([pod_id], api_key)
        return found[0] if found else None

    # faults ------------------------------------------------------------------------------------------

    def inject(self, *faults: Fault | Mapping[str, Any]) -> list[int]:
        """Arm faults (objects or their JSON form); returns their ids, in order."""
        now = self.clock()
        return [self.fault_book.arm(Fault.model_validate(fault), now) for fault in faults]

    def clear_faults(self, fault_id: int | None = None) -> None:
        """Disarm one fault by id, or all of them."""
        self.fault_book.disarm(fault_id)

    @property
    def faults(self) -> list[dict[str, Any]]:
        """The armed faults, with ``remaining`` strikes and ``hits`` so far."""
        return self.fault_book.describe()

    def stats_snapshot(self, log: int | None = 0) -> dict[str, Any]:
        """The statistics as plain data, as ``GET /_sim/stats`` gives them (last ``log`` entries)."""
        return self.stats.snapshot(log_limit=log)

    # everything ------------------------------------------------------------------------------------

    def reset(self, *, stats: bool = True, faults: bool = True, scenario: bool = False) -> None:
        """Forget statistics and disarm faults; with ``scenario=True`` also restart the scenario."""
        if stats:
            self.stats.reset()
        if faults:
            self.fault_book.disarm()
        if scenario:
            self.pods.load(self._scenario)

    def pod_ids(self) -> Iterable[str]:
        """Ids of every pod served now, visible or not."""
        return [script.pod_id for script in self.pods.scripts()]
