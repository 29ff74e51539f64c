"""A hand-moved clock for the wait drivers (:class:`airflow_provider_prime.waiting.Clock`).

Pausing moves it at once and records the pause; nothing waits for real. ``on_pause`` runs at each
pause, before the clock moves, so a test can see what had happened by then (e.g. no request yet).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class FakeClock:
    def __init__(
        self, start: float = 1_000_000.0, *, on_pause: Callable[[float], object] | None = None
    ) -> None:
        self.now = start
        self.start = start
        self.pauses: list[float] = []
        self.on_pause = on_pause

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        if self.on_pause is not None:
            self.on_pause(seconds)
        self.now += max(0.0, seconds)

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
        await asyncio.sleep(0)  # still a turn of the event loop, as a real pause is

    @property
    def elapsed(self) -> float:
        return self.now - self.start
