"""Pydantic models of the pods status payloads (``APIPodStatusResponse`` and its envelope).

The API grows: new statuses, new provider types and new fields appear without notice. So enum
fields are plain strings (the known values are listed in the ``*State`` classes below for
comparison and documentation), unknown fields are ignored, and ``data: null`` is an empty list.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class PodState(str, Enum):
    """Pod statuses documented by the API (``PodStatusEnum``); others may appear and are kept as text."""

    PROVISIONING = "PROVISIONING"
    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    STOPPED = "STOPPED"
    ERROR = "ERROR"
    DELETING = "DELETING"
    UNKNOWN = "UNKNOWN"
    TERMINATED = "TERMINATED"


class InstallationState(str, Enum):
    """Installation statuses documented by the API (``InstallationStatusEnum``)."""

    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    FINISHED = "FINISHED"
    ERROR = "ERROR"
    TERMINATED = "TERMINATED"


def _as_node_list(value: str | list[str | None] | None) -> list[str | None]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


class PodStatus(BaseModel):
    """The status of one pod, as ``GET /api/v1/pods/status`` reports it (snake_case attributes)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    pod_id: str = Field(alias="podId")
    provider_type: str = Field(alias="providerType")
    status: str
    ssh_connection: str | list[str | None] | None = Field(default=None, alias="sshConnection")
    ip: str | list[str | None] | None = None
    installation_status: str | None = Field(default=None, alias="installationStatus")
    installation_failure: str | None = Field(default=None, alias="installationFailure")
    installation_progress: int | None = Field(default=None, alias="installationProgress")

    @field_validator("status", "provider_type", mode="before")
    @classmethod
    def _enum_text(cls, value: Any) -> Any:
        # An Enum member (e.g. from a test) is stored as its value so comparisons stay textual.
        return value.value if isinstance(value, Enum) else value

    @field_validator("installation_progress", mode="before")
    @classmethod
    def _progress_number(cls, value: Any) -> Any:
        # Progress is informational: a float is rounded, anything non-numeric is dropped
        # rather than failing a wait over a cosmetic field.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if value != value or value in (float("inf"), float("-inf")):
            return None
        return round(value)

    @property
    def ssh_connections(self) -> list[str | None]:
        """One SSH target per node; ``None`` marks a node whose SSH is not ready (never dropped)."""
        return _as_node_list(self.ssh_connection)

    @property
    def ips(self) -> list[str | None]:
        """One IP per node; ``None`` marks a node without an address yet (never dropped)."""
        return _as_node_list(self.ip)


class PodStatusPage(BaseModel):
    """The response envelope ``GenericResponse[List[APIPodStatusResponse]]``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    data: list[PodStatus] | None = None
    status: str | None = None

    @property
    def pods(self) -> list[PodStatus]:
        """The pods in the page; ``data: null`` means none."""
        return list(self.data or [])
