"""Suite-wide pytest configuration."""

from __future__ import annotations

# Fixtures `prime_simulator`, `prime_simulator_factory`, `prime_connection`: a fresh local Prime
# API per test (see docs/simulator.md); the same plugin users enable in their own conftest.py.
pytest_plugins = ["airflow_provider_prime.testing.pytest_plugin"]
