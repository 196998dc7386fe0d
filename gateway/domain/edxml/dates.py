"""Dates as senders write them on the axis.

``yyyy/MM/dd`` (and ``yyyy/MM/dd HH:mm:ss``) is the standard; real packages also hold
``dd/MM/yyyy``, ``yyyy-MM-dd`` and the same with a time of day. The three forms cannot be
confused: the four-digit year is first or last, and the separator tells the rest. The gateway
writes and stores the standard form only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time

# [0-9], never \d: \d also matches non-ASCII digits.
_TIME = r"(?: ([0-9]{2}):([0-9]{2}):([0-9]{2}))?"
_FORMS = (
    (re.compile(rf"([0-9]{{4}})/([0-9]{{2}})/([0-9]{{2}}){_TIME}"), (0, 1, 2)),  # yyyy/MM/dd
    (re.compile(rf"([0-9]{{2}})/([0-9]{{2}})/([0-9]{{4}}){_TIME}"), (2, 1, 0)),  # dd/MM/yyyy
    (re.compile(rf"([0-9]{{4}})-([0-9]{{2}})-([0-9]{{2}}){_TIME}"), (0, 1, 2)),  # yyyy-MM-dd
)
ACCEPTED_FORMS = "yyyy/MM/dd, dd/MM/yyyy or yyyy-MM-dd, each optionally followed by HH:mm:ss"


@dataclass(frozen=True)
class EdxmlMoment:
    """A calendar date, with a time of day when the sender gave one (Vietnam time, as written)."""

    day: date
    at: time | None = None

    @property
    def standard(self) -> str:
        """The QCVN 102 form: ``yyyy/MM/dd`` or ``yyyy/MM/dd HH:mm:ss``."""
        text = self.day.strftime("%Y/%m/%d")
        return f"{text} {self.at.strftime('%H:%M:%S')}" if self.at is not None else text


def read_moment(text: str) -> EdxmlMoment:
    """Read a date in any of the accepted forms; ``ValueError`` when it is none of them, or
    names a day or time that does not exist (``2026/02/30``, ``25:00:00``)."""
    value = text.strip()
    for pattern, (y, m, d) in _FORMS:
        match = pattern.fullmatch(value)
        if match is None:
            continue
        parts = match.groups()
        day = date(int(parts[y]), int(parts[m]), int(parts[d]))
        if parts[3] is None:
            return EdxmlMoment(day)
        return EdxmlMoment(day, time(int(parts[3]), int(parts[4]), int(parts[5])))
    raise ValueError(f"not a date in any accepted form ({ACCEPTED_FORMS})")


def edxml_date(moment: datetime) -> str:
    """``moment``'s date in the standard form, as the gateway writes it."""
    return moment.strftime("%Y/%m/%d")


def edxml_timestamp(moment: datetime) -> str:
    """``moment`` in the standard form with its time of day, as the gateway writes it."""
    return moment.strftime("%Y/%m/%d %H:%M:%S")
