"""Deliveries whose answer is due: the deadline watcher's query, which the operators' reads share."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select

from gateway.domain.vocabulary import DeliveryState, Network
from gateway.exchange.ports import AtRisk
from gateway.infra.sql.rows import D, E, V

_ANSWERED = ("02", "03", "04", "05", "06")  # any of these means the recipient has responded
_OPEN = [DeliveryState.PENDING.value, DeliveryState.DELIVERED.value, DeliveryState.FETCHED.value]


def deadlines_at_risk(conn: Connection, *, until: datetime) -> list[AtRisk]:
    """Deliveries of documents due by ``until`` that their recipient has not answered, soonest
    first, each with the deadline flags (``deadline_near``, ``overdue``) already recorded."""
    status = D.alias("status")
    rows = conn.execute(
        select(D.c.id, D.c.due_at, V.c.recipient, V.c.network, V.c.fetched_at)
        .join(V, V.c.document == D.c.id)
        .where(
            D.c.kind == "edoc",
            D.c.due_at.is_not(None),
            D.c.due_at <= until,
            V.c.state.in_(_OPEN),
            ~select(status.c.id)
            .where(
                status.c.response_for == D.c.id,
                status.c.sender == V.c.recipient,
                status.c.status_code.in_(_ANSWERED),
            )
            .exists(),
        )
        .order_by(D.c.due_at)
    ).all()
    flags: dict[tuple[str, str], set[str]] = {}
    if rows:
        for ev in conn.execute(
            select(E.c.document, E.c.recipient, E.c.kind).where(
                E.c.document.in_({r.id for r in rows}), E.c.kind.in_(("deadline_near", "overdue"))
            )
        ):
            flags.setdefault((ev.document, ev.recipient), set()).add(ev.kind)
    return [
        AtRisk(r.id, r.recipient, Network(r.network), r.due_at, r.fetched_at,
               frozenset(flags.get((r.id, r.recipient), ())))
        for r in rows
    ]  # fmt: skip
