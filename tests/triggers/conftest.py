from __future__ import annotations

from tests.simulated import prime_connection_extra, prime_simulator_defaults

__all__ = ["prime_connection_extra", "prime_simulator_defaults"]
