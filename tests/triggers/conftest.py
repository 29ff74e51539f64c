from __future__ import annotations

from tests.simulated import connect, logs, simulator

__all__ = ["connect", "logs", "simulator"]
