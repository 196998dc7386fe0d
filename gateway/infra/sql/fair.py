"""The order in which routes are carried: one lane per urgency, fair between senders within a lane.

A route's ``fair_rank`` is given when its document is stored (``fair_rank``); couriers claim the
most urgent lane first and, within a lane, the lowest rank, then the oldest (``claim_routes``).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import Connection, and_, bindparam, func, or_, select, update

from gateway.domain.vocabulary import Network, Priority
from gateway.exchange.ports import RouteJob
from gateway.infra.sql.rows import DOC_COLUMNS, PP, D, R, V, document_record

# Built once: a statement made per call cost more in SQLAlchemy's construction and cache-key work
# than SQLite took to run it (bench/store_writes.py, issue 13). One query for both ends of the lane.
_LANE = and_(R.c.state == "pending", R.c.priority == bindparam("priority"))
_LANE_ENDS = select(
    select(func.min(R.c.fair_rank)).where(_LANE).scalar_subquery(),
    select(func.max(R.c.fair_rank)).where(_LANE, R.c.sender == bindparam("sender")).scalar_subquery(),
)


def fair_rank(conn: Connection, sender: str, priority: int) -> int:
    """Start-time fair queueing within one urgency: a sender's next document ranks one after its
    previous pending one, but never before the lane's current head. So a 10,000-document batch
    takes ranks head..head+9,999 while another sender's single document takes the head rank and
    is carried right after the batch's first, not after all of it."""
    head, last = conn.execute(_LANE_ENDS, {"priority": priority, "sender": sender}).one()
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
    for priority in sorted(map(int, Priority), reverse=True):
        if len(ids) == limit:
            break
        candidates = (
            select(R.c.id)
            .where(
                R.c.state == "pending",
                R.c.priority == priority,
                or_(R.c.claimed_until.is_(None), R.c.claimed_until < now),
            )
            .order_by(R.c.fair_rank, R.c.id)
            .limit(limit - len(ids))
        )
        if exclude:
            candidates = candidates.where(R.c.network.not_in([n.value for n in exclude]))
        if conn.dialect.name == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        ids += [row.id for row in conn.execute(candidates)]
    if not ids:
        return []
    conn.execute(
        update(R)
        .where(R.c.id.in_(ids))
        .values(claimed_by=node, claimed_until=until, attempts=R.c.attempts + 1)
    )
    # The document's columns, and its package only when it is one part (at most 1 MiB, most
    # documents): a large one the courier reads a part at a time. Read with the claim, a small
    # package costs the courier no read of its own (one per route measured 18% off the
    # delivery rate of 12 KB packages, bench/compare.py).
    single = and_(PP.c.document == D.c.id, PP.c.seq == 0, D.c.parts == 1)
    rows = conn.execute(
        select(
            R.c.id.label("route_id"),
            R.c.network.label("target"),
            R.c.attempts.label("tries"),
            PP.c.data.label("single_part"),
            *DOC_COLUMNS,
        )
        .join(D, D.c.id == R.c.document)
        .outerjoin(PP, single)
        .where(R.c.id.in_(ids))
        .order_by(R.c.priority.desc(), R.c.fair_rank, R.c.id)
    ).all()
    recipients: dict[int, list[tuple[str, str]]] = {i: [] for i in ids}
    for d in conn.execute(select(V.c.route, V.c.recipient, V.c.addressed).where(V.c.route.in_(ids))):
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
