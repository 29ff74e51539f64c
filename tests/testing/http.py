"""Helpers of the simulator's own tests: its endpoints spoken to over HTTP as the API documents them,
and a pod created as the official CLI creates one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from airflow_provider_prime.testing import PODS_PATH, STATUS_PATH, PrimeSimulator

#: The type of the ``prime_simulator_factory`` fixture.
Factory = Callable[..., PrimeSimulator]
#: Built-in offers: one GPU, and a 16-GPU cluster.
SINGLE = "sim-h100-80gb-1x"
CLUSTER = "sim-h100-80gb-16x-cluster"


def get_status(client: httpx.Client, *pod_ids: str, timeout: httpx.Timeout | None = None) -> httpx.Response:
    """GET the status endpoint with ``pod_ids`` as repeated query keys, as the API documents."""
    params: list[tuple[str, str | int | float | bool | None]] = [("pod_ids", pod_id) for pod_id in pod_ids]
    return client.get(STATUS_PATH, params=params, timeout=timeout or client.timeout)


def pods_of(response: httpx.Response) -> dict[str, dict[str, Any]]:
    """The pods of a 200 answer by id."""
    assert response.status_code == 200, response.text
    return {pod["podId"]: pod for pod in response.json()["data"]}


def create_body(cloud_id: str = SINGLE, name: str = "job", **pod: Any) -> dict[str, Any]:
    """The body the official CLI sends, for one of the built-in offers."""
    shapes = {
        SINGLE: ("H100_80GB", "SXM5", 1),
        CLUSTER: ("H100_80GB", "SXM5", 16),
        "sim-b200-8x-sold-out": ("B200_180GB", "SXM6", 8),
    }
    gpu_type, socket, count = shapes.get(cloud_id, ("H100_80GB", "SXM5", 1))
    fields = {"name": name, "cloudId": cloud_id, "gpuType": gpu_type, "socket": socket, "gpuCount": count}
    return {
        "pod": {**fields, "image": None, "envVars": [], **pod},
        "provider": {"type": "runpod"},
        "team": None,
    }


def create(api: httpx.Client, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = api.post(PODS_PATH, json=body or create_body())
    assert response.status_code == 200, response.text
    pod: dict[str, Any] = response.json()
    return pod
