"""Build :class:`PodStatus` values for unit tests in one line."""

from __future__ import annotations

from typing import Any

from airflow_provider_prime.models import PodStatus

SSH = "root@10.0.0.1 -p 22"


def pod(
    pod_id: str = "pod-1",
    status: str = "ACTIVE",
    installation: str | None = "FINISHED",
    ssh: Any = SSH,
    **fields: Any,
) -> PodStatus:
    """A pod status; by default a ready single-node pod."""
    return PodStatus(
        pod_id=pod_id,
        provider_type=fields.pop("provider_type", "runpod"),
        status=status,
        installation_status=installation,
        ssh_connection=ssh,
        ip=fields.pop("ip", "10.0.0.1"),
        **fields,
    )
