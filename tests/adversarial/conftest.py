"""Fixtures of the adversarial tests: the operator tests' simulator, contexts and ownership records."""

from __future__ import annotations

from tests.operators.conftest import lifecycle_sim, owner_records
from tests.simulated import prime_connection_extra, prime_simulator_defaults

__all__ = ["lifecycle_sim", "owner_records", "prime_connection_extra", "prime_simulator_defaults"]
