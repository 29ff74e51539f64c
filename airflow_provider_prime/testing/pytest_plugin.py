"""pytest fixtures for testing against the Prime API simulator.

Enable with ``pytest_plugins = ["airflow_provider_prime.testing.pytest_plugin"]`` in a top-level
``conftest.py``. Fixtures:

* ``prime_simulator``: a fresh, started :class:`PrimeSimulator` per test (no pods unless the
  ``prime_simulator`` marker says otherwise), stopped afterwards::

      @pytest.mark.prime_simulator("demo", time_scale=20)
      def test_waits(prime_simulator): ...

* ``prime_simulator_factory``: ``make(scenario=None, **options) -> PrimeSimulator`` for tests that
  need several simulators (e.g. two API keys on two "accounts"); all stopped afterwards.
* ``prime_connection``: sets ``AIRFLOW_CONN_PRIME_DEFAULT`` to the ``prime_simulator`` for the
  test's duration and returns the connection id.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_prime.testing.connection import airflow_connection_env
from airflow_provider_prime.testing.simulator import PrimeSimulator
from airflow_provider_prime.testing.state import ScenarioSpec

SimulatorFactory = Callable[..., PrimeSimulator]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "prime_simulator(scenario=None, **options): scenario and PrimeSimulator options "
        "(time_scale, api_keys, clock, max_pod_ids) for the prime_simulator fixture",
    )


@pytest.fixture
def prime_simulator_factory() -> Iterator[SimulatorFactory]:
    """Start simulators on demand; every one is stopped when the test ends."""
    started: list[PrimeSimulator] = []

    def make(scenario: ScenarioSpec = None, **options: Any) -> PrimeSimulator:
        simulator = PrimeSimulator(scenario, **options).start()
        started.append(simulator)
        return simulator

    yield make
    for simulator in started:
        simulator.stop()


@pytest.fixture
def prime_simulator(
    request: pytest.FixtureRequest, prime_simulator_factory: SimulatorFactory
) -> PrimeSimulator:
    """A started simulator for this test alone, configured by the ``prime_simulator`` marker."""
    marker = request.node.get_closest_marker("prime_simulator")
    args: tuple[Any, ...] = marker.args if marker else ()
    options: dict[str, Any] = dict(marker.kwargs) if marker else {}
    return prime_simulator_factory(*args, **options)


@pytest.fixture
def prime_connection(prime_simulator: PrimeSimulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """``prime_default`` pointing at ``prime_simulator`` through ``AIRFLOW_CONN_PRIME_DEFAULT``."""
    for name, value in airflow_connection_env(prime_simulator.base_url, prime_simulator.api_key).items():
        monkeypatch.setitem(os.environ, name, value)
    return "prime_default"
