"""The push-notification queue in SQL: queued in the delivering transaction, claimed like routes.

``queue_notifications`` runs inside ``complete_routes`` and ``accept_forwarded``, so a delivery and
its notification commit together (a crash loses neither); ``claim_notifications`` hands the due
ones out one urgency at a time, oldest first, under a lease (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so replicas never send one twice at once).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, select

from gateway.domain.vocabulary import Network, Priority
from gateway.exchange.ports import NotificationJob
from gateway.infra.sql.fair import claim_lane
from gateway.infra.sql.prepared import Prepared
from gateway.infra.sql.rows import D, N, P
from gateway.infra.sql.tables import UTCDateTime

# Built once: it runs for every delivery that lands (bench/store_writes.py); most routes land in
# one inbox, asked of the driver directly (``prepared``).
_WITH_ENDPOINT = select(P.c.agency).where(P.c.agency.in_(bindparam("agencies", expanding=True)))
_HAS_ENDPOINT = Prepared(select(P.c.agency).where(P.c.agency == bindparam("agency")))
# The notifier claims after every batch of deliveries, mostly to find nothing: one statement per
# urgency, as routes are claimed (``gateway.infra.sql.fair``).
_DUE = and_(
    N.c.priority == bindparam("lane"),
    N.c.next_attempt_at <= bindparam("now", type_=UTCDateTime()),
)
_ORDER = (N.c.id,)
_TAKEN: dict[str, Any] = {"claimed_by": bindparam("node"), "next_attempt_at": bindparam("until")}
_CLAIM_LANE = Prepared(claim_lane(N, _DUE, _ORDER, **_TAKEN))
_LANES = sorted(map(int, Priority), reverse=True)  # most urgent first


def queue_notifications(
    conn: Connection, doc_id: str, priority: int, recipients: Sequence[tuple[str, str]], *, now: datetime
) -> None:
    """Queue a notification of ``doc_id`` for each (recipient, network) that has an endpoint."""
    if not recipients:
        return
    wanted = {r for r, _ in recipients}
    if len(wanted) == 1:
        with_endpoint = {agency for (agency,) in _HAS_ENDPOINT.all(conn, {"agency": next(iter(wanted))})}
    else:
        with_endpoint = {row.agency for row in conn.execute(_WITH_ENDPOINT, {"agencies": sorted(wanted)})}
    if not with_endpoint:
        return
    conn.execute(
        N.insert(),
        [
            {
                "document": doc_id,
                "recipient": recipient,
                "network": network,
                "priority": int(priority),
                "created_at": now,
                "next_attempt_at": now,
                "attempts": 0,
            }
            for recipient, network in recipients
            if recipient in with_endpoint
        ],
    )


def claim_notifications(
    conn: Connection, *, node: str, limit: int, now: datetime, until: datetime, exclude: Collection[str]
) -> list[NotificationJob]:
    ids: list[int] = []
    for priority in _LANES:
        if len(ids) >= limit:
            break
        due = {"lane": priority, "now": now, "n": limit - len(ids), "node": node, "until": until}
        if exclude:  # an endpoint is failing: rare, the statement built for the agencies it names
            up = N.c.recipient.not_in(sorted(exclude))
            ids += sorted(conn.execute(claim_lane(N, and_(_DUE, up), _ORDER, **_TAKEN), due).scalars())
        else:
            ids += sorted(notification_id for (notification_id,) in _CLAIM_LANE.all(conn, due))
    if not ids:
        return []
    rows = conn.execute(
        select(N, D.c.kind, D.c.status_code, D.c.response_for, D.c.sender, P.c.url)
        .join(D, D.c.id == N.c.document)
        .join(P, P.c.agency == N.c.recipient)
        .where(N.c.id.in_(ids))
        .order_by(N.c.priority.desc(), N.c.id)
    ).all()
    return [
        NotificationJob(
            id=row.id,
            document=row.document,
            recipient=row.recipient,
            network=Network(row.network),
            kind=row.kind,
            status_code=row.status_code,
            response_for=row.response_for,
            sender=row.sender,
            priority=Priority(row.priority),
            created_at=row.created_at,
            attempts=row.attempts,
            url=row.url,
        )
        for row in rows
    ]
