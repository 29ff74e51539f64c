"""The API's JSON shapes beyond the pod status: Pod, HistoryItem, the user of whoami, error bodies.

Written from the API facts (``LIFECYCLE.md``): every required key is present, null when empty,
camelCase on the wire; ``primePortMapping`` ports are strings. Kept apart from the provider's
models on purpose: the simulator checks the client, it must not share its idea of the API.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from airflow_provider_prime.testing.scenario import PodScript

#: The port mapping of pods created through the API (and of the live-API extra fields).
SSH_PORT_MAPPING: tuple[dict[str, Any], ...] = (
    {"internal": "22", "external": "22", "protocol": "TCP", "description": "SSH", "usedBy": "SSH"},
    {"internal": "8888", "external": "8888", "protocol": "TCP", "description": None, "usedBy": "JUPYTER"},
)
#: The scope names whoami reports; a read-only key has write false on all of them.
SCOPE_NAMES = ("instances", "disks", "availability")


def iso(epoch: float) -> str:
    """An API timestamp (ISO 8601, UTC, ``Z``)."""
    return (
        datetime.fromtimestamp(epoch, tz=timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def user_id(number: int) -> str:
    """The id of the simulated user behind the ``number``-th API key (never derived from the key)."""
    return "usr_" + hashlib.sha256(f"simulated-user-{number}".encode()).hexdigest()[:12]


def user_object(number: int, *, writable: bool) -> dict[str, Any]:
    """``data`` of ``GET /user/whoami``: ``scope`` is an object of ``{read, write}`` (or null) per name."""
    scope: dict[str, dict[str, bool] | None] = {
        name: {"read": True, "write": writable} for name in SCOPE_NAMES
    }
    scope["sandboxes"] = None  # a scope the key was not given at all
    return {
        "id": user_id(number),
        "name": f"Simulated User {number}",
        "email": f"user{number}@simulator.invalid",
        "role": "USER",
        "createdAt": "2025-01-01T00:00:00.000Z",
        "slug": f"simulated-user-{number}",
        "image": None,
        "emailVerified": True,
        "hasBetaAccess": False,
        "isBanned": False,
        "skipPrepay": False,
        "blacklist": [],
        "scope": scope,
    }


def pod_object(
    script: PodScript,
    status: Mapping[str, Any],
    *,
    created_at: float,
    updated_at: float,
    terminated_at: float | None,
    owner: str,
) -> dict[str, Any]:
    """A ``Pod`` (``GET /pods/{id}``, list items, the create answer) from its status report now."""
    price = script.price_hr
    return {
        "id": script.pod_id,
        "name": script.display_name,
        "gpuName": script.gpu_name,
        "gpuCount": script.total_gpus,
        "status": status["status"],
        "createdAt": iso(created_at),
        "providerType": script.provider_type,
        "resources": {"gpuCount": script.total_gpus, "nodes": script.nodes},
        "ip": status["ip"],
        "socket": script.socket,
        "type": "HOSTED",
        "installationStatus": status["installationStatus"],
        "installationFailure": status["installationFailure"],
        "installationProgress": status["installationProgress"],
        "sshConnection": status["sshConnection"],
        "priceHr": price,
        "teamId": script.team_id,
        "userId": owner,
        "walletId": None,
        "updatedAt": iso(updated_at),
        "terminatedAt": None if terminated_at is None else iso(terminated_at),
        "environmentType": script.image,
        "attachedResources": [],
        "primePortMapping": [dict(port) for port in script.port_mapping],
        "jupyterPassword": None,
        "stoppedPriceHr": None,
        "provisioningPriceHr": price,
        "basePriceHr": price,
        "baseCurrency": "USD",
        "customTemplateId": None,
        "isSpot": False,
        "autoRestart": False,
    }


def history_item(
    script: PodScript, *, created_at: float, terminated_at: float, owner: str, billed: float
) -> dict[str, Any]:
    """A ``HistoryItem`` of ``GET /pods/history`` (a terminated pod and what it cost)."""
    return {
        "id": script.pod_id,
        "name": script.display_name,
        "providerType": script.provider_type,
        "provisionedBy": owner,
        "type": "HOSTED",
        "createdAt": iso(created_at),
        "terminatedAt": iso(terminated_at),
        "gpuName": script.gpu_name,
        "gpuCount": script.total_gpus,
        "socket": script.socket,
        "priceHr": script.price_hr or 0.0,
        "userId": owner,
        "teamId": script.team_id,
        "totalBilledPrice": round(billed, 6),
    }


def validation_error(*problems: tuple[Sequence[str | int], str]) -> dict[str, Any]:
    """A FastAPI-style 422 body: ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``."""
    return {"detail": [{"loc": list(loc), "msg": msg, "type": "value_error"} for loc, msg in problems]}
