"""Fixtures for the simulator's own tests: a hand-driven clock and an authenticated HTTP client."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from airflow_provider_prime.testing import ManualClock, PrimeSimulator


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
