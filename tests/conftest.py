"""Suite-wide pytest configuration."""

from __future__ import annotations

import pytest

# Fixtures `prime_simulator`, `prime_simulator_factory`, `prime_connection`: a fresh local Prime
# API per test (see docs/simulator.md); the same plugin users enable in their own conftest.py.
pytest_plugins = ["airflow_provider_prime.testing.pytest_plugin"]

#: What a developer's shell may hold that would point a test at their own key or connection.
PRIME_ENVIRONMENT = ("PRIME_API_KEY", "PRIME_API_BASE_URL", "PRIME_BASE_URL", "AIRFLOW_CONN_PRIME_DEFAULT")


@pytest.fixture(autouse=True)
def _clean_prime_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's own PRIME_API_KEY, base URL or ``prime_default`` connection."""
    for name in PRIME_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
