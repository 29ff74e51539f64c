"""When to write a progress line while waiting for pods.

A wait polls every few seconds for many minutes. Logging every poll buries the one line that
matters, logging nothing leaves the user guessing. So a line is written when the progress text
changed (a pod moved on, installation advanced) and otherwise once per heartbeat, to show the
wait is alive. Pure: the caller passes the clock, so the sensor, the trigger and tests share it.
"""

from __future__ import annotations

import math

#: Seconds between two identical progress lines.
DEFAULT_HEARTBEAT = 300.0


class ProgressThrottle:
    """Say whether a progress line is worth logging now."""

    def __init__(self, heartbeat: float = DEFAULT_HEARTBEAT) -> None:
        self.heartbeat = heartbeat
        self._last_line: str | None = None
        self._last_at = -math.inf

    def due(self, line: str, now: float) -> bool:
        """True (and remember the line) when it differs from the last one or the heartbeat is up."""
        if line == self._last_line and now - self._last_at < self.heartbeat:
            return False
        self._last_line, self._last_at = line, now
        return True
