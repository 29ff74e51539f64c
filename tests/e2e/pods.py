"""Helpers of the end-to-end and HA tests: pods added booting and then made ready, and readers of
what the runs report."""

from __future__ import annotations

from datetime import datetime

from airflow_provider_prime.testing.lifecycles import ready_pod
from airflow_provider_prime.testing.process import PrimeSimulatorProcess

INSTALLATION_FAILURE = "flash-attn wheel build failed: nvcc not found (e2e)"


def add_booting_pods(simulator: PrimeSimulatorProcess, nodes_by_pod: dict[str, int]) -> None:
    """Pods that start booting now and would take an hour to be ready on their own."""
    simulator.add_pod(*(ready_pod(pod_id, ready_at=3600, nodes=n) for pod_id, n in nodes_by_pod.items()))


def make_ready(simulator: PrimeSimulatorProcess, pod_id: str, nodes: int) -> None:
    simulator.set_pod_state(
        pod_id,
        "ACTIVE",
        installation_status="FINISHED",
        installation_progress=100,
        ssh_nodes=nodes,
        ip_nodes=nodes,
    )


def timestamp(text: str) -> datetime:
    """An API timestamp (``...Z``, which Python 3.10's ``fromisoformat`` rejects)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def as_list(value: str | list[str | None] | None) -> list[str | None]:
    return value if isinstance(value, list) else [value]
