"""``Store`` in memory: the whole storage port in plain Python, shipped as real code.

It keeps the semantics of ``gateway.infra.sql.store.SqlStore``, the reference (the contract tests
in ``tests/contract/`` run one suite against both), so the use cases can be built and tested
without a database, a socket or a thread: idempotent accept, claims under a lease, most urgent
first then fairly between senders then oldest, exactly-once delivery, one transaction per method.

Each write checks everything that can fail before it changes anything and runs under one lock,
so it is all-or-nothing as a transaction is; no method awaits inside, so a read never sees half
a write. Nothing is durable: a node that keeps its documents across a restart uses the SQL store.

Longer than most modules (about 500 lines) because it follows ``SqlStore`` method for method,
so that the two can be read side by side.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from gateway.domain.body import PART_BYTES, body_bytes
from gateway.domain.edxml import AttachmentFacts
from gateway.domain.vocabulary import Classification, DeliveryState, Network, Priority
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

_RECALL_CODES = frozenset(c.value for c in RECALL_CODES)
_ANSWERED = frozenset({"02", "03", "04", "05", "06"})  # any of these means the recipient has responded
_AT_RISK_STATES = frozenset({DeliveryState.PENDING, DeliveryState.DELIVERED, DeliveryState.FETCHED})
_DEADLINE_FLAGS = frozenset({"deadline_near", "overdue"})


@dataclass
class _Stored:
    record: DocumentRecord
    doc_key: str
    package: bytes
    attachments: tuple[AttachmentFacts, ...] = ()


@dataclass
class _Route:
    id: int
    document: str
    network: Network
    priority: int
    sender: str
    fair_rank: int
    state: str = "pending"  # pending | done | quarantined | failed, as in the SQL store
    attempts: int = 0
    claimed_by: str | None = None
    claimed_until: datetime | None = None
    carried_by: str | None = None
    last_error: str | None = None
    sealed: bytes | None = None
    done_at: datetime | None = None


@dataclass
class _Delivery:
    id: int
    route: int
    priority: int
    record: DeliveryRecord


@dataclass
class _Notice:
    """A queued notification, as a row of the SQL store's ``notifications`` table."""

    id: int
    document: DocumentRecord
    recipient: str
    network: Network
    created_at: datetime
    next_attempt_at: datetime
    attempts: int = 0
    claimed_by: str | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class _Event:
    seq: int
    kind: str
    at: datetime
    document: str | None
    recipient: str | None
    network: str | None
    detail: str  # JSON, as the SQL store keeps it: what is read back is a copy, never the caller's dict

    def record(self) -> EventRecord:
        detail = json.loads(self.detail)
        return EventRecord(self.seq, self.kind, self.at, self.document, self.recipient, self.network, detail)


class MemoryStore:
    """``gateway.exchange.ports.Store`` in memory, for unit tests and tools that need no durability."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._documents: dict[str, _Stored] = {}
        self._by_key: dict[tuple[str, str], str] = {}  # (sender, doc_key) → id: the idempotency key
        self._routes: dict[int, _Route] = {}
        self._pending: dict[int, _Route] = {}  # the queue: claims and fair ranks look at nothing else
        self._routes_of: dict[str, list[int]] = {}
        self._deliveries: dict[int, _Delivery] = {}
        self._deliveries_of: dict[str, list[int]] = {}
        self._events: list[_Event] = []
        self._ids = itertools.count(1)  # route and delivery ids, increasing as SQL keys do
        self._endpoints: dict[str, Endpoint] = {}
        self._notices: dict[int, _Notice] = {}
        self._noticed: set[tuple[str, str]] = set()  # (document, recipient): one notification each

    # --- writes --------------------------------------------------------------------------------

    async def accept(self, doc: NewDocument) -> tuple[str, bool]:
        async with self._lock:
            existing = self._by_key.get((doc.sender, doc.doc_key))
            if existing is not None:
                if self._documents[existing].record.signed_digest == doc.signed_digest:
                    return existing, False
                raise DocumentConflict(
                    f"DocumentId {doc.doc_key} was already sent by {doc.sender} with different content "
                    f"(as {existing}); give the new document its own DocumentId"
                )
            self._insert(self._checked(doc))
            return doc.id, True

    async def claim_routes(
        self, *, node: str, limit: int, now: datetime, lease_seconds: float, exclude: Collection[Network] = ()
    ) -> list[RouteJob]:
        now = _utc(now)
        until = now + timedelta(seconds=lease_seconds)
        async with self._lock:
            free = [
                r
                for r in self._pending.values()
                if (r.claimed_until is None or r.claimed_until < now) and r.network not in exclude
            ]
            free.sort(key=lambda r: (-r.priority, r.fair_rank, r.id))
            jobs = []
            for route in free[: max(limit, 0)]:
                route.claimed_by, route.claimed_until = node, until
                route.attempts += 1
                stored = self._documents[route.document]
                recipients = tuple((d.record.recipient, d.record.addressed) for d in self._of_route(route.id))
                single = stored.package if len(stored.package) <= PART_BYTES else None  # as SqlStore's
                jobs.append(
                    RouteJob(
                        route.id, stored.record, route.network, recipients, route.attempts, package=single
                    )
                )
            return jobs

    async def complete_routes(self, done: Sequence[tuple[RouteJob, Carried]], *, now: datetime) -> None:
        now = _utc(now)
        async with self._lock:
            prepared = [(job, carried, self._prepare(carried.events)) for job, carried in done]
            for job, carried, events in prepared:
                route = self._routes.get(job.route_id)
                if route is None or route.state != "pending":
                    continue  # someone finished it first; delivering again would duplicate
                self._settle(route, "done")
                route.sealed, route.done_at = carried.sealed, now
                route.carried_by, route.claimed_by, route.claimed_until = route.claimed_by, None, None
                state = DeliveryState.FORWARDED if carried.forward_to else DeliveryState.DELIVERED
                moved = self._move(self._of_route(route.id), state, delivered_at=now)
                if state is DeliveryState.DELIVERED:
                    self._queue_notices(self._documents[route.document].record, moved, now)
                self._append(events)
                self._append(
                    self._prepare(
                        NewEvent(state.value, now, job.document.id, d.recipient, job.target.value)
                        for d in moved
                    )
                )

    async def defer_route(self, job: RouteJob, *, reason: str, not_before: datetime, now: datetime) -> None:
        detail = {"reason": reason, "attempt": job.attempts, "next_attempt_at": not_before.isoformat()}
        not_before = _utc(not_before)
        async with self._lock:
            events = self._prepare([NewEvent("retry", now, job.document.id, None, job.target.value, detail)])
            route = self._routes.get(job.route_id)
            if route is not None and route.state == "pending":
                route.claimed_by, route.claimed_until, route.last_error = None, not_before, reason
            self._append(events)

    async def fail_route(self, job: RouteJob, *, reason: str, now: datetime) -> None:
        async with self._lock:
            events = self._prepare(
                [NewEvent("failed", now, job.document.id, None, job.target.value, {"reason": reason})]
            )
            route = self._routes.get(job.route_id)
            if route is not None and route.state == "pending":
                self._set_aside(route, "failed", reason)
            self._move(self._of_route(job.route_id), DeliveryState.FAILED)
            self._append(events)

    async def quarantine_route(self, job: RouteJob, *, reason: str, now: datetime) -> None:
        async with self._lock:
            events = self._prepare(
                [NewEvent("quarantined", now, job.document.id, None, job.target.value, {"reason": reason})]
            )
            route = self._routes.get(job.route_id)
            if route is not None:  # whatever its state, as the SQL store does
                self._set_aside(route, "quarantined", reason)
            self._move(self._of_route(job.route_id), DeliveryState.QUARANTINED)
            self._append(events)

    async def redrive(self, doc_id: str, *, now: datetime, by: str) -> int:
        async with self._lock:
            failed = [
                self._routes[i] for i in self._routes_of.get(doc_id, ()) if self._routes[i].state == "failed"
            ]
            if not failed:
                return 0
            events = self._prepare(
                [NewEvent("redriven", now, doc_id, None, None, {"routes": len(failed), "by": by})]
            )
            for route in failed:
                self._settle(route, "pending")
                route.attempts, route.claimed_until, route.last_error = 0, None, None
                for delivery in self._of_route(route.id):
                    if delivery.record.state is DeliveryState.FAILED:
                        delivery.record = replace(delivery.record, state=DeliveryState.PENDING)
            self._append(events)
            return len(failed)

    async def accept_forwarded(self, doc: NewDocument, sealed: bytes, *, now: datetime) -> bool:
        now = _utc(now)
        async with self._lock:
            if doc.id in self._documents:
                return False
            checked = self._checked(doc)
            self._insert(checked)
            for route_id in self._routes_of[doc.id]:
                route = self._routes[route_id]
                self._settle(route, "done")
                route.sealed, route.done_at = sealed, now
            delivered = self._move(
                self._of_document(doc.id), DeliveryState.DELIVERED, delivered_at=now, every=True
            )
            self._queue_notices(self._documents[doc.id].record, delivered, now)
            self._append(
                self._prepare(
                    NewEvent("delivered", now, doc.id, d.recipient, d.network.value) for d in delivered
                )
            )
            return True

    async def release_claims(self, *, node: str) -> int:
        async with self._lock:
            held = [r for r in self._pending.values() if r.claimed_by == node]
            for route in held:
                route.claimed_by, route.claimed_until = None, None
            return len(held)

    async def mark_fetched(
        self,
        doc_id: str,
        agency: str,
        *,
        now: datetime,
        receipt: NewDocument | None,
        events: Sequence[NewEvent] = (),
    ) -> bool:
        now = _utc(now)
        async with self._lock:
            mine = [
                d
                for d in self._of_document(doc_id)
                if d.record.recipient == agency and d.record.state is DeliveryState.DELIVERED
            ]
            if not mine:
                return False
            checked = self._checked(receipt) if receipt is not None else None
            prepared = self._prepare(events)
            self._move(mine, DeliveryState.FETCHED, fetched_at=now, every=True)
            if checked is not None:
                self._insert(checked)
            self._append(prepared)
            return True

    async def add_events(self, events: Sequence[NewEvent]) -> None:
        async with self._lock:
            self._append(self._prepare(events))

    async def set_endpoint(self, agency: str, url: str, *, now: datetime) -> Endpoint:
        async with self._lock:
            endpoint = self._endpoints[agency] = Endpoint(agency, url, _utc(now))
            return endpoint

    async def endpoint(self, agency: str) -> Endpoint | None:
        return self._endpoints.get(agency)

    async def remove_endpoint(self, agency: str) -> int | None:
        async with self._lock:
            if self._endpoints.pop(agency, None) is None:
                return None
            mine = [n for n in self._notices.values() if n.recipient == agency]
            for notice in mine:
                del self._notices[notice.id]
            return len(mine)

    async def claim_notifications(
        self, *, node: str, limit: int, now: datetime, lease_seconds: float, exclude: Collection[str] = ()
    ) -> list[NotificationJob]:
        now = _utc(now)
        held = now + timedelta(seconds=lease_seconds)
        async with self._lock:
            due = [
                n for n in self._notices.values() if n.next_attempt_at <= now and n.recipient not in exclude
            ]
            due.sort(key=lambda n: (-int(n.document.priority), n.id))
            jobs = []
            for notice in due[: max(limit, 0)]:
                jobs.append(self._notice_job(notice))
                notice.claimed_by, notice.next_attempt_at = node, held
            return jobs

    async def finish_notification(self, job: NotificationJob, *, events: Sequence[NewEvent]) -> None:
        async with self._lock:
            prepared = self._prepare(events)
            self._notices.pop(job.id, None)
            self._append(prepared)

    async def retry_notification(
        self,
        job: NotificationJob,
        *,
        not_before: datetime,
        reason: str,
        attempted: bool,
        events: Sequence[NewEvent] = (),
    ) -> None:
        not_before = _utc(not_before)
        async with self._lock:
            prepared = self._prepare(events)
            notice = self._notices.get(job.id)
            if notice is not None:
                notice.next_attempt_at, notice.claimed_by, notice.last_error = not_before, None, reason
                notice.attempts += 1 if attempted else 0
            self._append(prepared)

    async def release_notifications(self, *, node: str) -> int:
        async with self._lock:
            held = [n for n in self._notices.values() if n.claimed_by == node]
            for notice in held:
                notice.claimed_by, notice.next_attempt_at = None, notice.created_at
            return len(held)

    async def queued_notifications(self) -> int:
        return len(self._notices)

    # --- reads ---------------------------------------------------------------------------------

    async def pending_routes(self) -> int:
        return len(self._pending)

    async def document(self, doc_id: str) -> DocumentRecord | None:
        stored = self._documents.get(doc_id)
        return stored.record if stored is not None else None

    async def package(self, doc_id: str) -> bytes | None:
        stored = self._documents.get(doc_id)
        return stored.package if stored is not None else None

    async def package_chunks(
        self, doc_id: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        stored = self._documents.get(doc_id)
        if stored is None:
            return
        data = stored.package
        stop = len(data) if end is None else min(end, len(data))
        for at in range(max(start, 0), stop, PART_BYTES):
            yield data[at : min(stop, at + PART_BYTES)]

    async def attachments(self, doc_id: str) -> list[AttachmentFacts]:
        stored = self._documents.get(doc_id)
        return sorted(stored.attachments, key=lambda a: a.position) if stored is not None else []

    async def deliveries(self, doc_id: str) -> list[DeliveryRecord]:
        return [d.record for d in self._of_document(doc_id)]

    async def sealed_for(self, doc_id: str, network: Network) -> bytes | None:
        for route_id in self._routes_of.get(doc_id, ()):
            if self._routes[route_id].network == network:
                return self._routes[route_id].sealed
        return None

    async def inbox(self, agency: str, *, include_fetched: bool, limit: int) -> list[InboxItem]:
        states = (
            {DeliveryState.DELIVERED, DeliveryState.FETCHED} if include_fetched else {DeliveryState.DELIVERED}
        )
        waiting = [
            d for d in self._deliveries.values() if d.record.recipient == agency and d.record.state in states
        ]
        waiting.sort(key=lambda d: (-d.priority, d.record.document))
        return [
            InboxItem(self._documents[d.record.document].record, d.record) for d in waiting[: max(limit, 0)]
        ]

    async def statuses_for(self, doc_id: str) -> list[tuple[DocumentRecord, bytes]]:
        answers = [
            s
            for s in self._documents.values()
            if s.record.response_for == doc_id and s.record.kind == "status"
        ]
        answers.sort(key=lambda s: (s.record.accepted_at, s.record.id))
        return [(s.record, s.package) for s in answers]

    async def edocs_with_document_id(self, document_id: str) -> list[DocumentRecord]:
        found = [
            s.record
            for s in self._documents.values()
            if s.record.kind == "edoc" and s.record.document_id == document_id
        ]
        return sorted(found, key=lambda r: (r.accepted_at, r.id))

    async def superseded_by(self, doc_ids: Collection[str]) -> dict[str, str]:
        wanted = set(doc_ids)
        found: dict[str, str] = {}
        for s in sorted(self._documents.values(), key=lambda s: (s.record.accepted_at, s.record.id)):
            r = s.record
            if r.kind == "edoc" and r.response_for in wanted and r.business_doc_type == 3:
                found[r.response_for] = r.id
        return found

    async def recall_statuses(self, doc_ids: Collection[str]) -> dict[str, list[DocumentRecord]]:
        wanted = set(doc_ids)
        found: dict[str, list[DocumentRecord]] = {}
        for s in sorted(self._documents.values(), key=lambda s: (s.record.accepted_at, s.record.id)):
            r = s.record
            if r.kind == "status" and r.response_for in wanted and r.status_code in _RECALL_CODES:
                found.setdefault(r.response_for, []).append(r)
        return found

    async def events(self, doc_id: str) -> list[EventRecord]:
        mine = sorted((e for e in self._events if e.document == doc_id), key=lambda e: (e.at, e.seq))
        return [e.record() for e in mine]

    async def events_of_kind(self, kind: str, *, limit: int = 1000) -> list[EventRecord]:
        """Events of one kind, oldest first, as ``SqlStore.events_of_kind`` (not part of the port:
        for tests that look at records with no document, such as refusals)."""
        return [e.record() for e in self._events if e.kind == kind][: max(limit, 0)]

    async def deadlines_at_risk(self, *, until: datetime) -> list[AtRisk]:
        until = _utc(until)
        answered = {
            (s.record.response_for, s.record.sender)
            for s in self._documents.values()
            if s.record.kind == "status" and s.record.status_code in _ANSWERED
        }
        flags: dict[tuple[str | None, str | None], set[str]] = {}
        for e in self._events:
            if e.kind in _DEADLINE_FLAGS:
                flags.setdefault((e.document, e.recipient), set()).add(e.kind)
        risks = []
        for stored in self._documents.values():
            doc = stored.record
            if doc.kind != "edoc" or doc.due_at is None or doc.due_at > until:
                continue
            for d in self._of_document(doc.id):
                delivery = d.record
                if delivery.state in _AT_RISK_STATES and (doc.id, delivery.recipient) not in answered:
                    flagged = frozenset(flags.get((doc.id, delivery.recipient), ()))
                    risks.append(AtRisk(doc.id, delivery.recipient, delivery.network, doc.due_at,
                                        delivery.fetched_at, flagged))  # fmt: skip
        risks.sort(key=lambda r: r.due_at)
        return risks

    async def close(self) -> None:
        """Nothing to release: the state goes with the object."""

    # --- one transaction's parts ---------------------------------------------------------------

    def _queue_notices(self, doc: DocumentRecord, delivered: Iterable[DeliveryRecord], now: datetime) -> None:
        """A notification for each of ``delivered`` whose recipient has an endpoint, once."""
        for d in delivered:
            if d.recipient in self._endpoints and (doc.id, d.recipient) not in self._noticed:
                self._noticed.add((doc.id, d.recipient))
                notice = _Notice(next(self._ids), doc, d.recipient, d.network, now, now)
                self._notices[notice.id] = notice

    def _notice_job(self, notice: _Notice) -> NotificationJob:
        doc = notice.document
        return NotificationJob(
            id=notice.id,
            document=doc.id,
            recipient=notice.recipient,
            network=notice.network,
            kind=doc.kind,
            status_code=doc.status_code,
            response_for=doc.response_for,
            sender=doc.sender,
            priority=doc.priority,
            created_at=notice.created_at,
            attempts=notice.attempts,
            url=self._endpoints[notice.recipient].url,
        )

    def _checked(self, doc: NewDocument) -> NewDocument:
        """``doc`` with its times in UTC, or StoreError where the SQL store's constraints refuse it."""
        if doc.id in self._documents or (doc.sender, doc.doc_key) in self._by_key:
            raise StoreError(f"database error: IntegrityError (document {doc.id} or its key is stored)")
        networks = [route.network for route in doc.routes]
        recipients = [d.recipient for route in doc.routes for d in route.deliveries]
        if len(set(networks)) != len(networks) or len(set(recipients)) != len(recipients):
            raise StoreError(
                f"database error: IntegrityError (document {doc.id} repeats a network or recipient)"
            )
        positions = [a.position for a in doc.attachments]
        if len(set(positions)) != len(positions):
            raise StoreError(f"database error: IntegrityError (document {doc.id} repeats an attachment)")
        if doc.attachments and doc.classification is not Classification.NONE:
            raise StoreError(CLASSIFIED_ATTACHMENTS.format(id=doc.id))
        self._prepare(doc.events)  # that its records can be written at all
        due = _utc(doc.due_at) if doc.due_at is not None else None
        return replace(doc, accepted_at=_utc(doc.accepted_at), due_at=due)

    def _insert(self, doc: NewDocument) -> None:
        package = body_bytes(doc.package)  # in memory is where this store keeps it
        record = DocumentRecord(
            id=doc.id,
            kind=doc.kind,
            sender=doc.sender,
            sender_network=Network(doc.sender_network),
            document_id=doc.document_id,
            response_for=doc.response_for,
            status_code=doc.status_code,
            signed_digest=doc.signed_digest,
            signer=doc.signer,
            subject=doc.subject,
            priority=Priority(doc.priority),
            classification=Classification(doc.classification),
            size=len(package),
            package_sha256=hashlib.sha256(package).hexdigest(),
            accepted_at=doc.accepted_at,
            due_at=doc.due_at,
            business_doc_type=doc.business_doc_type,
        )
        self._documents[doc.id] = _Stored(record, doc.doc_key, package, doc.attachments)
        self._by_key[(doc.sender, doc.doc_key)] = doc.id
        priority = int(doc.priority)
        rank = self._fair_rank(doc.sender, priority)
        self._routes_of[doc.id] = []
        self._deliveries_of[doc.id] = []
        for new_route in doc.routes:
            route = _Route(next(self._ids), doc.id, Network(new_route.network), priority, doc.sender, rank)
            self._routes[route.id] = self._pending[route.id] = route
            self._routes_of[doc.id].append(route.id)
            for d in new_route.deliveries:
                waiting = DeliveryRecord(
                    doc.id,
                    d.recipient,
                    d.addressed,
                    tuple(d.chain),
                    route.network,
                    DeliveryState.PENDING,
                    None,
                    None,
                )
                delivery = _Delivery(next(self._ids), route.id, priority, waiting)
                self._deliveries[delivery.id] = delivery
                self._deliveries_of[doc.id].append(delivery.id)
        self._append(self._prepare(doc.events))

    def _fair_rank(self, sender: str, priority: int) -> int:
        """Start-time fair queueing within one urgency, as ``SqlStore`` ranks: a sender's next
        document ranks one after its previous pending one, never before the lane's current head."""
        lane = [r for r in self._pending.values() if r.priority == priority]
        head = min((r.fair_rank for r in lane), default=0)
        last = max((r.fair_rank for r in lane if r.sender == sender), default=None)
        return head if last is None else max(head, last + 1)

    def _settle(self, route: _Route, state: str) -> None:
        route.state = state
        if state == "pending":
            self._pending[route.id] = route
        else:
            self._pending.pop(route.id, None)

    def _set_aside(self, route: _Route, state: str, reason: str) -> None:
        """Take a route out of the queue as failed or quarantined, saying why."""
        self._settle(route, state)
        route.last_error, route.claimed_by, route.claimed_until = reason, None, None

    def _of_route(self, route_id: int) -> list[_Delivery]:
        route = self._routes.get(route_id)
        if route is None:
            return []
        return [d for d in self._of_document(route.document) if d.route == route_id]

    def _of_document(self, doc_id: str) -> list[_Delivery]:
        return [self._deliveries[i] for i in self._deliveries_of.get(doc_id, ())]

    @staticmethod
    def _move(
        deliveries: Iterable[_Delivery],
        state: DeliveryState,
        *,
        delivered_at: datetime | None = None,
        fetched_at: datetime | None = None,
        every: bool = False,
    ) -> list[DeliveryRecord]:
        """Move the pending ones of ``deliveries`` (or ``every`` one) to ``state``; returns them moved."""
        moved = []
        for d in deliveries:
            if not every and d.record.state is not DeliveryState.PENDING:
                continue
            d.record = replace(
                d.record,
                state=state,
                delivered_at=delivered_at or d.record.delivered_at,
                fetched_at=fetched_at or d.record.fetched_at,
            )
            moved.append(d.record)
        return moved

    @staticmethod
    def _prepare(events: Iterable[NewEvent]) -> list[tuple[NewEvent, datetime, str]]:
        """Each record with its time in UTC and its detail as JSON: everything that can fail
        in writing it, done before anything of the transaction is changed."""
        try:
            return [
                (ev, _utc(ev.at), json.dumps(ev.detail, ensure_ascii=False, sort_keys=True)) for ev in events
            ]
        except (TypeError, ValueError) as exc:
            raise StoreError(f"a delivery-log record cannot be written: {exc}") from exc

    def _append(self, prepared: Sequence[tuple[NewEvent, datetime, str]]) -> None:
        seq = self._events[-1].seq if self._events else 0
        for ev, at, detail in prepared:
            seq += 1
            self._events.append(_Event(seq, ev.kind, at, ev.document, ev.recipient, ev.network, detail))


def _utc(moment: datetime) -> datetime:
    """Times as the SQL store gives them back: aware, in UTC. A naive one is refused, as there."""
    if moment.tzinfo is None:
        raise StoreError("naive datetime given to the store; use timezone-aware UTC")
    return moment.astimezone(UTC)
