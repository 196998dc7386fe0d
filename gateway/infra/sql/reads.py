"""``gateway.operators.readmodel.Oversight`` and the audit log's storage, on the store's ``Database``.

Reads run on its reader pool, head inserts in its group commit. Each
query is written so that an index answers it: documents by id, by sender and
id, by DocumentId, by acceptance time; deliveries by recipient and document;
events by seq (their primary key) or by document.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Integer, String, bindparam, func, select, type_coerce

from gateway.audit.heads import SignedHead
from gateway.audit.log import AuditRecord
from gateway.domain.vocabulary import DeliveryState
from gateway.exchange.ports import AtRisk
from gateway.infra.sql.deadlines import deadlines_at_risk
from gateway.infra.sql.engine import Database
from gateway.infra.sql.prepared import Prepared
from gateway.infra.sql.rows import DOC_COLUMNS, D, E, R, V, delivery_record, document_record, event_record
from gateway.infra.sql.tables import AuditHeadRow, UTCDateTime
from gateway.operators.readmodel import (
    Activity,
    DocumentSummary,
    Failing,
    FeedEvent,
    Finished,
    MinuteCount,
    QueueDepth,
    RouteMinute,
    RouteState,
    Search,
    TraceParts,
)

log = logging.getLogger(__name__)
H = AuditHeadRow.__table__  # type: ignore[attr-defined]
_AT_TEXT = type_coerce(E.c.at, String).label("at_text")  # exactly the stored (hashed) text
_RECENT_EVENTS = 50_000  # how far back the overview looks for recipients' failures
# The charts read at most this many records of the log (an hour of a busy node); older are left out.
_CHART_EVENTS = 200_000
# Records that take a delivery out of the queue (a route's deliveries: one record per recipient).
_FINISHING = ("delivered", "forwarded", "failed", "quarantined")
# Delivery states that routes carry too (pending; failed and quarantined routes fail their deliveries).
_ROUTE_STATES = {"pending", "failed", "quarantined"}


def _audit_record(r: Any) -> AuditRecord:
    return AuditRecord(
        r.seq,
        r.at_text,
        r.kind,
        r.document,
        r.recipient,
        r.network,
        r.request_id,
        r.detail,
        r.prev_hash,
        r.hash,
    )


def _head(r: Any) -> SignedHead:
    return SignedHead(r.seq, r.hash, r.signed_at, r.node, r.signer, r.algorithm, r.signature, r.certificate)


class SqlOversight:
    """Operators' reads and the audit log over a ``Database`` (a store's: ``SqlStore.database``)."""

    def __init__(self, database: Database) -> None:
        self._db = database

    # --- audit log -----------------------------------------------------------------------------

    async def audit_records(self, *, after: int, limit: int) -> list[AuditRecord]:
        def op(conn: Connection) -> list[AuditRecord]:
            rows = conn.execute(select(E, _AT_TEXT).where(E.c.seq > after).order_by(E.c.seq).limit(limit))
            return [_audit_record(r) for r in rows]

        return await self._db.read(op)

    async def audit_record_before(self, seq: int) -> AuditRecord | None:
        """The last record before ``seq``: where a check that starts at ``seq`` links to."""

        def op(conn: Connection) -> AuditRecord | None:
            row = conn.execute(
                select(E, _AT_TEXT).where(E.c.seq < seq).order_by(E.c.seq.desc()).limit(1)
            ).first()
            return _audit_record(row) if row is not None else None

        return await self._db.read(op)

    async def first_seq_at(self, moment: datetime) -> int | None:
        """The first record written at or after ``moment`` (a scan of ``at``: verification is rare)."""
        return await self._db.read(
            lambda c: c.execute(select(func.min(E.c.seq)).where(E.c.at >= moment)).scalar()
        )

    async def last_seq(self) -> int:
        return await self._db.read(lambda c: int(c.execute(select(func.max(E.c.seq))).scalar() or 0))

    async def at_risk(self, *, until: datetime) -> list[AtRisk]:
        return await self._db.read(lambda conn: deadlines_at_risk(conn, until=until))  # the watcher's query

    async def audit_heads(self, *, from_seq: int = 0) -> list[SignedHead]:
        def op(conn: Connection) -> list[SignedHead]:
            rows = conn.execute(select(H).where(H.c.seq >= from_seq).order_by(H.c.seq, H.c.id))
            return [_head(r) for r in rows]

        return await self._db.read(op)

    async def last_audit_head(self) -> SignedHead | None:
        def op(conn: Connection) -> SignedHead | None:
            row = conn.execute(select(H).order_by(H.c.seq.desc(), H.c.id.desc()).limit(1)).first()
            return _head(row) if row is not None else None

        return await self._db.read(op)

    async def add_audit_head(self, head: SignedHead) -> None:
        def op(conn: Connection) -> None:
            conn.execute(H.insert().values(**head.__dict__))

        await self._db.write(op)

    # --- one document --------------------------------------------------------------------------

    async def trace_parts(self, doc_id: str) -> TraceParts | None:
        def op(conn: Connection) -> TraceParts | None:
            row = conn.execute(select(*DOC_COLUMNS).where(D.c.id == doc_id)).first()
            if row is None:
                return None
            deliveries = conn.execute(select(V).where(V.c.document == doc_id).order_by(V.c.id))
            events = conn.execute(select(E).where(E.c.document == doc_id).order_by(E.c.at, E.c.seq))
            statuses = conn.execute(
                select(*DOC_COLUMNS)
                .where(D.c.response_for == doc_id, D.c.kind == "status")
                .order_by(D.c.accepted_at, D.c.id)
            )
            routes = conn.execute(
                select(R.c.network, R.c.state, R.c.attempts, R.c.last_error, R.c.done_at)
                .where(R.c.document == doc_id)
                .order_by(R.c.id)
            )
            return TraceParts(
                document=document_record(row),
                deliveries=[delivery_record(d) for d in deliveries],
                events=[event_record(e) for e in events],
                statuses=[document_record(s) for s in statuses],
                routes=[RouteState(r.network, r.state, r.attempts, r.last_error, r.done_at) for r in routes],
            )

        return await self._db.read(op)

    # --- searches ------------------------------------------------------------------------------

    async def search_documents(self, search: Search) -> list[DocumentSummary]:
        return await self._db.read(lambda conn: _with_deliveries(conn, _find(conn, search)))

    # --- overview and metrics ------------------------------------------------------------------

    async def accepted_per_minute(self, *, since: datetime) -> list[MinuteCount]:
        minute = func.substr(type_coerce(D.c.accepted_at, String), 1, 16).label("minute")

        def op(conn: Connection) -> list[MinuteCount]:
            rows = conn.execute(
                select(minute, D.c.sender_network, D.c.priority, func.count().label("n"))
                .where(D.c.accepted_at >= since, D.c.kind == "edoc")
                .group_by(minute, D.c.sender_network, D.c.priority)
            )
            return [
                MinuteCount(
                    datetime.fromisoformat(r.minute).replace(tzinfo=UTC), r.sender_network, r.priority, r.n
                )
                for r in rows
            ]

        return await self._db.read(op)

    async def queue_depths(self) -> list[QueueDepth]:
        return await self._db.read(_queue)

    async def activity(self, *, since: datetime) -> Activity:
        minute = func.substr(type_coerce(D.c.accepted_at, String), 1, 16).label("minute")

        def op(conn: Connection) -> Activity:
            # Documents by acceptance time (its index), their routes by document (the unique key).
            # Said as IN: with a plain join SQLite's planner walks every route instead.
            recent = select(D.c.id).where(D.c.accepted_at >= since)
            made = conn.execute(
                select(minute, R.c.network, R.c.priority, D.c.kind, func.count().label("n"))
                .select_from(R.join(D, D.c.id == R.c.document))
                .where(R.c.document.in_(recent), D.c.accepted_at >= since)
                .group_by(minute, R.c.network, R.c.priority, D.c.kind)
            )
            routes = [
                RouteMinute(datetime.fromisoformat(r.minute).replace(tzinfo=UTC), r.network, r.priority,
                            r.kind, r.n)
                for r in made
            ]  # fmt: skip
            # A route finishes long after its document was accepted when the queue is backed up:
            # read what finished from the log (by seq, its primary key), not from the routes.
            last = int(conn.execute(select(func.max(E.c.seq))).scalar() or 0)
            first = _first_seq_from(conn, since - timedelta(minutes=2), last)
            start = max(first, last - _CHART_EVENTS + 1)
            rows = conn.execute(
                select(E.c.at, E.c.kind, E.c.document, E.c.network, D.c.kind.label("doc_kind"),
                       D.c.accepted_at.label("doc_accepted_at"))
                .outerjoin(D, D.c.id == E.c.document)
                .where(E.c.seq >= start, E.c.kind.in_(_FINISHING), E.c.at >= since,
                       E.c.document.is_not(None), E.c.network.is_not(None))
            )  # fmt: skip
            finished = [
                Finished(r.at, r.document, r.network, r.kind, r.doc_kind, r.doc_accepted_at) for r in rows
            ]
            return Activity(since, routes, finished, _queue(conn), complete=start <= first)

        return await self._db.read(op)

    async def recent_documents(self, *, limit: int) -> list[DocumentSummary]:
        def op(conn: Connection) -> list[DocumentSummary]:
            # Ids sort by acceptance: the newest are the first rows of the primary key, backwards.
            rows = conn.execute(select(*DOC_COLUMNS).order_by(D.c.id.desc()).limit(limit)).all()
            return _with_deliveries(conn, rows)

        return await self._db.read(op)

    async def failing(self, *, limit: int) -> list[Failing]:
        def op(conn: Connection) -> list[Failing]:
            routes = conn.execute(
                select(R.c.document, R.c.state, R.c.network, R.c.last_error, R.c.attempts, D.c.accepted_at)
                .join(D, D.c.id == R.c.document)
                .where(R.c.state.in_(("quarantined", "failed")))
                .order_by(R.c.id.desc())
                .limit(limit)
            )
            found = [
                Failing(r.document, r.state, r.network, None, r.last_error or "", r.attempts, r.accepted_at)
                for r in routes
            ]
            last = conn.execute(select(func.max(E.c.seq))).scalar() or 0
            opened = conn.execute(
                select(E)
                .where(E.c.seq > last - _RECENT_EVENTS, E.c.kind == "recipient_failed")
                .order_by(E.c.seq.desc())
                .limit(limit)
            )
            for e in opened:
                reason = str(json.loads(e.detail).get("reason", ""))
                found.append(Failing(e.document, e.kind, e.network, e.recipient, reason, None, e.at))
            found.sort(key=lambda f: f.at or datetime.min.replace(tzinfo=UTC), reverse=True)
            return found[:limit]

        return await self._db.read(op)

    async def events_after(self, seq: int, *, limit: int) -> list[FeedEvent]:
        def op(conn: Connection) -> list[FeedEvent]:
            events = []
            for row in _FEED.all(conn, {"after": seq, "n": limit}):
                (number, kind, at, document, recipient, network, request_id, detail, writer) = row[:9]
                priority, sender_network, document_kind, accepted_at = row[9:]
                events.append(
                    FeedEvent(
                        number,
                        kind,
                        _utc(at),
                        document,
                        recipient,
                        network,
                        request_id,
                        json.loads(detail),
                        priority,
                        sender_network,
                        document_kind,
                        _utc(accepted_at) if accepted_at is not None else None,
                        writer,
                    )
                )
            return events

        return await self._db.read(op)


# Read every second by the metrics feed, with a dozen records for every document accepted:
# prepared (``gateway.infra.sql.prepared``), its rows read as the driver gives them.
_FEED = Prepared(
    select(
        E.c.seq,
        E.c.kind,
        E.c.at,
        E.c.document,
        E.c.recipient,
        E.c.network,
        E.c.request_id,
        E.c.detail,
        E.c.writer,
        D.c.priority,
        D.c.sender_network,
        D.c.kind,
        D.c.accepted_at,
    )
    .outerjoin(D, D.c.id == E.c.document)
    .where(E.c.seq > bindparam("after"))
    .order_by(E.c.seq)
    .limit(bindparam("n", type_=Integer()))
)
_UTC = UTCDateTime()


def _utc(value: Any) -> datetime:
    # The column's own conversion (stored as ISO text in UTC), applied to the driver's value.
    at = _UTC.process_result_value(value, None)
    assert at is not None
    return at


def _queue(conn: Connection) -> list[QueueDepth]:
    rows = conn.execute(
        select(R.c.network, R.c.priority, func.count().label("n"))
        .where(R.c.state == "pending")
        .group_by(R.c.network, R.c.priority)
    )
    return [QueueDepth(r.network, r.priority, r.n) for r in rows]


def _with_deliveries(conn: Connection, rows: Sequence[Any]) -> list[DocumentSummary]:
    ids = [r.id for r in rows]
    by_doc: dict[str, list[Any]] = {i: [] for i in ids}
    if ids:
        for d in conn.execute(select(V).where(V.c.document.in_(ids)).order_by(V.c.id)):
            by_doc[d.document].append(delivery_record(d))
    return [DocumentSummary(document_record(r), tuple(by_doc[r.id])) for r in rows]


def _first_seq_from(conn: Connection, moment: datetime, last: int) -> int:
    """The first record written at or after ``moment`` (``last + 1`` if none), by bisecting seq on
    its primary key: records are appended in time order, give or take a batch's few seconds."""
    lo, hi = 1, last + 1
    while lo < hi:
        mid = (lo + hi) // 2
        row = conn.execute(select(E.c.seq, E.c.at).where(E.c.seq >= mid).order_by(E.c.seq).limit(1)).first()
        if row is None or row.at >= moment:
            hi = mid
        else:
            lo = row.seq + 1
    return lo


def _find(conn: Connection, s: Search) -> list[Any]:
    """Matching documents, newest first, at most ``s.limit``: each branch walks one index in
    acceptance order (ids sort by acceptance) and stops after ``limit`` rows."""

    def common(query: Any, id_column: Any) -> Any:
        query = query.where(D.c.kind == "edoc")
        if s.since is not None:
            query = query.where(D.c.accepted_at >= s.since)
        if s.until is not None:
            query = query.where(D.c.accepted_at < s.until, id_column < _id_ceiling(s.until))
        if s.before is not None:
            query = query.where(id_column < s.before)
        if s.document_id is not None:
            query = query.where(D.c.document_id == s.document_id)
        return query.order_by(id_column.desc()).limit(s.limit)

    if s.id is not None:
        return list(conn.execute(select(*DOC_COLUMNS).where(D.c.id == s.id)).all())
    states = sorted(_with_quarantine(s.states))
    any_state = (
        select(V.c.id).where(V.c.document == D.c.id, V.c.state.in_(states)).exists() if states else None
    )
    if s.agency is None:
        query = select(*DOC_COLUMNS)
        if states and set(states) <= _ROUTE_STATES:
            # Few documents wait or failed: start from the routes' state index, not every document.
            query = query.where(D.c.id.in_(select(R.c.document).where(R.c.state.in_(states))))
        elif any_state is not None:
            query = query.where(any_state)
        if s.since is not None and s.document_id is None:
            return _in_window(conn, query, s)
        return list(conn.execute(common(query, D.c.id)).all())
    sent = common(select(*DOC_COLUMNS).where(D.c.sender == s.agency), D.c.id)
    if any_state is not None:
        sent = sent.where(any_state)
    # Ordered by the delivery's own document column, so that (recipient, document) serves the order.
    received = common(
        select(*DOC_COLUMNS).join(V, V.c.document == D.c.id).where(V.c.recipient == s.agency),
        V.c.document,
    )
    if states:
        received = received.where(V.c.state.in_(states))
    merged = {r.id: r for r in (*conn.execute(sent).all(), *conn.execute(received).all())}
    return [merged[i] for i in sorted(merged, reverse=True)[: s.limit]]


def _id_ceiling(moment: datetime) -> str:
    """Above every id of a document accepted before ``moment``: ids begin with the time in ms at
    which the first node accepted the document (``intake.new_id``), never later than its
    acceptance here (a document forwarded by a peer can be days older, so there is no floor)."""
    ms = int((moment + timedelta(hours=1)).timestamp() * 1000)  # an hour for clocks that disagree
    return f"{max(ms, 0):012x}g"


def _in_window(conn: Connection, query: Any, s: Search) -> list[Any]:
    """A time window without an agency walks the acceptance-time index, newest first; the next
    page starts below the acceptance time of the last one shown (``before``)."""
    query = query.where(D.c.kind == "edoc", D.c.accepted_at >= s.since)
    if s.until is not None:
        query = query.where(D.c.accepted_at < s.until)
    if s.before is not None:
        older = select(D.c.accepted_at).where(D.c.id == s.before).scalar_subquery()
        query = query.where(D.c.accepted_at < older)
    return list(conn.execute(query.order_by(D.c.accepted_at.desc()).limit(s.limit)).all())


def _with_quarantine(states: frozenset[str]) -> set[str]:
    """``failed`` means "did not reach the inbox": a quarantined delivery failed too."""
    out = set(states)
    if DeliveryState.FAILED.value in out:
        out.add(DeliveryState.QUARANTINED.value)
    return out
