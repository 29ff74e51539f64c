"""Everything a simulator knows, and the operations tests use to steer it while it serves.

:class:`SimulatorState` is the part of :class:`~airflow_provider_prime.testing.PrimeSimulator`
that has nothing to do with sockets: the pods and their clock, the armed faults, the statistics.
The HTTP control endpoints (``/_sim/...``) call the very same methods, so in-process and
out-of-process steering behave alike.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_prime.testing.builtin import ScenarioSpec, resolve_scenario
from airflow_provider_prime.testing.clock import Clock, real_clock
from airflow_provider_prime.testing.create import CreateRequest
from airflow_provider_prime.testing.faults import Fault, FaultBook
from airflow_provider_prime.testing.lifecycles import provisioned_pod
from airflow_provider_prime.testing.offers import Offer
from airflow_provider_prime.testing.pod_book import PodBook
from airflow_provider_prime.testing.scenario import CreateLifecycle, Phase, PodScript, Scenario
from airflow_provider_prime.testing.shapes import SSH_PORT_MAPPING, user_id
from airflow_provider_prime.testing.stats import SimulatorStats

if TYPE_CHECKING:
    from airflow_provider_prime.testing.ssh_farm import FarmStats
    from airflow_provider_prime.testing.ssh_pods import PodNodes

__all__ = ["DEFAULT_API_KEY", "DEFAULT_MAX_POD_IDS", "ScenarioSpec", "SimulatorState"]

#: The API key a simulator accepts unless told otherwise.
DEFAULT_API_KEY = "test-key"
#: Most pod ids one status request may carry before the simulator answers 422.
DEFAULT_MAX_POD_IDS = 100
_KEEP = object()


class SimulatorState:
    """Pods, faults and statistics of one simulator, safe to steer from any thread."""

    def __init__(
        self,
        scenario: ScenarioSpec = None,
        *,
        api_keys: Sequence[str] = (DEFAULT_API_KEY,),
        read_only_keys: Sequence[str] = (),
        time_scale: float = 1.0,
        clock: Clock | None = None,
        max_pod_ids: int | None = DEFAULT_MAX_POD_IDS,
        log_size: int = 10_000,
        ssh_keys: Sequence[str] = (),
    ) -> None:
        if not api_keys or any(not key for key in (*api_keys, *read_only_keys)):
            raise ValueError("the simulator needs at least one non-empty API key")
        #: Every accepted key: the read-write ones, then the read-only ones.
        self.api_keys: tuple[str, ...] = tuple(dict.fromkeys((*api_keys, *read_only_keys)))
        #: Keys that may read but not create or delete ("Instances → Read" only).
        self.read_only_keys = frozenset(read_only_keys)
        self.max_pod_ids = max_pod_ids
        self.clock: Clock = clock or real_clock
        self.pods = PodBook(self.clock, time_scale, owner=user_id(1))
        self.fault_book = FaultBook()
        self.stats = SimulatorStats(log_size)
        self._created = itertools.count(1)
        self._scenario = resolve_scenario(scenario)
        #: The pods' simulated SSH nodes, when public keys were given (None: no SSH anywhere).
        self.ssh_nodes: PodNodes | None = _pod_nodes(ssh_keys) if ssh_keys else None
        self.stats.nodes_source = None if self.ssh_nodes is None else self._node_stats
        try:
            self._load(self._scenario)
        except BaseException:
            self.close_nodes()
            raise

    def _load(self, scenario: Scenario) -> None:
        if self.ssh_nodes is not None:
            self.ssh_nodes.remove_all()
            placed = tuple(self.ssh_nodes.place(pod) for pod in scenario.pods)
            self.pods.load(scenario.model_copy(update={"pods": placed}))
        else:
            self.pods.load(scenario)
        #: How pods created from now on unfold (the scenario's, until changed).
        self.create_lifecycle: CreateLifecycle = scenario.lifecycle
        #: Whether creates answer 402 (the scenario's ``payment_required``, until changed).
        self.payment_required: bool = scenario.payment_required
        #: Most items a page of the pod list or history holds (the scenario's ``page_cap``, until changed).
        self.page_cap: int | None = scenario.page_cap
        # Offers' stock schedules run from here (pod seconds); stocks pinned on command win over them.
        self._offers_loaded_at = self.sim_time()
        self._stock_pins: dict[str, str] = {}

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

    def sim_time(self) -> float:
        """The simulator's clock in pod seconds (clock times ``time_scale``); faults' windows run on it."""
        return self.clock() * self.pods.time_scale

    def configure(
        self,
        *,
        page_cap: object = _KEEP,
        payment_required: bool | None = None,
        **lifecycle: Any,
    ) -> dict[str, Any]:
        """Change how the server behaves from now on, pods kept; returns the settings in force.

        ``page_cap`` (None: no cap), ``payment_required``, and any :class:`CreateLifecycle` field
        (``list_lag``, ``deleting_for``, ``active_after``...) for pods created from now on.
        """
        if page_cap is not _KEEP:
            if page_cap is not None and (not isinstance(page_cap, int) or page_cap < 1):
                raise ValueError("page_cap must be a positive whole number or null")
            self.page_cap = page_cap if isinstance(page_cap, int) else None
        if payment_required is not None:
            self.payment_required = bool(payment_required)
        if lifecycle:
            self.create_lifecycle = CreateLifecycle.model_validate(
                {**self.create_lifecycle.model_dump(), **lifecycle}
            )
        return self.settings()

    def settings(self) -> dict[str, Any]:
        """What :meth:`configure` sets, as plain data (``GET /_sim/settings``)."""
        return {
            "page_cap": self.page_cap,
            "payment_required": self.payment_required,
            "lifecycle": self.create_lifecycle.model_dump(mode="json"),
        }

    # offers ----------------------------------------------------------------------------------------

    def offers(self) -> tuple[Offer, ...]:
        """The scenario's offers as the availability endpoints list them now, each with its stock
        of this moment: pinned by :meth:`set_stock`, else by its ``stock_schedule``."""
        since = self.sim_time() - self._offers_loaded_at
        pins = self._stock_pins
        return tuple(
            offer.with_stock(pins[offer.cloud_id] if offer.cloud_id in pins else offer.stock_at(since))
            if offer.stock_schedule or offer.cloud_id in pins
            else offer
            for offer in self._scenario.offers
        )

    def set_stock(self, cloud_id: str, stock_status: str) -> Offer:
        """Pin an offer's stock from now on (its schedule stops); e.g. ``"Unavailable"`` sells it out.

        Returns the offer as listed now. Raises KeyError for an unknown ``cloud_id``, ValueError
        for an empty status. Loading a scenario (or resetting it) forgets the pins.
        """
        if not isinstance(stock_status, str) or not stock_status.strip():
            raise ValueError("stock_status must be a non-empty string, e.g. 'High' or 'Unavailable'")
        offer = self._scenario.offer(cloud_id)
        if offer is None:
            raise KeyError(cloud_id)
        self._stock_pins = {**self._stock_pins, cloud_id: stock_status}
        return offer.with_stock(stock_status)

    # pods ------------------------------------------------------------------------------------------

    def set_scenario(self, scenario: ScenarioSpec) -> Scenario:
        """Serve another scenario (object, plain data, built-in name or JSON file); clocks start now."""
        self._scenario = resolve_scenario(scenario)
        self._load(self._scenario)
        return self._scenario

    def add_pod(self, *scripts: PodScript) -> None:
        """Add pods (replacing any with the same id); their timelines start now."""
        for script in scripts:
            self.pods.add(self._placed(script))

    def _placed(self, script: PodScript) -> PodScript:
        """The script with SSH nodes of its own, when the simulator has them."""
        return script if self.ssh_nodes is None else self.ssh_nodes.place(script)

    def remove_pod(self, pod_id: str) -> bool:
        """Make a pod vanish from every answer from now on, SSH nodes and all. False if there was none."""
        removed = self.pods.remove(pod_id)
        if self.ssh_nodes is not None:
            self.ssh_nodes.remove(pod_id)
        return removed

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
        self.sync_nodes()
        return phase

    def kill_node(self, pod_id: str, rank: int | None = None) -> Phase:
        """A node of the pod dies mid-job (every node: ``rank`` None); the pod is pinned ERROR.

        With SSH nodes, the node's SSH drops and its processes are SIGKILLed before this returns;
        it stays dead. The pod's other fields (SSH connections included) are kept. Without SSH
        nodes, only the pod goes ERROR. KeyError for an unknown pod, ValueError for a bad rank.
        """
        if pod_id not in self.pod_ids():
            raise KeyError(pod_id)
        if self.ssh_nodes is not None:
            self.ssh_nodes.kill(pod_id, rank)
        return self.set_pod_state(pod_id, "ERROR")

    def sync_nodes(self) -> None:
        """Bring the SSH nodes in step with what the API reports now (a no-op without SSH nodes)."""
        if self.ssh_nodes is not None:
            self.ssh_nodes.follow(self.pods.ssh_views())

    def _node_stats(self) -> FarmStats:
        assert self.ssh_nodes is not None
        self.sync_nodes()
        return self.ssh_nodes.stats()

    def close_nodes(self) -> None:
        """Kill every process on the SSH nodes and stop them, for good (a no-op without them)."""
        if self.ssh_nodes is not None:
            self.ssh_nodes.close()

    def user_number(self, api_key: str) -> int:
        """1 for the first accepted key, 2 for the second...: who a key is, without showing it."""
        return self.api_keys.index(api_key) + 1

    def create_pod(self, request: CreateRequest, api_key: str | None = None) -> dict[str, Any]:
        """Create a pod as ``POST /pods/`` does (checks passed): it follows :attr:`create_lifecycle`."""
        number = next(self._created)
        pod_id = hashlib.sha256(f"simulated-pod-{number}".encode()).hexdigest()[:32]
        offer = request.offer
        owner = user_id(self.user_number(api_key) if api_key in self.api_keys else 1)
        script = provisioned_pod(
            pod_id,
            self.create_lifecycle,
            nodes=offer.nodes,
            provider_type=offer.provider,
            name=request.name,
            gpu_name=offer.gpu_type,
            gpu_count=offer.gpu_count,
            socket=offer.socket,
            price_hr=offer.price_hr,
            image=request.image,
            team_id=request.team_id,
            port_mapping=SSH_PORT_MAPPING,
            # the live status endpoint sends these beyond its schema, too
            extra_fields={"priceHr": offer.price_hr, "primePortMapping": [dict(p) for p in SSH_PORT_MAPPING]},
        )
        self.pods.add(self._placed(script), origin="api", owner=owner)
        created = self.pods.pod(pod_id)
        assert created is not None
        return created

    def delete_pod(
        self, pod_id: str, api_key: str | None = None, *, deleting_for: float | None = None
    ) -> str | None:
        """Delete a pod as ``DELETE /pods/{id}`` does: its status afterwards, None if unknown.

        ``deleting_for`` overrides the lifecycle's DELETING time (0: terminated and unlisted at once).
        """
        wait = self.create_lifecycle.deleting_for if deleting_for is None else deleting_for
        status = self.pods.delete(pod_id, wait, api_key)
        self.sync_nodes()
        return status

    def billing(self) -> dict[str, Any]:
        """Who was created, deleted, still bills, and for how long: one call for lifecycle tests.

        ``created`` counts pods made through ``POST /pods/`` per name; ``deleted`` the pods a
        ``DELETE`` reached, per name; ``billing`` the pods not terminated yet, per name (every
        pod the simulator serves, scenario ones included). ``pod_seconds`` and ``cost`` are the
        totals of ``pods``, where each pod's seconds run from its creation to its termination
        (or to now) in pod time, and its cost is ``priceHr`` times that.
        """
        billed = self.pods.billed()
        return {
            "created": dict(Counter(b.name for b in billed if b.origin == "api")),
            "deleted": dict(Counter(b.name for b in billed if b.deleted)),
            "billing": dict(Counter(b.name for b in billed if b.billing)),
            "pod_seconds": round(sum(b.seconds for b in billed), 3),
            "cost": round(sum(b.cost for b in billed), 6),
            "pods": {
                b.pod_id: {
                    "name": b.name,
                    "origin": b.origin,
                    "status": b.status,
                    "price_hr": b.price_hr,
                    "seconds": round(b.seconds, 3),
                    "cost": round(b.cost, 6),
                    "billing": b.billing,
                    "deleted": b.deleted,
                }
                for b in billed
            },
        }

    def pod_status(self, pod_id: str, api_key: str | None = None) -> dict[str, Any] | None:
        """What the status endpoint reports for ``pod_id`` now (None if absent), as plain JSON data."""
        found = self.pods.report([pod_id], api_key)
        return found[0] if found else None

    # faults ------------------------------------------------------------------------------------------

    def inject(self, *faults: Fault | Mapping[str, Any]) -> list[int]:
        """Arm faults (objects or their JSON form); returns their ids, in order.

        Their ``after`` / ``duration`` windows start now and run on :meth:`sim_time`.
        """
        now = self.sim_time()
        return [self.fault_book.arm(Fault.model_validate(fault), now) for fault in faults]

    def clear_faults(self, fault_id: int | None = None) -> None:
        """Disarm one fault by id, or all of them."""
        self.fault_book.disarm(fault_id)

    @property
    def faults(self) -> list[dict[str, Any]]:
        """The armed faults, with ``remaining`` strikes and ``hits`` so far."""
        return self.fault_book.describe()

    def stats_snapshot(self, log: int | None = 0) -> dict[str, Any]:
        """The statistics as plain data, as ``GET /_sim/stats`` gives them (last ``log`` entries).

        Request counters (``by_path``, ``by_method_path``...), under ``billing`` what
        :meth:`billing` returns, and with SSH nodes, under ``ssh_nodes``, their counters
        (launches and processes alive per node: :meth:`PodNodes.snapshot`).
        """
        snapshot = {**self.stats.snapshot(log_limit=log), "billing": self.billing()}
        if self.ssh_nodes is not None:
            self.sync_nodes()
            snapshot["ssh_nodes"] = self.ssh_nodes.snapshot()
        return snapshot

    # everything ------------------------------------------------------------------------------------

    def reset(self, *, stats: bool = True, faults: bool = True, scenario: bool = False) -> None:
        """Forget statistics and disarm faults; with ``scenario=True`` also restart the scenario."""
        if stats:
            self.stats.reset()
        if faults:
            self.fault_book.disarm()
        if scenario:
            self._load(self._scenario)

    def pod_ids(self) -> Iterable[str]:
        """Ids of every pod served now, visible or not."""
        return [script.pod_id for script in self.pods.scripts()]


def _pod_nodes(ssh_keys: Sequence[str]) -> PodNodes:
    """SSH nodes accepting ``ssh_keys``; asyncssh is imported here, only when keys are given."""
    try:
        from airflow_provider_prime.testing.ssh_pods import PodNodes
    except ImportError as error:
        raise ImportError(
            f"the simulator's SSH nodes need asyncssh ({error}): pip install 'airflow-provider-prime[ssh]'"
        ) from error
    return PodNodes(ssh_keys)
