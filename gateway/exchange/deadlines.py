"""Watching deadlines: a document whose due time nears (DueDate, or the time set for a Hỏa tốc
hẹn giờ delivery) while a recipient has not fetched it or not answered 03 is flagged, once,
in the trace, so an operator can phone the recipient before it is too late."""

from __future__ import annotations

import logging
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from gateway.domain.clock import Clock
from gateway.exchange.ports import AtRisk, DeadlineStore, NewEvent

log = logging.getLogger(__name__)
VIETNAM = ZoneInfo("Asia/Ho_Chi_Minh")
# How long before its deadline a delivery counts as at risk: the watcher, `gateway trace
# --overdue`, the console and /metrics all use this one window, so they agree.
WARN_BEFORE = timedelta(hours=2)


def due_at(due: str | None) -> datetime | None:
    """edXML DueDate (``yyyy/MM/dd`` or ``yyyy/MM/dd HH:mm:ss``, Vietnam time) as an aware UTC time.

    A date alone means the end of that day. Anything unreadable has no deadline (the schema
    already checked the form; this only guards against impossible dates such as 2026/02/30).
    """
    if not due:
        return None
    text = due.strip()
    try:
        if len(text) > 10:
            moment = datetime.strptime(text, "%Y/%m/%d %H:%M:%S")
        else:
            moment = datetime.combine(datetime.strptime(text, "%Y/%m/%d").date(), time(23, 59, 59))
    except ValueError:
        return None
    return moment.replace(tzinfo=VIETNAM)


def flag_kind(risk: AtRisk, now: datetime) -> str:
    return "overdue" if risk.due_at <= now else "deadline_near"


def at_risk_view(risk: AtRisk, now: datetime) -> dict[str, Any]:
    """One delivery at risk as operators read it (CLI ``--json``, console): no subject, ever."""
    return {
        "document": risk.document,
        "recipient": risk.recipient,
        "network": risk.network.value,
        "state": flag_kind(risk, now),
        "due_at": risk.due_at.isoformat(),
        "minutes_left": round((risk.due_at - now).total_seconds() / 60),
        "fetched": risk.fetched_at is not None,
        # fetched means the 01 is in; what is still missing is the recipient's 03 (or 02/04-06)
        "waiting_for": "03" if risk.fetched_at is not None else "fetch (01) and 03",
        "flagged": sorted(risk.flagged),
    }


class DeadlineWatcher:
    """Flags deliveries at risk of missing their deadline, at most once per kind and recipient."""

    def __init__(
        self,
        store: DeadlineStore,
        clock: Clock,
        *,
        warn_before: timedelta = WARN_BEFORE,
        interval: float = 30.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self._warn_before = warn_before
        self.interval = interval  # seconds between checks, as the node runs them

    async def check_once(self) -> list[NewEvent]:
        """Flag what is newly at risk now, in one write; returns the flags written."""
        now = self._clock.now()
        events = []
        for risk in await self._store.deadlines_at_risk(until=now + self._warn_before):
            kind = flag_kind(risk, now)
            if kind in risk.flagged:
                continue
            events.append(
                NewEvent(
                    kind,
                    now,
                    risk.document,
                    risk.recipient,
                    risk.network.value,
                    {
                        "due_at": risk.due_at.isoformat(),
                        "fetched": risk.fetched_at is not None,
                        "minutes_left": round((risk.due_at - now).total_seconds() / 60),
                    },
                )
            )
        if events:
            await self._store.add_events(events)
            log.warning("%d deliveries at risk of missing their deadline", len(events))
        return events
