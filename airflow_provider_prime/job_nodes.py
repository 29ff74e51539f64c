"""The nodes a job runs on, in rank order, read from the pods' handover.

The create operator and the sensor return ``{pod_id: {"status", "installation_status", "nodes":
[{user, host, port, ip, ssh_connection}], ...}}`` (:func:`.readiness.handover_entry`); a mapped
create returns a list of those. A job runs on every node of every pod, and its ranks follow that
order: rank 0 is the first node of the first pod, then the other nodes of that pod, then the next
pod's. The order is the one the handover gives (a dict keeps its order through XCom's JSON), so
every try of a task computes the same ranks.

A pod that is not ready, or a node without an SSH target, is refused with a
:class:`.PrimeConfigError` naming the pod, the node and why: a job started on a pod that is still
booting would fail later with an SSH error that says much less.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_prime.exceptions import PrimeConfigError
from airflow_provider_prime.models import InstallationState, PodState, PodStatus
from airflow_provider_prime.readiness import handover_entry
from airflow_provider_prime.ssh import DEFAULT_SSH_PORT, node_entry


@dataclass(frozen=True)
class JobNode:
    """One node of a job: its rank, its pod, where to reach it over SSH, and its private ip.

    ``user`` is ``None`` when the platform named no user (the SSH connection's login applies then).
    """

    rank: int
    pod_id: str
    index: int
    host: str
    port: int
    user: str | None = None
    ip: str | None = None

    @property
    def address(self) -> str:
        """The address the other nodes reach this one at: its ``ip`` when known, else its SSH host."""
        return self.ip or self.host

    @property
    def label(self) -> str:
        """``node 1 (pod-a node 2, root@203.0.113.7:22)``: how messages name the node."""
        who = f"{self.user}@" if self.user else ""
        return f"node {self.rank} ({self.pod_id} node {self.index + 1}, {who}{self.host}:{self.port})"

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for a trigger's kwargs or an XCom."""
        return {
            "rank": self.rank,
            "pod_id": self.pod_id,
            "index": self.index,
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "ip": self.ip,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobNode:
        """The inverse of :meth:`to_dict`."""
        return cls(
            rank=int(data["rank"]),
            pod_id=str(data["pod_id"]),
            index=int(data["index"]),
            host=str(data["host"]),
            port=int(data["port"]),
            user=data.get("user"),
            ip=data.get("ip"),
        )


def job_nodes(pods: object, *, require_installation: bool = True) -> tuple[JobNode, ...]:
    """The job's nodes in rank order, from a handover or a list of handovers (a mapped create).

    :param pods: ``{pod_id: entry}`` as the create operator or the sensor return it, or a sequence
        of such mappings (the resolved value of a mapped create's ``output``).
    :param require_installation: refuse a pod whose image installation is not ``FINISHED`` (as the
        readiness rules do by default).
    :raises PrimeConfigError: no pods; a pod given twice; a pod not ready; a node without SSH.
    """
    nodes: list[JobNode] = []
    seen: set[str] = set()
    for pod_id, entry in _pod_entries(pods):
        if pod_id in seen:
            raise PrimeConfigError(
                f"Pod {pod_id} is given twice in pods=: each pod's nodes can hold only one rank each; "
                "pass every pod once"
            )
        seen.add(pod_id)
        _check_ready(pod_id, entry, require_installation)
        for index, node in enumerate(_node_entries(pod_id, entry)):
            nodes.append(_job_node(len(nodes), pod_id, index, node))
    if not nodes:
        raise PrimeConfigError(
            "The job has no pods to run on: pods= is empty. Pass the create operator's or the "
            "sensor's output (e.g. pods=create.output), or pod_ids="
        )
    return tuple(nodes)


def handover_of(pod_ids: Iterable[str], statuses: Mapping[str, PodStatus]) -> dict[str, dict[str, Any]]:
    """The handover of pods the operator read itself (``pod_ids=``), in the order of ``pod_ids``.

    :raises PrimeConfigError: a pod id is not in the API's answer.
    """
    handover: dict[str, dict[str, Any]] = {}
    for pod_id in pod_ids:
        status = statuses.get(pod_id)
        if status is None:
            raise PrimeConfigError(
                f"Pod {pod_id} is not in the Prime API's answer: it does not exist, was deleted, or is "
                "not visible to this API key. Check the pod id and the connection"
            )
        handover[pod_id] = handover_entry(status)
    return handover


def _pod_entries(pods: object) -> list[tuple[str, Mapping[str, Any]]]:
    if isinstance(pods, str | bytes):
        raise PrimeConfigError(
            "pods= got a string, not the pods' handover: pass the create operator's or the sensor's "
            "output itself (pods=create.output), or render templates as native objects "
            "(render_template_as_native_obj=True on the DAG)"
        )
    if isinstance(pods, Mapping):
        return [_entry(pod_id, entry) for pod_id, entry in pods.items()]
    if isinstance(pods, Iterable):
        found: list[tuple[str, Mapping[str, Any]]] = []
        for item in pods:
            if not isinstance(item, Mapping):
                raise PrimeConfigError(
                    f"pods= holds {type(item).__name__}, not a handover {{pod_id: {{...}}}}: pass the "
                    "create operators' or the sensors' outputs"
                )
            found.extend(_entry(pod_id, entry) for pod_id, entry in item.items())
        return found
    raise PrimeConfigError(
        f"pods= must be the pods' handover ({{pod_id: {{...}}}}) or a list of them, not {type(pods).__name__}"
    )


def _entry(pod_id: object, entry: object) -> tuple[str, Mapping[str, Any]]:
    if not isinstance(entry, Mapping):
        raise PrimeConfigError(
            f"Pod {pod_id}: its handover entry is {type(entry).__name__}, not a mapping; pass the create "
            "operator's or the sensor's output as it is (pods=create.output)"
        )
    return str(pod_id), entry


def _check_ready(pod_id: str, entry: Mapping[str, Any], require_installation: bool) -> None:
    status = entry.get("status")
    if status != PodState.ACTIVE.value:
        raise PrimeConfigError(
            f"Pod {pod_id} is not ready to run a job: it is {status}, not ACTIVE. Wait for it first "
            "(the create operator with wait_for_ready=True, or PodStatusSensor)"
        )
    install = entry.get("installation_status")
    if require_installation and install != InstallationState.FINISHED.value:
        raise PrimeConfigError(
            f"Pod {pod_id} is not ready to run a job: its installation is {install}, not FINISHED. "
            "Wait for it first, or pass require_installation=False"
        )


def _node_entries(pod_id: str, entry: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    nodes = entry.get("nodes")
    if nodes is None:  # a handover without parsed nodes: parse the platform's text here
        ssh = list(entry.get("ssh_connections") or [])
        ips = list(entry.get("ips") or [])
        count = max(len(ssh), len(ips), 1)
        ssh += [None] * (count - len(ssh))
        ips += [None] * (count - len(ips))
        return [node_entry(target, ip) for target, ip in zip(ssh, ips, strict=True)]
    if not isinstance(nodes, list) or not all(isinstance(node, Mapping) for node in nodes):
        raise PrimeConfigError(f"Pod {pod_id}: 'nodes' in its handover is not a list of nodes")
    return nodes


def _job_node(rank: int, pod_id: str, index: int, node: Mapping[str, Any]) -> JobNode:
    host = node.get("host")
    if not host:
        shown = node.get("ssh_connection")
        raise PrimeConfigError(
            f"Pod {pod_id} node {index + 1} has no SSH target (the platform said {shown!r}): a job cannot "
            "run on it. Wait until every node has SSH (require_ssh=True, the default)"
        )
    port = node.get("port") or DEFAULT_SSH_PORT
    return JobNode(
        rank=rank,
        pod_id=pod_id,
        index=index,
        host=str(host),
        port=int(port),
        user=node.get("user") or None,
        ip=node.get("ip") or None,
    )


__all__ = ["JobNode", "handover_of", "job_nodes"]
