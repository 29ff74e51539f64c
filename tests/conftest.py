"""Suite-wide pytest configuration."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog

# Fixtures `prime_simulator`, `prime_simulator_factory`, `prime_connect`, `prime_clean_env`...: a
# fresh local Prime API per test (see docs/simulator.md); the same plugin users enable in their
# own conftest.py.
pytest_plugins = ["airflow_provider_prime.testing.pytest_plugin"]


@pytest.fixture(autouse=True)
def _clean_prime_environment(prime_clean_env: None) -> None:
    """No test sees the developer's own PRIME_API_KEY, base URL or ``prime_default`` connection."""


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """Everything logged through structlog (Airflow's trigger and task loggers) during the test."""
    with structlog.testing.capture_logs() as captured:
        yield captured
