"""Fixtures of the adversarial tests: the operator tests' simulator, contexts and ownership records."""

from __future__ import annotations

from tests.operators.conftest import lifecycle_sim, owner_records
from tests.simulated import connect, logs

__all__ = ["connect", "lifecycle_sim", "logs", "owner_records"]
