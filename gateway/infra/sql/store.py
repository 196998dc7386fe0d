"""The durable store on SQLAlchemy Core: SQLite (default, WAL) or PostgreSQL.

Writes go through one writer thread that commits whatever has queued up in a
single transaction, each operation in its own SAVEPOINT (group commit): with
``synchronous=FULL`` a document is on disk before its 202, and a burst of
submissions costs one fsync, not one each. Reads use a small pool of their
own connections, which WAL lets run beside the writer.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import secrets
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from gateway.audit.log import GENESIS, record_hash, utc_text
from gateway.domain.vocabulary import DeliveryState, Network, Priority
from gateway.errors import ClientError, DocumentConflict, StoreError
from gateway.exchange.ports import (
    AtRisk,
    Carried,
    DeliveryRecord,
    DocumentRecord,
    EventRecord,
    InboxItem,
    NewDocument,
    NewEvent,
    RouteJob,
)
from gateway.infra.sql import schema
from gateway.infra.sql.engine import make_engine
from gateway.infra.sql.notify import notify_work
from gateway.infra.sql.rows import DOC_COLUMNS, D, E, R, V, delivery_record, document_record
from gateway.operators.logs import current_request_id

log = logging.getLogger(__name__)
T = TypeVar("T")
_CHAIN_LOCK = 0x65645843  # the delivery log's advisory lock key on PostgreSQL ('edXC')


_PENDING_EVENTS = "gateway_pending_events"  # conn.info key: this transaction's records, not yet chained
_WRITER = "gateway_writer"  # conn.info key: the node whose store is writing (events.writer)


def _append_events(conn: Connection, events: Sequence[NewEvent]) -> None:
    """Append events to the tamper-evident delivery log (``gateway.audit.log``): each record carries
    the hash of the record before it. Every insert into ``events`` goes through here.

    The records are held with the transaction and chained by ``_chain_pending_events`` just before
    it commits (``SqlStore._run_batch``), so the one lock that orders the chain is held for a
    single insert and the commit, not for the whole batch: PostgreSQL replicas sharing a database
    take turns only for that moment. The request id is the caller's (operations run in their
    caller's context, see ``_write``); background work gets one id per call, so its records group.
    """
    if not events:
        return
    held = conn.info.get(_PENDING_EVENTS)
    if held is None:  # outside SqlStore._run_batch nothing would ever chain and write them
        raise RuntimeError("delivery-log records are appended only inside a store write")
    request_id = current_request_id() or f"job-{secrets.token_hex(6)}"
    held.extend((ev, request_id) for ev in events)


def _chain_pending_events(conn: Connection) -> None:
    """Write the transaction's held records at the head of the chain: the last statement before
    COMMIT. SQLite has one writer (this store's thread, under BEGIN IMMEDIATE), so the head cannot
    move under us; PostgreSQL replicas serialise on a transaction-scoped advisory lock, held to
    commit, so seqs are also committed in order (the metrics feed relies on that). It is taken
    after every row lock of the transaction, and its holder waits for nothing else, so it can
    take part in no deadlock."""
    pending: list[tuple[NewEvent, str]] = conn.info.pop(_PENDING_EVENTS, [])
    if not pending:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(_CHAIN_LOCK)))
    head = conn.execute(select(E.c.seq, E.c.hash).order_by(E.c.seq.desc()).limit(1)).first()
    seq, prev = (int(head.seq), str(head.hash)) if head is not None else (0, GENESIS)
    rows = []
    for ev, request_id in pending:
        seq += 1
        detail = json.dumps(ev.detail, ensure_ascii=False, sort_keys=True)
        digest = record_hash(ev.kind, utc_text(ev.at), ev.document, ev.recipient, ev.network, request_id,
                             detail, prev)  # fmt: skip
        rows.append(
            {
                "seq": seq,
                "kind": ev.kind,
                "at": ev.at,
                "document": ev.document,
                "recipient": ev.recipient,
                "network": ev.network,
                "detail": detail,
                "request_id": request_id,
                "prev_hash": prev,
                "hash": digest,
                "writer": conn.info.get(_WRITER),
            }
        )
        prev = digest
    conn.execute(E.insert(), rows)


class SqlStore:
    """``gateway.exchange.ports.Store`` on a SQLAlchemy engine."""

    def __init__(self, url: str, *, synchronous: str = "FULL", writer: str | None = None) -> None:
        """``writer``: the node this store serves (replicas of one node each have their own name);
        recorded with every delivery-log record it writes. ``None`` for the command line."""
        self.url = url
        self.writer = writer
        try:
            self._engine = make_engine(url, synchronous)
            schema.upgrade(self._engine)  # migrations, not create_all: one history for every database
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open the database {url}: {exc.__class__.__name__}") from exc
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="store-reader")
        self._queue: list[tuple[Callable[[Connection], Any], asyncio.Future[Any]]] = []
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None

    # --- plumbing ------------------------------------------------------------------------------

    async def _write(self, op: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        # Run the operation in its caller's context, so the request id reaches the records it logs.
        context = contextvars.copy_context()
        self._queue.append((lambda conn: context.run(op, conn), future))
        if not self._flushing:
            self._flushing = True
            self._flusher = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                outcomes = await loop.run_in_executor(self._writer, self._run_batch, [op for op, _ in batch])
                for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        finally:
            self._flushing = False

    def _run_batch(self, ops: list[Callable[[Connection], Any]]) -> list[tuple[bool, Any]]:
        outcomes: list[tuple[bool, Any]] = []
        try:
            with self._engine.connect() as conn, conn.begin():
                conn.info[_PENDING_EVENTS] = []  # a pooled connection may carry a failed batch's
                conn.info[_WRITER] = self.writer
                for op in ops:
                    held = len(conn.info[_PENDING_EVENTS])
                    try:
                        with conn.begin_nested():
                            outcomes.append((True, op(conn)))
                    except ClientError as exc:
                        del conn.info[_PENDING_EVENTS][held:]  # its savepoint is gone: so are its records
                        outcomes.append((False, exc))
                    except SQLAlchemyError as exc:
                        del conn.info[_PENDING_EVENTS][held:]
                        log.error("store operation failed: %s", exc.__class__.__name__)
                        outcomes.append((False, StoreError(f"database error: {exc.__class__.__name__}")))
                _chain_pending_events(conn)
        except SQLAlchemyError as exc:
            # The commit itself failed: nothing of this batch is stored, so nobody may be told it is.
            log.error("store commit failed: %s", exc)
            error = StoreError(f"database commit failed: {exc.__class__.__name__}")
            return [(False, error) for _ in ops]
        return outcomes

    async def _read(self, op: Callable[[Connection], T]) -> T:
        def run() -> T:
            try:
                with self._engine.connect() as conn:
                    return op(conn)
            except SQLAlchemyError as exc:
                raise StoreError(f"database error: {exc.__class__.__name__}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._readers, run)

    async def close(self) -> None:
        while self._flushing or self._queue:
            await asyncio.sleep(0.01)
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self._engine.dispose()

    # --- writes --------------------------------------------------------------------------------

    async def accept(self, doc: NewDocument) -> tuple[str, bool]:
        def op(conn: Connection) -> tuple[str, bool]:
            existing = conn.execute(
                select(D.c.id, D.c.signed_digest).where(D.c.sender == doc.sender, D.c.doc_key == doc.doc_key)
            ).first()
            if existing is not None:
                if existing.signed_digest == doc.signed_digest:
                    return existing.id, False
                raise DocumentConflict(
                    f"DocumentId {doc.doc_key} was already sent by {doc.sender} with different content "
                    f"(as {existing.id}); give the new document its own DocumentId"
                )
            try:
                with conn.begin_nested():
                    _insert_document(conn, doc)
            except IntegrityError as exc:
                # Another replica may have stored the same key between our check and insert.
                return self._accept_after_race(conn, doc, exc)
            return doc.id, True

        return await self._write(op)

    def _accept_after_race(self, conn: Connection, doc: NewDocument, exc: IntegrityError) -> tuple[str, bool]:
        row = conn.execute(
            select(D.c.id, D.c.signed_digest).where(D.c.sender == doc.sender, D.c.doc_key == doc.doc_key)
        ).first()
        if row is None:
            raise exc  # not a duplicate: a real constraint violation, reported as a store error
        if row.signed_digest != doc.signed_digest:
            raise DocumentConflict(f"DocumentId {doc.doc_key} was already sent with different content")
        return row.id, False

    async def claim_routes(
        self, *, node: str, limit: int, now: datetime, lease_seconds: float, exclude: Collection[Network] = ()
    ) -> list[RouteJob]:
        """Claim pending routes, most urgent first, then by fair rank, then oldest; routes to the
        ``exclude``d networks (their link is down) stay where they are, in order."""
        until = now + timedelta(seconds=lease_seconds)

        def op(conn: Connection) -> list[RouteJob]:
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
            rows = conn.execute(
                select(R.c.id.label("route_id"), R.c.network.label("target"), R.c.attempts.label("tries"), D)
                .join(D, D.c.id == R.c.document)
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
                    package=row.package,
                    attempts=row.tries,
                )
                for row in rows
            ]

        return await self._write(op)

    async def complete_routes(self, done: Sequence[tuple[RouteJob, Carried]], *, now: datetime) -> None:
        def op(conn: Connection) -> None:
            for job, carried in done:
                moved = conn.execute(
                    update(R)
                    .where(R.c.id == job.route_id, R.c.state == "pending")
                    .values(
                        state="done",
                        sealed=carried.sealed,
                        done_at=now,
                        carried_by=R.c.claimed_by,  # the old value: who held the claim
                        claimed_by=None,
                        claimed_until=None,
                    )
                ).rowcount
                if not moved:
                    continue  # someone finished it first; delivering again would duplicate
                state = DeliveryState.FORWARDED if carried.forward_to else DeliveryState.DELIVERED
                delivered = conn.execute(
                    update(V)
                    .where(V.c.route == job.route_id, V.c.state == DeliveryState.PENDING.value)
                    .values(state=state.value, delivered_at=now)
                    .returning(V.c.recipient)
                ).all()
                events = [*carried.events]
                events += [
                    NewEvent(state.value, now, job.document.id, row.recipient, job.target.value)
                    for row in delivered
                ]
                if events:
                    _append_events(conn, events)

        await self._write(op)

    async def quarantine_route(self, job: RouteJob, *, reason: str, now: datetime) -> None:
        def op(conn: Connection) -> None:
            conn.execute(
                update(R)
                .where(R.c.id == job.route_id)
                .values(state="quarantined", last_error=reason, claimed_by=None, claimed_until=None)
            )
            conn.execute(
                update(V)
                .where(V.c.route == job.route_id, V.c.state == DeliveryState.PENDING.value)
                .values(state=DeliveryState.QUARANTINED.value)
            )
            ev = NewEvent("quarantined", now, job.document.id, None, job.target.value, {"reason": reason})
            _append_events(conn, [ev])

        await self._write(op)

    async def defer_route(self, job: RouteJob, *, reason: str, not_before: datetime, now: datetime) -> None:
        """Leave a route pending, not to be tried again before ``not_before`` (its link is down)."""

        def op(conn: Connection) -> None:
            conn.execute(
                update(R)
                .where(R.c.id == job.route_id, R.c.state == "pending")
                .values(claimed_by=None, claimed_until=not_before, last_error=reason)
            )
            detail = {"reason": reason, "attempt": job.attempts, "next_attempt_at": not_before.isoformat()}
            _append_events(conn, [NewEvent("retry", now, job.document.id, None, job.target.value, detail)])

        await self._write(op)

    async def fail_route(self, job: RouteJob, *, reason: str, now: datetime) -> None:
        """Give up on a route: its deliveries are failed until an operator re-drives them."""

        def op(conn: Connection) -> None:
            conn.execute(
                update(R)
                .where(R.c.id == job.route_id, R.c.state == "pending")
                .values(state="failed", last_error=reason, claimed_by=None, claimed_until=None)
            )
            conn.execute(
                update(V)
                .where(V.c.route == job.route_id, V.c.state == DeliveryState.PENDING.value)
                .values(state=DeliveryState.FAILED.value)
            )
            ev = NewEvent("failed", now, job.document.id, None, job.target.value, {"reason": reason})
            _append_events(conn, [ev])

        await self._write(op)

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
            _append_events(conn, [ev])
            return len(ids)

        return await self._write(op)

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
            if events:
                _append_events(conn, events)
            return True

        return await self._write(op)

    async def release_claims(self, *, node: str) -> int:
        def op(conn: Connection) -> int:
            return conn.execute(
                update(R)
                .where(R.c.claimed_by == node, R.c.state == "pending")
                .values(claimed_by=None, claimed_until=None)
            ).rowcount

        return await self._write(op)

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
            _append_events(conn, events)
            return True

        return await self._write(op)

    async def add_events(self, events: Sequence[NewEvent]) -> None:
        def op(conn: Connection) -> None:
            if events:
                _append_events(conn, events)

        await self._write(op)

    # --- reads ---------------------------------------------------------------------------------

    async def pending_routes(self) -> int:
        return await self._read(
            lambda c: int(
                c.execute(select(func.count()).select_from(R).where(R.c.state == "pending")).scalar_one()
            )
        )

    async def document(self, doc_id: str) -> DocumentRecord | None:
        def op(conn: Connection) -> DocumentRecord | None:
            row = conn.execute(select(*DOC_COLUMNS).where(D.c.id == doc_id)).first()
            return document_record(row) if row is not None else None

        return await self._read(op)

    async def package(self, doc_id: str) -> bytes | None:
        return await self._read(
            lambda c: c.execute(select(D.c.package).where(D.c.id == doc_id)).scalar_one_or_none()
        )

    async def deliveries(self, doc_id: str) -> list[DeliveryRecord]:
        def op(conn: Connection) -> list[DeliveryRecord]:
            rows = conn.execute(select(V).where(V.c.document == doc_id).order_by(V.c.id))
            return [delivery_record(r) for r in rows]

        return await self._read(op)

    async def sealed_for(self, doc_id: str, network: Network) -> bytes | None:
        return await self._read(
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
            return [InboxItem(document_record(_DocView(r)), delivery_record(r)) for r in rows]

        return await self._read(op)

    async def statuses_for(self, doc_id: str) -> list[tuple[DocumentRecord, bytes]]:
        def op(conn: Connection) -> list[tuple[DocumentRecord, bytes]]:
            rows = conn.execute(
                select(D)
                .where(D.c.response_for == doc_id, D.c.kind == "status")
                .order_by(D.c.accepted_at, D.c.id)
            )
            return [(document_record(r), r.package) for r in rows]

        return await self._read(op)

    async def events(self, doc_id: str) -> list[EventRecord]:
        def op(conn: Connection) -> list[EventRecord]:
            rows = conn.execute(select(E).where(E.c.document == doc_id).order_by(E.c.at, E.c.seq))
            return [
                EventRecord(r.seq, r.kind, r.at, r.document, r.recipient, r.network, json.loads(r.detail))
                for r in rows
            ]

        return await self._read(op)

    async def events_of_kind(self, kind: str, *, limit: int = 1000) -> list[EventRecord]:
        """Events of one kind, oldest first (refusals and certificate events have no document)."""

        def op(conn: Connection) -> list[EventRecord]:
            rows = conn.execute(select(E).where(E.c.kind == kind).order_by(E.c.seq).limit(limit))
            return [
                EventRecord(r.seq, r.kind, r.at, r.document, r.recipient, r.network, json.loads(r.detail))
                for r in rows
            ]

        return await self._read(op)

    async def deadlines_at_risk(self, *, until: datetime) -> list[AtRisk]:
        answered = ("02", "03", "04", "05", "06")  # any of these means the recipient has responded

        def op(conn: Connection) -> list[AtRisk]:
            status = D.alias("status")
            rows = conn.execute(
                select(D.c.id, D.c.due_at, V.c.recipient, V.c.network, V.c.fetched_at)
                .join(V, V.c.document == D.c.id)
                .where(
                    D.c.kind == "edoc",
                    D.c.due_at.is_not(None),
                    D.c.due_at <= until,
                    V.c.state.in_(
                        [
                            DeliveryState.PENDING.value,
                            DeliveryState.DELIVERED.value,
                            DeliveryState.FETCHED.value,
                        ]
                    ),
                    ~select(status.c.id)
                    .where(
                        status.c.response_for == D.c.id,
                        status.c.sender == V.c.recipient,
                        status.c.status_code.in_(answered),
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

        return await self._read(op)

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
            return [
                EventRecord(r.seq, r.kind, r.at, r.document, r.recipient, r.network, json.loads(r.detail))
                for r in rows
            ]

        return await self._read(op)

    # --- for the operators' reads and the audit log (gateway.infra.sql.reads) -------------

    async def read_with(self, op: Callable[[Connection], T]) -> T:
        """Run ``op`` on a reader connection (WAL: beside the writer)."""
        return await self._read(op)

    async def write_with(self, op: Callable[[Connection], T]) -> T:
        """Run ``op`` in the writer's next group commit."""
        return await self._write(op)


class _DocView:
    """A joined delivery+document row seen as a document row (the join shares column names)."""

    def __init__(self, row: Any) -> None:
        self._m = row._mapping

    def __getattr__(self, name: str) -> Any:
        column = D.c[name]
        return self._m[column]


def _fair_rank(conn: Connection, sender: str, priority: int) -> int:
    """Start-time fair queueing within one urgency: a sender's next document ranks one after its
    previous pending one, but never before the lane's current head. So a 10,000-document batch
    takes ranks head..head+9,999 while another sender's single document takes the head rank and
    is carried right after the batch's first, not after all of it."""
    lane = and_(R.c.state == "pending", R.c.priority == priority)
    head = conn.execute(select(func.min(R.c.fair_rank)).where(lane)).scalar() or 0
    last = conn.execute(select(func.max(R.c.fair_rank)).where(lane, R.c.sender == sender)).scalar()
    return head if last is None else max(head, int(last) + 1)


def _insert_document(conn: Connection, doc: NewDocument) -> None:
    conn.execute(
        D.insert().values(
            id=doc.id,
            kind=doc.kind,
            sender=doc.sender,
            sender_network=doc.sender_network.value,
            doc_key=doc.doc_key,
            document_id=doc.document_id,
            response_for=doc.response_for,
            status_code=doc.status_code,
            signed_digest=doc.signed_digest,
            signer=doc.signer,
            subject=doc.subject,
            priority=int(doc.priority),
            classification=int(doc.classification),
            size=len(doc.package),
            accepted_at=doc.accepted_at,
            due_at=doc.due_at,
            package=doc.package,
        )
    )
    notify_work(conn)
    rank = _fair_rank(conn, doc.sender, int(doc.priority))
    for route in doc.routes:
        route_id = conn.execute(
            R.insert().values(
                document=doc.id,
                network=route.network.value,
                state="pending",
                priority=int(doc.priority),
                sender=doc.sender,
                fair_rank=rank,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        conn.execute(
            V.insert(),
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
        _append_events(conn, doc.events)
