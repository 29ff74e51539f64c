"""Small conversions the operators share: durations given as numbers or timedeltas, API timestamps."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone


def seconds(value: timedelta | float) -> float:
    """A duration argument (seconds or a timedelta) as seconds."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def timestamp(text: str | None) -> datetime | None:
    """An API timestamp as an aware datetime (``Z`` accepted on Python 3.10 too); None if unusable."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
