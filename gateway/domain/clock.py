"""The clock port: the core asks it for the time, so tests can hold the time still."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

VIETNAM = ZoneInfo("Asia/Ho_Chi_Minh")


def shown(moment: datetime) -> str:
    """A moment as a person reads it from the gateway: Vietnam time, saying so
    (``2026-12-04 10:04:32 +07:00``).

    The one rule for every time a command prints or a message names (certificate checks, the
    certificate log, refusals, the inbox); what is stored, logged as JSON or answered in JSON
    stays UTC ISO 8601. Pages and timelines that name the zone in their header print bare times.
    """
    local = moment.astimezone(VIETNAM)
    offset = local.strftime("%z")  # +0700; Python 3.11's strftime has no %:z
    return f"{local:%Y-%m-%d %H:%M:%S} {offset[:3]}:{offset[3:]}"


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
