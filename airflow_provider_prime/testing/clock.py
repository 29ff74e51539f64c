"""Clocks for the simulator: real monotonic time by default, a hand-driven one for tests.

Pod timelines are measured on the simulator's clock, so a test that wants "ten minutes later"
advances a :class:`ManualClock` instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: Anything that returns seconds as a float and only ever moves forward.
Clock = Callable[[], float]

#: The clock used when none is given.
real_clock: Clock = time.monotonic


class ManualClock:
    """A clock that moves only when told to; safe to advance from one thread and read from another."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (never backwards) and return the new time."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            self._now += seconds
            return self._now

    def __repr__(self) -> str:
        return f"ManualClock({self():.3f})"
