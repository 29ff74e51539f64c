"""Scenarios as plain data: which pods exist and how each one's status unfolds over time.

A :class:`Scenario` is a list of :class:`PodScript`; a pod script is a timeline of :class:`Phase`
snapshots, each saying what the API reports from ``at`` seconds after the pod was added to the
simulator until the next phase begins. Everything validates from (and dumps to) JSON-friendly
dicts, so a user can keep scenarios in files next to their DAG tests::

    {"name": "mine", "pods": [
        {"pod_id": "pod-a", "nodes": 2, "timeline": [
            {"at": 0, "status": "PROVISIONING", "installation_status": "PENDING"},
            {"at": 5, "status": "ACTIVE", "installation_status": "ACTIVE",
             "installation_progress": 0, "ip_nodes": 2, "ssh_nodes": 1},
            {"at": 20, "status": "ACTIVE", "installation_status": "FINISHED",
             "installation_progress": 100, "ip_nodes": 2, "ssh_nodes": 2}]}]}

A pod script also says what the whole-pod endpoints (``GET /pods/``, ``GET /pods/{id}``) report
beyond the status (``name``, ``gpu_name``, ``gpu_count``, ``price_hr``...), and may be deleted at a
pod time (``deleted_at``: DELETING for ``deleting_for`` seconds, then TERMINATED and in the history).
A scenario also declares the offers it sells and how pods created through ``POST /pods/`` unfold
(:class:`CreateLifecycle`).

Node addresses are generated (documentation range 203.0.113.0/24) unless ``node_ips`` (and
``ssh_ports``, one port per node) are given, as a simulator with SSH nodes does;
``ssh_nodes``/``ip_nodes`` say how many nodes have one yet. A phase may instead give
``ssh_connection``/``ip`` verbatim (e.g. ``[null]`` for a stopped pod). Installation progress rises
linearly between two consecutive phases that both give a progress value.
"""

from __future__ import annotations

import bisect
import json
import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from airflow_provider_prime.testing.offers import Offer, default_offers

#: Provider type of simulated pods unless a script says otherwise.
DEFAULT_PROVIDER_TYPE = "primecompute"

#: A per-node field as the API sends it: one string (single node), a list with a null per node
#: that has none yet, or null.
NodeValue = str | list[str | None] | None


class Phase(BaseModel):
    """What a pod reports from ``at`` seconds (pod time) until the next phase of its timeline."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: float = Field(default=0.0, ge=0.0)
    status: str = Field(min_length=1)
    installation_status: str | None = None
    installation_progress: int | None = Field(default=None, ge=0, le=100)
    installation_failure: str | None = None
    #: How many nodes have an SSH connection / an IP yet (None: the field is null).
    ssh_nodes: int | None = Field(default=None, ge=0)
    ip_nodes: int | None = Field(default=None, ge=0)
    #: Verbatim values; when given they win over ``ssh_nodes`` / ``ip_nodes``.
    ssh_connection: NodeValue = None
    ip: NodeValue = None
    #: Fields beyond the documented schema, merged into the pod object (the live API sends some).
    extra_fields: dict[str, Any] = Field(default_factory=dict)


class PodScript(BaseModel):
    """One simulated pod: identity, shape, visibility and the timeline of its status."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pod_id: str = Field(min_length=1)
    timeline: tuple[Phase, ...] = Field(min_length=1)
    provider_type: str = DEFAULT_PROVIDER_TYPE
    nodes: int = Field(default=1, ge=1, le=256)
    node_ips: tuple[str, ...] | None = None
    ssh_user: str = "root"
    ssh_port: int = Field(default=22, ge=1, le=65535)
    #: One SSH port per node, winning over ``ssh_port`` (simulated SSH nodes each have their own).
    ssh_ports: tuple[int, ...] | None = None
    #: Only these API keys see the pod (None: every accepted key does).
    api_keys: tuple[str, ...] | None = None
    #: Pod time before which the pod is absent from answers (eventual consistency after create).
    visible_from: float = Field(default=0.0, ge=0.0)
    #: Pod time before which ``GET /pods/`` leaves the pod out although every other answer has it
    #: (a list that lags creates; ``CreateLifecycle.list_lag``).
    listed_from: float = Field(default=0.0, ge=0.0)
    #: Pod time from which the pod is absent from answers, without a trace (moved to another account).
    vanish_at: float | None = Field(default=None, ge=0.0)
    #: Pod time of its deletion: DELETING from then, TERMINATED (and in the history) ``deleting_for`` later.
    deleted_at: float | None = Field(default=None, ge=0.0)
    deleting_for: float = Field(default=0.0, ge=0.0)
    extra_fields: dict[str, Any] = Field(default_factory=dict)
    # what GET /pods/ and GET /pods/{id} report beyond the status
    name: str | None = None
    gpu_name: str = "H100_80GB"
    gpu_count: int | None = Field(default=None, ge=1)
    socket: str = "PCIe"
    price_hr: float | None = Field(default=None, ge=0.0)
    image: str = "ubuntu_22_cuda_12"
    team_id: str | None = None
    #: Ports of ``primePortMapping`` (Pod objects only; put it in ``extra_fields`` for the status too).
    port_mapping: tuple[dict[str, Any], ...] = ()

    @field_validator("timeline")
    @classmethod
    def _in_time_order(cls, timeline: tuple[Phase, ...]) -> tuple[Phase, ...]:
        return tuple(sorted(timeline, key=lambda phase: phase.at))

    @model_validator(mode="after")
    def _consistent(self) -> PodScript:
        if self.node_ips is not None and len(self.node_ips) != self.nodes:
            raise ValueError(f"node_ips has {len(self.node_ips)} entries for {self.nodes} nodes")
        if self.ssh_ports is not None and len(self.ssh_ports) != self.nodes:
            raise ValueError(f"ssh_ports has {len(self.ssh_ports)} entries for {self.nodes} nodes")
        if self.vanish_at is not None and self.vanish_at <= self.visible_from:
            raise ValueError("vanish_at must come after visible_from")
        return self

    @property
    def display_name(self) -> str:
        return self.pod_id if self.name is None else self.name

    @property
    def total_gpus(self) -> int:
        return self.nodes if self.gpu_count is None else self.gpu_count

    @property
    def terminated_at(self) -> float | None:
        """Pod time from which the pod is TERMINATED (None: never deleted)."""
        return None if self.deleted_at is None else self.deleted_at + self.deleting_for

    def billed_until(self) -> float:
        """Pod time at which billing stops: termination, or vanishing; inf while it runs."""
        ends = [t for t in (self.terminated_at, self.vanish_at) if t is not None]
        return min(ends, default=math.inf)

    def visible_at(self, t: float) -> bool:
        """Whether the API lists the pod at pod time ``t`` (deleting counts; terminated does not)."""
        return max(self.visible_from, self.listed_from) <= t < self.billed_until()

    def position(self, t: float) -> tuple[int, int | None]:
        """(index of the phase in force at pod time ``t``, installation progress at ``t``)."""
        return timeline_position(self.timeline, [phase.at for phase in self.timeline], t)

    def report(self, t: float) -> dict[str, Any]:
        """The ``APIPodStatusResponse`` object (camelCase) the API returns at pod time ``t``."""
        return self.render(*self.position(t))

    def render(self, index: int, progress: int | None) -> dict[str, Any]:
        """The API object for one phase of the timeline with the given installation progress."""
        phase = self.timeline[index]
        explicit = phase.model_fields_set
        ssh = phase.ssh_connection if "ssh_connection" in explicit else self._per_node(phase.ssh_nodes, True)
        ip = phase.ip if "ip" in explicit else self._per_node(phase.ip_nodes, False)
        body: dict[str, Any] = {
            "podId": self.pod_id,
            "providerType": self.provider_type,
            "status": phase.status,
            "sshConnection": ssh,
            "ip": ip,
            "installationStatus": phase.installation_status,
            "installationFailure": phase.installation_failure,
            "installationProgress": progress,
        }
        body.update(self.extra_fields)
        body.update(phase.extra_fields)
        return body

    def node_ip(self, node: int) -> str:
        """The IP address of node ``node`` (0-based): given, or derived from the pod id."""
        if self.node_ips is not None:
            return self.node_ips[node]
        return f"203.0.113.{(zlib.crc32(self.pod_id.encode()) + node) % 254 + 1}"

    def _per_node(self, count: int | None, ssh: bool) -> NodeValue:
        if count is None:
            return None

        def value(node: int) -> str:
            ip = self.node_ip(node)
            port = self.ssh_port if self.ssh_ports is None else self.ssh_ports[node]
            return f"{self.ssh_user}@{ip} -p {port}" if ssh else ip

        if self.nodes == 1:
            return value(0) if count >= 1 else None
        return [value(node) if node < count else None for node in range(self.nodes)]


def timeline_position(timeline: Sequence[Phase], starts: Sequence[float], t: float) -> tuple[int, int | None]:
    """:meth:`PodScript.position` given the phases' start times (callers on a hot path keep them)."""
    index = max(bisect.bisect_right(starts, t) - 1, 0)
    phase = timeline[index]
    progress = phase.installation_progress
    if progress is not None and index + 1 < len(timeline):
        following = timeline[index + 1]
        span = following.at - phase.at
        if following.installation_progress is not None and span > 0 and t > phase.at:
            rise = (following.installation_progress - progress) * (t - phase.at) / span
            progress = int(progress + rise)
    return index, progress


def steady_until(timeline: Sequence[Phase], index: int) -> float:
    """Pod time until which phase ``index`` reports the same thing, or -inf if its progress moves."""
    if index + 1 >= len(timeline):
        return math.inf
    phase, following = timeline[index], timeline[index + 1]
    moving = phase.installation_progress is not None and following.installation_progress is not None
    return (
        -math.inf
        if moving and following.installation_progress != phase.installation_progress
        else following.at
    )


class CreateLifecycle(BaseModel):
    """How a pod created through ``POST /pods/`` unfolds, in pod seconds after the create.

    PROVISIONING until ``active_after``, then ACTIVE with IPs and installation ACTIVE (progress
    rising), installation FINISHED at ``installed_after`` (or ERROR with ``installation_failure``
    when that is set). SSH appears per node at ``ssh_after[node]`` (the last entry repeats; empty:
    every node at ``installed_after``), so a late node can lag behind the installation. A DELETE
    shows DELETING for ``deleting_for`` seconds, then TERMINATED. ``list_lag``: for that many pod
    seconds after the create, ``GET /pods/`` does not list the new pod yet (an eventually consistent
    list; ``GET /pods/{id}`` and the status endpoint have it at once).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    active_after: float = Field(default=10.0, ge=0.0)
    installed_after: float = Field(default=20.0, ge=0.0)
    ssh_after: tuple[float, ...] = ()
    installation_failure: str | None = None
    deleting_for: float = Field(default=2.0, ge=0.0)
    list_lag: float = Field(default=0.0, ge=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> CreateLifecycle:
        if self.installed_after < self.active_after:
            raise ValueError("installed_after must not come before active_after")
        if any(t < self.active_after for t in self.ssh_after):
            raise ValueError("ssh_after times must not come before active_after")
        return self

    def ssh_time(self, node: int) -> float:
        """Pod time at which node ``node`` gets its SSH connection."""
        if not self.ssh_after:
            return self.installed_after
        return self.ssh_after[min(node, len(self.ssh_after) - 1)]


class Scenario(BaseModel):
    """Pods, offers and the create lifecycle: what the simulator serves until told otherwise.

    ``deleted_pods`` is what ``GET /pods/{id}`` answers for a terminated pod (the API's choice is
    not documented): the pod with status TERMINATED, or 404. ``payment_required`` makes every
    create answer 402, as for an account without funds. ``page_cap``: the pod list and history
    answer at most that many items per page whatever ``limit`` asked, and say so in ``limit`` (a
    server that caps paging; FACTS.md "paging is not a promise").
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "custom"
    description: str = ""
    pods: tuple[PodScript, ...] = ()
    offers: tuple[Offer, ...] = Field(default_factory=default_offers)
    lifecycle: CreateLifecycle = CreateLifecycle()
    payment_required: bool = False
    deleted_pods: Literal["terminated", "not_found"] = "terminated"
    page_cap: int | None = Field(default=None, ge=1)

    @field_validator("pods")
    @classmethod
    def _unique_ids(cls, pods: tuple[PodScript, ...]) -> tuple[PodScript, ...]:
        seen: set[str] = set()
        for pod in pods:
            if pod.pod_id in seen:
                raise ValueError(f"pod id {pod.pod_id!r} appears twice")
            seen.add(pod.pod_id)
        return pods

    @property
    def pod_ids(self) -> list[str]:
        return [pod.pod_id for pod in self.pods]

    @field_validator("offers")
    @classmethod
    def _unique_offers(cls, offers: tuple[Offer, ...]) -> tuple[Offer, ...]:
        ids = [offer.cloud_id for offer in offers]
        twice = sorted({cloud_id for cloud_id in ids if ids.count(cloud_id) > 1})
        if twice:
            raise ValueError(f"offer cloud_id {twice[0]!r} appears twice")
        return offers

    def offer(self, cloud_id: str) -> Offer | None:
        return next((offer for offer in self.offers if offer.cloud_id == cloud_id), None)

    @classmethod
    def of(
        cls, pods: Iterable[PodScript], *, name: str = "custom", description: str = "", **options: Any
    ) -> Scenario:
        """A scenario from pod scripts built in Python (``options``: offers, lifecycle...)."""
        return cls(name=name, description=description, pods=tuple(pods), **options)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        """Validate a scenario given as plain data (raises pydantic's ``ValidationError``)."""
        return cls.model_validate(dict(data))

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        """Read a scenario from a JSON file."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def to_dict(self) -> dict[str, Any]:
        """Plain data that :meth:`from_dict` turns back into an equal scenario."""
        return self.model_dump(mode="json", exclude_unset=True)
