"""The log throttles of a wait: when a progress line, and when an "API unreachable" line, is worth
writing.

A wait polls every few seconds for many minutes; a line per poll buries the one that matters,
none leaves the user guessing. :class:`ProgressThrottle` lets a line through when it changed or
once per heartbeat; :class:`ApiTrouble` says once that the API is out of reach, then at a bounded
rate, then that it is back. Pure: the caller passes the clock.
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


#: Seconds between two "still unreachable" lines while the API stays out of reach.
DEFAULT_TROUBLE_REPEAT = 120.0


class ApiTrouble:
    """Say what to log while the API cannot be used: once when trouble starts, then at a bounded rate
    with a count, and once when an answer comes again.

    A wait retries every poll; a line per failed poll (and one per retry inside it) told the user one
    fact twenty times. The sensor (every mode) and the trigger feed this the same way; the returned
    line is ``None`` when nothing is worth writing.
    """

    def __init__(self, repeat: float = DEFAULT_TROUBLE_REPEAT) -> None:
        self.repeat = repeat
        self.attempts = 0
        self.last_error: BaseException | None = None
        self._since = 0.0
        self._said_at = -math.inf

    def failed(self, error: BaseException, now: float) -> str | None:
        """Record a failed attempt; the line to log now, if any."""
        self.attempts += 1
        self.last_error = error
        if self.attempts == 1:
            self._since = self._said_at = now
            return f"Cannot reach the Prime API, will keep trying: {error}"
        if now - self._said_at < self.repeat:
            return None
        self._said_at = now
        return (
            f"Prime API still unreachable after {self.attempts} attempts over "
            f"{_duration(now - self._since)}: {error}"
        )

    def answered(self, now: float) -> str | None:
        """Record an answer; the recovery line when it ends a stretch of trouble."""
        if not self.attempts:
            return None
        over = _duration(now - self._since)
        line = f"Prime API reachable again after {self.attempts} failed attempts over {over}"
        self.attempts, self.last_error = 0, None
        return line


def _duration(seconds: float) -> str:
    """``"45 s"`` under two minutes, else ``"3.5 min"``: what a person reading a log wants."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
