"""Fixtures for the simulator's own tests: a hand-driven clock and an authenticated HTTP client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from airflow_provider_prime.testing import STATUS_PATH, ManualClock, PrimeSimulator

#: The type of the ``prime_simulator_factory`` fixture.
Factory = Callable[..., PrimeSimulator]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sim(prime_simulator_factory: Callable[..., PrimeSimulator], clock: ManualClock) -> PrimeSimulator:
    """An empty simulator on the manual clock."""
    return prime_simulator_factory(clock=clock)


@pytest.fixture
def http(sim: PrimeSimulator) -> Iterator[httpx.Client]:
    """A keep-alive client that presents the simulator's key."""
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    with httpx.Client(base_url=sim.base_url, headers=headers, timeout=5.0) as client:
        yield client


def get_status(client: httpx.Client, *pod_ids: str, timeout: httpx.Timeout | None = None) -> httpx.Response:
    """GET the status endpoint with ``pod_ids`` as repeated query keys, as the API documents."""
    params: list[tuple[str, str | int | float | bool | None]] = [("pod_ids", pod_id) for pod_id in pod_ids]
    return client.get(STATUS_PATH, params=params, timeout=timeout or client.timeout)


def pods_of(response: httpx.Response) -> dict[str, dict[str, Any]]:
    """The pods of a 200 answer by id."""
    assert response.status_code == 200, response.text
    return {pod["podId"]: pod for pod in response.json()["data"]}
