"""The order in which routes are carried: one lane per urgency, fair between senders within a lane.

A route's ``fair_rank`` is given when its document is stored (``fair_rank``); couriers claim the
most urgent lane first and, within a lane, the lowest rank, then the oldest (``claim_routes``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Table,
    Update,
    and_,
    bindparam,
    func,
    or_,
    select,
    update,
)

from gateway.domain.vocabulary import Network, Priority
from gateway.exchange.ports import RouteJob
from gateway.infra.sql.prepared import Prepared
from gateway.infra.sql.rows import DOC_COLUMNS, PP, D, R, V, document_record
from gateway.infra.sql.tables import UTCDateTime

# Built once: a statement made per call cost more in SQLAlchemy's construction and cache-key work
# than SQLite took to run it (bench/store_writes.py, issue 13). One query for both ends of the lane.
_LANE = and_(R.c.state == "pending", R.c.priority == bindparam("lane"))
_LANE_ENDS = Prepared(
    select(
        select(func.min(R.c.fair_rank)).where(_LANE).scalar_subquery(),
        select(func.max(R.c.fair_rank)).where(_LANE, R.c.sender == bindparam("sender")).scalar_subquery(),
    )
)


def claim_lane(table: Table, free: ColumnElement[bool], order: Sequence[Any], **claim: Any) -> Update:
    """One lane's claim in one statement: the first ``:n`` rows of ``table`` that are ``free``, in
    ``order``, changed as ``claim`` says, their ids returned. SKIP LOCKED on PostgreSQL, so replicas
    never take the same row; SQLite has one writer and renders no FOR UPDATE. Routes and push
    notifications are claimed so (``gateway.infra.sql.notifications``). No parameter may be named
    as a column of ``table``: SQLAlchemy keeps those names for the SET clause."""
    lane = select(table.c.id).where(free).order_by(*order).limit(bindparam("n", type_=Integer()))
    return (
        update(table)
        .where(table.c.id.in_(lane.with_for_update(skip_locked=True)))
        .values(**claim)
        .returning(table.c.id)
    )


# A lane's free routes: pending, of the lane's urgency, their lease (if any) run out.
_FREE = and_(
    _LANE, or_(R.c.claimed_until.is_(None), R.c.claimed_until < bindparam("now", type_=UTCDateTime()))
)
_ORDER = (R.c.fair_rank, R.c.id)
_TAKEN: dict[str, Any] = {
    "claimed_by": bindparam("node"),
    "claimed_until": bindparam("until"),
    "attempts": R.c.attempts + 1,
}
_CLAIM_LANE = Prepared(claim_lane(R, _FREE, _ORDER, **_TAKEN))
_LANES = sorted(map(int, Priority), reverse=True)  # most urgent first
# What the courier needs of the routes just claimed: the document's columns, and its package
# only when it is one part (at most 1 MiB, most documents): a large one the courier reads a part
# at a time. Read with the claim, a small package costs the courier no read of its own (one per
# route measured 18% off the delivery rate of 12 KB packages, bench/compare.py).
_CLAIMED = (
    select(
        R.c.id.label("route_id"),
        R.c.network.label("target"),
        R.c.attempts.label("tries"),
        PP.c.data.label("single_part"),
        *DOC_COLUMNS,
    )
    .join(D, D.c.id == R.c.document)
    .outerjoin(PP, and_(PP.c.document == D.c.id, PP.c.seq == 0, D.c.parts == 1))
    .where(R.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(R.c.priority.desc(), R.c.fair_rank, R.c.id)
)
_RECIPIENTS = select(V.c.route, V.c.recipient, V.c.addressed).where(
    V.c.route.in_(bindparam("ids", expanding=True))
)


def fair_rank(conn: Connection, sender: str, priority: int) -> int:
    """Start-time fair queueing within one urgency: a sender's next document ranks one after its
    previous pending one, but never before the lane's current head. So a 10,000-document batch
    takes ranks head..head+9,999 while another sender's single document takes the head rank and
    is carried right after the batch's first, not after all of it."""
    row = _LANE_ENDS.first(conn, {"lane": priority, "sender": sender})
    head, last = row if row is not None else (None, None)
    head = head or 0
    return head if last is None else max(head, int(last) + 1)


def claim_routes(
    conn: Connection, *, node: str, limit: int, now: datetime, until: datetime, exclude: Collection[Network]
) -> list[RouteJob]:
    """Claim for ``node``, until ``until``, up to ``limit`` pending routes whose lease ran out, in
    carrying order; routes into the ``exclude``d networks stay where they are."""
    # One lane at a time, most urgent first: within a lane ix_routes_claim gives (fair_rank,
    # id) in order, so a claim reads about `limit` rows. One query ordered by priority DESC
    # then fair_rank ASC cannot follow that index and sorted the whole backlog every time
    # (a Hỏa tốc document waited a second behind 10,000 routes instead of 0.2 s).
    ids: list[int] = []
    for priority in _LANES:
        if len(ids) == limit:
            break
        free = {"lane": priority, "now": now, "n": limit - len(ids), "node": node, "until": until}
        if exclude:  # a link is down: rare, the statement built for the networks it names
            up = R.c.network.not_in([network.value for network in exclude])
            ids += sorted(conn.execute(claim_lane(R, and_(_FREE, up), _ORDER, **_TAKEN), free).scalars())
        else:
            ids += sorted(route_id for (route_id,) in _CLAIM_LANE.all(conn, free))
    if not ids:
        return []
    rows = conn.execute(_CLAIMED, {"ids": ids}).all()
    recipients: dict[int, list[tuple[str, str]]] = {i: [] for i in ids}
    for d in conn.execute(_RECIPIENTS, {"ids": ids}):
        recipients[d.route].append((d.recipient, d.addressed))
    return [
        RouteJob(
            route_id=row.route_id,
            document=document_record(row),
            target=Network(row.target),
            recipients=tuple(recipients[row.route_id]),
            attempts=row.tries,
            package=bytes(row.single_part) if row.single_part is not None else None,
        )
        for row in rows
    ]
