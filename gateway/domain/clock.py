"""The clock port: the core asks it for the time, so tests can hold the time still."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to, so unit tests can hold time still or step through it."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("a clock tells timezone-aware UTC time; give the start a tzinfo")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, moment: datetime) -> None:
        """Jump to ``moment`` (backwards too: a test may replay a clock that was wrong)."""
        if moment.tzinfo is None:
            raise ValueError("a clock tells timezone-aware UTC time; give the moment a tzinfo")
        self._now = moment.astimezone(UTC)

    def advance(self, delta: timedelta | None = None, /, **units: float) -> datetime:
        """Move forward by ``delta`` or by ``timedelta(**units)`` (``advance(seconds=61)``);
        returns the new time."""
        self._now += (delta or timedelta()) + timedelta(**units)
        return self._now
