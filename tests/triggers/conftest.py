from __future__ import annotations

from tests.simulated import clean_env, connect, logs, simulator

__all__ = ["clean_env", "connect", "logs", "simulator"]
