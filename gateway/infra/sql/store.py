"""``SqlStore``: the storage port (``gateway.exchange.ports.Store``) on SQLite or PostgreSQL.

Each method is one transaction: writes are operations in the group commit of a ``Database``
(``gateway.infra.sql.engine``), reads run on its reader pool. The delivery log's records are
appended with ``gateway.infra.sql.chain`` and routes ranked and claimed by ``gateway.infra.sql.fair``.
A little over 400 lines: one short method per port method, kept together as the port is.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Collection, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Connection, LargeBinary, and_, bindparam, delete, func, literal_column, select, update

from gateway.domain.body import PART_BYTES, body_pieces, body_sha256, body_size
from gateway.domain.edxml import AttachmentFacts
from gateway.domain.vocabulary import Classification, DeliveryState, Network
from gateway.errors import DocumentConflict, StoreError
from gateway.exchange.ports import (
    CLASSIFIED_ATTACHMENTS,
    AtRisk,
    Carried,
    DeliveryRecord,
    DocumentRecord,
    Endpoint,
    EventRecord,
    InboxItem,
    NewDocument,
    NewEvent,
    NotificationJob,
    RouteJob,
)
from gateway.exchange.recalls import RECALL_CODES
from gateway.infra.sql import schema
from gateway.infra.sql.chain import append_events
from gateway.infra.sql.deadlines import deadlines_at_risk
from gateway.infra.sql.engine import Database, in_savepoint
from gateway.infra.sql.fair import claim_routes, fair_rank
from gateway.infra.sql.notifications import claim_notifications, queue_notifications
from gateway.infra.sql.notify import notify_work
from gateway.infra.sql.prepared import Prepared
from gateway.infra.sql.rows import (
    DOC_COLUMNS,
    PP,
    A,
    D,
    DocumentView,
    E,
    N,
    P,
    R,
    V,
    attachment_facts,
    attachment_rows,
    delivery_record,
    document_record,
    event_record,
)

# The statements of the hot path (every accepted document and carried route runs them), built
# and compiled once and run on the driver's cursor (``prepared``): made per call, SQLAlchemy's
# statement construction and cache keys cost more than SQLite took to run them
# (bench/store_writes.py, issue 13). Values come as parameters.
_BY_KEY = Prepared(
    select(D.c.id, D.c.signed_digest).where(
        D.c.sender == bindparam("sender"), D.c.doc_key == bindparam("doc_key")
    )
)
_INSERT_DOCUMENT = Prepared(D.insert())
_INSERT_ROUTE = Prepared(R.insert().returning(R.c.id))
_INSERT_PART = Prepared(PP.insert())
_INSERT_DELIVERY = Prepared(V.insert())
_INSERT_ATTACHMENTS = A.insert()
_ROUTE_DONE = Prepared(
    update(R)
    .where(R.c.id == bindparam("b_route"), R.c.state == "pending")
    .values(
        state="done",
        sealed=bindparam("b_sealed"),
        done_at=bindparam("b_at"),
        carried_by=R.c.claimed_by,  # the old value: who held the claim
        claimed_by=None,
        claimed_until=None,
    )
)
_DELIVERIES_LANDED = Prepared(
    update(V)
    .where(V.c.route == bindparam("b_route"), V.c.state == DeliveryState.PENDING.value)
    .values(state=bindparam("b_state"), delivered_at=bindparam("b_at"))
    .returning(V.c.recipient)
)


class SqlStore:
    """``gateway.exchange.ports.Store`` on a SQLAlchemy engine."""

    def __init__(self, url: str, *, synchronous: str = "FULL", writer: str | None = None) -> None:
        """``writer``: the node this store serves (replicas of one node each have their own name);
        recorded with every delivery-log record it writes. ``None`` for the command line. Opening
        applies the migrations (not create_all: one history for every database)."""
        self.url = url
        self.writer = writer
        self._db = Database(url, synchronous=synchronous, writer=writer, prepare=schema.upgrade)

    @property
    def database(self) -> Database:
        """The store's connections, for the operators' reads and the audit log (``SqlOversight``)."""
        return self._db

    async def close(self) -> None:
        """Wait for the queued writes, then close the database."""
        await self._db.close()

    # --- writes --------------------------------------------------------------------------------

    async def accept(self, doc: NewDocument) -> tuple[str, bool]:
        def op(conn: Connection) -> tuple[str, bool]:
            existing = _BY_KEY.first(conn, {"sender": doc.sender, "doc_key": doc.doc_key})
            if existing is not None:
                existing_id, existing_digest = existing
                if existing_digest == doc.signed_digest:
                    return existing_id, False
                raise DocumentConflict(
                    f"DocumentId {doc.doc_key} was already sent by {doc.sender} with different content "
                    f"(as {existing_id}); give the new document its own DocumentId"
                )
            if conn.dialect.name == "sqlite":
                # One writer holds the file from BEGIN IMMEDIATE to COMMIT: no one can store the
                # key between the check above and this insert, so no savepoint is needed for it.
                _insert_document(conn, doc)
                return doc.id, True
            conflict = in_savepoint(conn, lambda: _insert_document(conn, doc))
            if conflict is not None:
                # Another replica may have stored the same key between our check and insert.
                return _accept_after_race(conn, doc, conflict)
            return doc.id, True

        return await self._db.write(op)

    async def claim_routes(
        self, *, node: str, limit: int, now: datetime, lease_seconds: float, exclude: Collection[Network] = ()
    ) -> list[RouteJob]:
        """Claim pending routes, most urgent first, then by fair rank, then oldest; routes to the
        ``exclude``d networks (their link is down) stay where they are, in order."""
        until = now + timedelta(seconds=lease_seconds)
        return await self._db.write(
            lambda conn: claim_routes(conn, node=node, limit=limit, now=now, until=until, exclude=exclude)
        )

    async def complete_routes(self, done: Sequence[tuple[RouteJob, Carried]], *, now: datetime) -> None:
        def op(conn: Connection) -> None:
            for job, carried in done:
                moved = _ROUTE_DONE.execute(
                    conn, {"b_route": job.route_id, "b_sealed": carried.sealed, "b_at": now}
                )
                if not moved:
                    continue  # someone finished it first; delivering again would duplicate
                state = DeliveryState.FORWARDED if carried.forward_to else DeliveryState.DELIVERED
                delivered = [
                    recipient
                    for (recipient,) in _DELIVERIES_LANDED.all(
                        conn, {"b_route": job.route_id, "b_state": state.value, "b_at": now}
                    )
                ]
                if state is DeliveryState.DELIVERED:  # a forwarded one is notified by the peer node
                    landed = [(recipient, job.target.value) for recipient in delivered]
                    queue_notifications(conn, job.document.id, int(job.document.priority), landed, now=now)
                events = [*carried.events]
                events += [
                    NewEvent(state.value, now, job.document.id, recipient, job.target.value)
                    for recipient in delivered
                ]
                if events:
                    append_events(conn, events)

        await self._db.write(op)

    async def quarantine_route(self, job: RouteJob, *, reason: str, now: datetime) -> None:
        """A hop refused the route: its pending deliveries never reach an inbox."""
        await self._db.write(lambda conn: _set_route_aside(conn, job, DeliveryState.QUARANTINED, reason, now))

    async def defer_route(self, job: RouteJob, *, reason: str, not_before: datetime, now: datetime) -> None:
        """Leave a route pending, not to be tried again before ``not_before`` (its link is down)."""

        def op(conn: Connection) -> None:
            conn.execute(
                update(R)
                .where(R.c.id == job.route_id, R.c.state == "pending")
                .values(claimed_by=None, claimed_until=not_before, last_error=reason)
            )
            detail = {"reason": reason, "attempt": job.attempts, "next_attempt_at": not_before.isoformat()}
            append_events(conn, [NewEvent("retry", now, job.document.id, None, job.target.value, detail)])

        await self._db.write(op)

    async def fail_route(self, job: RouteJob, *, reason: str, now: datetime) -> None:
        """Give up on a route: its deliveries are failed until an operator re-drives them."""
        await self._db.write(lambda conn: _set_route_aside(conn, job, DeliveryState.FAILED, reason, now))

    async def redrive(self, doc_id: str, *, now: datetime, by: str) -> int:
        """Put a document's failed routes back to pending (an operator's re-drive); returns how many."""

        def op(conn: Connection) -> int:
            ids = [
                r.id
                for r in conn.execute(select(R.c.id).where(R.c.document == doc_id, R.c.state == "failed"))
            ]
            if not ids:
                return 0
            conn.execute(
                update(R)
                .where(R.c.id.in_(ids))
                .values(state="pending", attempts=0, claimed_until=None, last_error=None)
            )
            conn.execute(
                update(V)
                .where(V.c.route.in_(ids), V.c.state == DeliveryState.FAILED.value)
                .values(state=DeliveryState.PENDING.value)
            )
            notify_work(conn)
            ev = NewEvent("redriven", now, doc_id, None, None, {"routes": len(ids), "by": by})
            append_events(conn, [ev])
            return len(ids)

        return await self._db.write(op)

    async def accept_forwarded(self, doc: NewDocument, sealed: bytes, *, now: datetime) -> bool:
        """Store a document taken over from a peer node, already sealed for this network and in
        its recipients' inboxes; one transaction. False if it was taken over before."""

        def op(conn: Connection) -> bool:
            if conn.execute(select(D.c.id).where(D.c.id == doc.id)).first() is not None:
                return False
            _insert_document(conn, doc)
            conn.execute(
                update(R).where(R.c.document == doc.id).values(state="done", sealed=sealed, done_at=now)
            )
            delivered = conn.execute(
                update(V)
                .where(V.c.document == doc.id)
                .values(state=DeliveryState.DELIVERED.value, delivered_at=now)
                .returning(V.c.recipient, V.c.network)
            ).all()
            events = [NewEvent("delivered", now, doc.id, r.recipient, r.network) for r in delivered]
            landed = [(r.recipient, r.network) for r in delivered]
            queue_notifications(conn, doc.id, int(doc.priority), landed, now=now)
            if events:
                append_events(conn, events)
            return True

        return await self._db.write(op)

    async def release_claims(self, *, node: str) -> int:
        def op(conn: Connection) -> int:
            return conn.execute(
                update(R)
                .where(R.c.claimed_by == node, R.c.state == "pending")
                .values(claimed_by=None, claimed_until=None)
            ).rowcount

        return await self._db.write(op)

    async def mark_fetched(
        self,
        doc_id: str,
        agency: str,
        *,
        now: datetime,
        receipt: NewDocument | None,
        events: Sequence[NewEvent] = (),
    ) -> bool:
        def op(conn: Connection) -> bool:
            moved = conn.execute(
                update(V)
                .where(
                    V.c.document == doc_id,
                    V.c.recipient == agency,
                    V.c.state == DeliveryState.DELIVERED.value,
                )
                .values(state=DeliveryState.FETCHED.value, fetched_at=now)
            ).rowcount
            if not moved:
                return False
            if receipt is not None:
                _insert_document(conn, receipt)
            append_events(conn, events)
            return True

        return await self._db.write(op)

    async def add_events(self, events: Sequence[NewEvent]) -> None:
        def op(conn: Connection) -> None:
            if events:
                append_events(conn, events)

        await self._db.write(op)

    async def set_endpoint(self, agency: str, url: str, *, now: datetime) -> Endpoint:
        def op(conn: Connection) -> Endpoint:
            if conn.execute(
                update(P).where(P.c.agency == agency).values(url=url, registered_at=now)
            ).rowcount:
                return Endpoint(agency, url, now)
            conn.execute(P.insert().values(agency=agency, url=url, registered_at=now))
            return Endpoint(agency, url, now)

        return await self._db.write(op)

    async def remove_endpoint(self, agency: str) -> int | None:
        def op(conn: Connection) -> int | None:
            if not conn.execute(delete(P).where(P.c.agency == agency)).rowcount:
                return None
            return int(conn.execute(delete(N).where(N.c.recipient == agency)).rowcount)

        return await self._db.write(op)

    async def claim_notifications(
        self, *, node: str, limit: int, now: datetime, lease_seconds: float, exclude: Collection[str] = ()
    ) -> list[NotificationJob]:
        until = now + timedelta(seconds=lease_seconds)
        return await self._db.write(
            lambda conn: claim_notifications(
                conn, node=node, limit=limit, now=now, until=until, exclude=exclude
            )
        )

    async def finish_notification(self, job: NotificationJob, *, events: Sequence[NewEvent]) -> None:
        def op(conn: Connection) -> None:
            conn.execute(delete(N).where(N.c.id == job.id))
            if events:
                append_events(conn, events)

        await self._db.write(op)

    async def retry_notification(
        self,
        job: NotificationJob,
        *,
        not_before: datetime,
        reason: str,
        attempted: bool,
        events: Sequence[NewEvent] = (),
    ) -> None:
        def op(conn: Connection) -> None:
            conn.execute(
                update(N)
                .where(N.c.id == job.id)
                .values(
                    next_attempt_at=not_before,
                    claimed_by=None,
                    last_error=reason,
                    attempts=N.c.attempts + (1 if attempted else 0),
                )
            )
            if events:
                append_events(conn, events)

        await self._db.write(op)

    async def release_notifications(self, *, node: str) -> int:
        def op(conn: Connection) -> int:
            return int(
                conn.execute(
                    update(N)
                    .where(N.c.claimed_by == node)
                    .values(claimed_by=None, next_attempt_at=N.c.created_at)
                ).rowcount
            )

        return await self._db.write(op)

    # --- reads ---------------------------------------------------------------------------------

    async def endpoint(self, agency: str) -> Endpoint | None:
        def op(conn: Connection) -> Endpoint | None:
            row = conn.execute(select(P).where(P.c.agency == agency)).first()
            return Endpoint(row.agency, row.url, row.registered_at) if row is not None else None

        return await self._db.read(op)

    async def queued_notifications(self) -> int:
        return await self._db.read(lambda c: int(c.execute(select(func.count()).select_from(N)).scalar_one()))

    async def pending_routes(self) -> int:
        return await self._db.read(
            lambda c: int(
                c.execute(select(func.count()).select_from(R).where(R.c.state == "pending")).scalar_one()
            )
        )

    async def document(self, doc_id: str) -> DocumentRecord | None:
        def op(conn: Connection) -> DocumentRecord | None:
            row = conn.execute(select(*DOC_COLUMNS).where(D.c.id == doc_id)).first()
            return document_record(row) if row is not None else None

        return await self._db.read(op)

    async def package(self, doc_id: str) -> bytes | None:
        def op(conn: Connection) -> bytes | None:
            row = conn.execute(select(D.c.id, D.c.parts, D.c.package).where(D.c.id == doc_id)).first()
            return _whole_package(conn, row) if row is not None else None

        return await self._db.read(op)

    async def package_chunks(
        self, doc_id: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """One read (on a reader connection) per piece: at most one part of the package is in the
        node at a time, however large it is; the first read also finds the document (a package of
        one part, most of them, costs one read). Documents stored before 0007 are read from
        ``documents.package`` with substr, a piece at a time too."""
        at = max(start, 0)

        def first(conn: Connection) -> tuple[int, int | None, bytes] | None:
            row = conn.execute(select(D.c.size, D.c.parts).where(D.c.id == doc_id)).first()
            if row is None:
                return None
            stop = row.size if end is None else min(end, row.size)
            if at >= stop:
                return stop, row.parts, b""
            return (
                stop,
                row.parts,
                _piece(conn, doc_id=doc_id, parts=row.parts, start=at, end=_upto(at, stop)),
            )

        found = await self._db.read(first)
        if found is None:
            return
        stop, parts, piece = found
        read = False  # the first piece came with the document
        while at < stop:
            upto = _upto(at, stop)
            if read:
                piece = await self._db.read(partial(_piece, doc_id=doc_id, parts=parts, start=at, end=upto))
            read = True
            if piece:
                yield piece
            if len(piece) != upto - at:
                # Shorter than recorded (changed at rest): what is there, and no more. Whoever
                # reads it checks the size and the digest (the courier refuses such a package).
                return
            at = upto

    async def attachments(self, doc_id: str) -> list[AttachmentFacts]:
        def op(conn: Connection) -> list[AttachmentFacts]:
            rows = conn.execute(select(A).where(A.c.document == doc_id).order_by(A.c.position))
            return [attachment_facts(r) for r in rows]

        return await self._db.read(op)

    async def deliveries(self, doc_id: str) -> list[DeliveryRecord]:
        def op(conn: Connection) -> list[DeliveryRecord]:
            rows = conn.execute(select(V).where(V.c.document == doc_id).order_by(V.c.id))
            return [delivery_record(r) for r in rows]

        return await self._db.read(op)

    async def sealed_for(self, doc_id: str, network: Network) -> bytes | None:
        return await self._db.read(
            lambda c: c.execute(
                select(R.c.sealed).where(R.c.document == doc_id, R.c.network == network.value)
            ).scalar_one_or_none()
        )

    async def inbox(self, agency: str, *, include_fetched: bool, limit: int) -> list[InboxItem]:
        states = [DeliveryState.DELIVERED.value]
        if include_fetched:
            states.append(DeliveryState.FETCHED.value)

        def op(conn: Connection) -> list[InboxItem]:
            rows = conn.execute(
                select(V, *DOC_COLUMNS)
                .join(D, D.c.id == V.c.document)
                .where(and_(V.c.recipient == agency, V.c.state.in_(states)))
                .order_by(V.c.priority.desc(), V.c.document)
                .limit(limit)
            ).all()
            return [InboxItem(document_record(DocumentView(r)), delivery_record(r)) for r in rows]

        return await self._db.read(op)

    async def statuses_for(self, doc_id: str) -> list[tuple[DocumentRecord, bytes]]:
        def op(conn: Connection) -> list[tuple[DocumentRecord, bytes]]:
            rows = conn.execute(
                select(D)
                .where(D.c.response_for == doc_id, D.c.kind == "status")
                .order_by(D.c.accepted_at, D.c.id)
            )
            return [(document_record(r), _whole_package(conn, r)) for r in rows]

        return await self._db.read(op)

    async def edocs_with_document_id(self, document_id: str) -> list[DocumentRecord]:
        def op(conn: Connection) -> list[DocumentRecord]:
            rows = conn.execute(
                select(D)
                .where(D.c.document_id == document_id, D.c.kind == "edoc")
                .order_by(D.c.accepted_at, D.c.id)
            )
            return [document_record(r) for r in rows]

        return await self._db.read(op)

    async def superseded_by(self, doc_ids: Collection[str]) -> dict[str, str]:
        wanted = sorted(set(doc_ids))

        def op(conn: Connection) -> dict[str, str]:
            found: dict[str, str] = {}
            if not wanted:
                return found
            rows = conn.execute(
                select(D.c.id, D.c.response_for)
                .where(D.c.kind == "edoc", D.c.response_for.in_(wanted), D.c.business_doc_type == 3)
                .order_by(D.c.accepted_at, D.c.id)
            )
            for r in rows:
                found[r.response_for] = r.id  # oldest first: the newest replacement wins
            return found

        return await self._db.read(op)

    async def recall_statuses(self, doc_ids: Collection[str]) -> dict[str, list[DocumentRecord]]:
        wanted = sorted(set(doc_ids))
        codes = sorted(c.value for c in RECALL_CODES)

        def op(conn: Connection) -> dict[str, list[DocumentRecord]]:
            found: dict[str, list[DocumentRecord]] = {}
            if not wanted:
                return found
            rows = conn.execute(
                select(D)
                .where(D.c.kind == "status", D.c.response_for.in_(wanted), D.c.status_code.in_(codes))
                .order_by(D.c.accepted_at, D.c.id)
            )
            for r in rows:
                found.setdefault(r.response_for, []).append(document_record(r))
            return found

        return await self._db.read(op)

    async def events(self, doc_id: str) -> list[EventRecord]:
        def op(conn: Connection) -> list[EventRecord]:
            rows = conn.execute(select(E).where(E.c.document == doc_id).order_by(E.c.at, E.c.seq))
            return [event_record(r) for r in rows]

        return await self._db.read(op)

    async def events_of_kind(self, kind: str, *, limit: int = 1000) -> list[EventRecord]:
        """Events of one kind, oldest first (refusals and certificate events have no document)."""

        def op(conn: Connection) -> list[EventRecord]:
            rows = conn.execute(select(E).where(E.c.kind == kind).order_by(E.c.seq).limit(limit))
            return [event_record(r) for r in rows]

        return await self._db.read(op)

    async def deadlines_at_risk(self, *, until: datetime) -> list[AtRisk]:
        return await self._db.read(lambda conn: deadlines_at_risk(conn, until=until))

    async def events_where(
        self, *, kind_prefix: str, detail_contains: str | None = None, limit: int = 100_000
    ) -> list[EventRecord]:
        """Events whose kind starts with ``kind_prefix`` (e.g. ``cert_``) and, if given, whose JSON
        detail contains ``detail_contains`` (e.g. ``"serial": "3f2a"``), oldest first."""

        def like(text: str) -> str:
            return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")

        def op(conn: Connection) -> list[EventRecord]:
            query = select(E).where(E.c.kind.like(like(kind_prefix) + "%", escape="\\"))
            if detail_contains is not None:
                query = query.where(E.c.detail.like("%" + like(detail_contains) + "%", escape="\\"))
            rows = conn.execute(query.order_by(E.c.seq).limit(limit))
            return [event_record(r) for r in rows]

        return await self._db.read(op)


def _legacy_piece(conn: Connection, doc_id: str, at: int, size: int) -> bytes:
    """``size`` bytes from offset ``at`` of a package stored whole in ``documents.package``."""
    if conn.dialect.name != "sqlite":
        # PostgreSQL fetches only the TOAST chunks a substring covers (substr counts from 1).
        query = select(func.substr(D.c.package, at + 1, size, type_=LargeBinary)).where(D.c.id == doc_id)
        return bytes(conn.execute(query).scalar_one_or_none() or b"")
    # SQLite's substr materialises the whole blob for every piece (a 50 MB package read in
    # 1 MiB pieces: 3 s and +53 MB of peak RSS); its incremental blob I/O reads the piece only.
    rowid = conn.execute(select(literal_column("rowid")).where(D.c.id == doc_id)).scalar_one_or_none()
    if rowid is None:
        return b""
    try:
        with conn.connection.dbapi_connection.blobopen("documents", "package", rowid) as blob:
            blob.seek(min(at, len(blob)))
            return bytes(blob.read(size))
    except sqlite3.Error as exc:
        raise StoreError(f"database error: {exc.__class__.__name__}") from exc


def _accept_after_race(conn: Connection, doc: NewDocument, conflict: Exception) -> tuple[str, bool]:
    row = _BY_KEY.first(conn, {"sender": doc.sender, "doc_key": doc.doc_key})
    if row is None:
        raise conflict  # not a duplicate: a real constraint violation, reported as a store error
    existing_id, existing_digest = row
    if existing_digest != doc.signed_digest:
        raise DocumentConflict(f"DocumentId {doc.doc_key} was already sent with different content")
    return existing_id, False


def _set_route_aside(
    conn: Connection, job: RouteJob, state: DeliveryState, reason: str, now: datetime
) -> None:
    """Take a route out of the queue as ``state`` (quarantined or failed) with its pending
    deliveries, and record why: the one body of ``quarantine_route`` and ``fail_route``."""
    route = R.c.id == job.route_id
    if state is DeliveryState.FAILED:
        # A route another node finished meanwhile stays done; quarantine never had this guard (kept as is).
        route = and_(route, R.c.state == "pending")
    conn.execute(
        update(R)
        .where(route)
        .values(state=state.value, last_error=reason, claimed_by=None, claimed_until=None)
    )
    conn.execute(
        update(V)
        .where(V.c.route == job.route_id, V.c.state == DeliveryState.PENDING.value)
        .values(state=state.value)
    )
    ev = NewEvent(state.value, now, job.document.id, None, job.target.value, {"reason": reason})
    append_events(conn, [ev])


def _upto(at: int, stop: int) -> int:
    """Where the piece that starts at ``at`` ends: at the end of its part, or at ``stop``."""
    return min(stop, (at // PART_BYTES + 1) * PART_BYTES)


def _piece(conn: Connection, *, doc_id: str, parts: int | None, start: int, end: int) -> bytes:
    """Bytes [start, end) of a stored package, all within one part (or, stored before 0007,
    within ``documents.package``, read with substr: the blob is never loaded whole)."""
    if parts is None:
        return _legacy_piece(conn, doc_id, start, end - start)
    seq, offset = divmod(start, PART_BYTES)
    data = conn.execute(
        select(func.substr(PP.c.data, offset + 1, end - start, type_=LargeBinary)).where(
            PP.c.document == doc_id, PP.c.seq == seq
        )
    ).scalar_one_or_none()
    return bytes(data or b"")


def _whole_package(conn: Connection, row: Any) -> bytes:
    """A document row's package in memory (small packages and tools only)."""
    if row.parts is None:
        return bytes(row.package)
    pieces = conn.execute(select(PP.c.data).where(PP.c.document == row.id).order_by(PP.c.seq)).scalars()
    return b"".join(pieces)


def _insert_document(conn: Connection, doc: NewDocument) -> None:
    if doc.attachments and doc.classification is not Classification.NONE:
        raise StoreError(CLASSIFIED_ATTACHMENTS.format(id=doc.id))
    size, sha256 = body_size(doc.package), body_sha256(doc.package)
    _INSERT_DOCUMENT.execute(
        conn,
        {
            "id": doc.id,
            "kind": doc.kind,
            "sender": doc.sender,
            "sender_network": doc.sender_network.value,
            "doc_key": doc.doc_key,
            "document_id": doc.document_id,
            "response_for": doc.response_for,
            "status_code": doc.status_code,
            "signed_digest": doc.signed_digest,
            "signer": doc.signer,
            "subject": doc.subject,
            "priority": int(doc.priority),
            "classification": int(doc.classification),
            "size": size,
            "package_sha256": sha256,
            "accepted_at": doc.accepted_at,
            "due_at": doc.due_at,
            "business_doc_type": doc.business_doc_type,
            "package": b"",
            "parts": -(-size // PART_BYTES),
        },
    )
    # One part per statement: binding a 50 MB blob (or all parts in one executemany) had the
    # driver copy the whole package at once. A spooled package is read from its file as it goes,
    # and checked against the digest counted as it arrived (``body_pieces`` raises otherwise).
    for seq, piece in enumerate(body_pieces(doc.package)):
        _INSERT_PART.execute(conn, {"document": doc.id, "seq": seq, "data": piece})
    if doc.attachments:
        conn.execute(_INSERT_ATTACHMENTS, attachment_rows(doc.id, doc.attachments))
    notify_work(conn)
    rank = fair_rank(conn, doc.sender, int(doc.priority))
    for route in doc.routes:
        (route_id,) = _INSERT_ROUTE.all(
            conn,
            {
                "document": doc.id,
                "network": route.network.value,
                "state": "pending",
                "priority": int(doc.priority),
                "sender": doc.sender,
                "fair_rank": rank,
            },
        )[0]
        _INSERT_DELIVERY.run_many(
            conn,
            [
                {
                    "document": doc.id,
                    "route": route_id,
                    "recipient": d.recipient,
                    "addressed": d.addressed,
                    "chain": ">".join(d.chain) if d.chain else None,
                    "network": route.network.value,
                    "state": DeliveryState.PENDING.value,
                    "priority": int(doc.priority),
                }
                for d in route.deliveries
            ],
        )
    if doc.events:
        append_events(conn, doc.events)
