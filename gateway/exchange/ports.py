"""The storage ports the use cases receive through their constructors, and the records that cross it.

``Store`` is the whole port, split by who uses it (``IntakeStore``, ``CourierStore``,
``MailboxStore``, ``InboundStore``, ``DeadlineStore``, ``NotificationStore``, ``QueueControl``).
``gateway.infra.sql.store.SqlStore`` implements it on SQLite or PostgreSQL, and
``gateway.exchange.memory.MemoryStore`` in memory; the trust port is
``gateway.adapters.ports.Trust`` and the clock ``gateway.domain.clock.Clock``.
Nothing in the core reaches for a global.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from gateway.domain.body import Body
from gateway.domain.edxml import AttachmentFacts
from gateway.domain.transfer import PackageRef
from gateway.domain.vocabulary import Classification, DeliveryState, Network, Priority

# Both stores refuse this: what a classified document's attachments are called is never stored.
CLASSIFIED_ATTACHMENTS = "document {id} is classified: the facts of its attachments are never stored"

# --- records ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewEvent:
    """One trace event. ``detail`` must never hold a subject, content or attachment name."""

    kind: str
    at: datetime
    document: str | None = None
    recipient: str | None = None
    network: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NewDelivery:
    recipient: str  # the active agency that receives it
    addressed: str  # what the sender wrote
    chain: tuple[str, ...] = ()  # addressed → … → recipient when forwarded to a successor


@dataclass(frozen=True)
class NewRoute:
    network: Network
    deliveries: tuple[NewDelivery, ...]


@dataclass(frozen=True)
class NewDocument:
    """An accepted package, with its routes and deliveries, stored in one transaction."""

    id: str
    kind: str  # edoc | status
    sender: str
    sender_network: Network
    doc_key: str  # DocumentId for an edoc; the signed digest for a status (idempotency key)
    document_id: str | None
    response_for: str | None
    status_code: str | None
    signed_digest: str
    signer: str
    subject: str | None  # None for classified documents
    priority: Priority
    classification: Classification
    accepted_at: datetime
    # In memory or in a spool file: the store writes it in parts of at most 1 MiB either way.
    package: Body
    routes: tuple[NewRoute, ...]
    events: tuple[NewEvent, ...]
    due_at: datetime | None = None  # DueDate, or the time set for a Hỏa tốc hẹn giờ delivery
    # An edoc's BussinessDocType: 2 updates and 3 replaces the edoc named in ``response_for``.
    business_doc_type: int | None = None
    # An unclassified edoc's attachments, as the CPU phase found them in ``package`` (names,
    # digests, spans); always empty for a classified one, whose names must not be stored in clear.
    attachments: tuple[AttachmentFacts, ...] = ()


@dataclass(frozen=True)
class DocumentRecord:
    id: str
    kind: str
    sender: str
    sender_network: Network
    document_id: str | None
    response_for: str | None
    status_code: str | None
    signed_digest: str
    signer: str
    subject: str | None
    priority: Priority
    classification: Classification
    size: int
    accepted_at: datetime
    due_at: datetime | None = None
    business_doc_type: int | None = None  # as NewDocument's
    package_sha256: str | None = (
        None  # hex SHA-256 of the package as stored (None: stored before it was kept)
    )


@dataclass(frozen=True)
class DeliveryRecord:
    document: str
    recipient: str
    addressed: str
    chain: tuple[str, ...]
    network: Network
    state: DeliveryState
    delivered_at: datetime | None
    fetched_at: datetime | None


@dataclass(frozen=True)
class RouteJob:
    """A document to carry into one network: seal, bridge if needed, verify, deliver."""

    route_id: int
    document: DocumentRecord
    target: Network
    recipients: tuple[tuple[str, str], ...]  # (recipient, addressed)
    attempts: int
    # The package as a seal names it, once the courier has read the stored parts and checked them
    # against the digest recorded at acceptance (``Courier.run_once``); carriers get only this.
    package_ref: PackageRef | None = None
    # A package of one part (at most 1 MiB) as the claim read it, so that the courier need not
    # read it again to hash it; None for a larger one (read a part at a time). Dropped once named.
    package: bytes | None = None


@dataclass(frozen=True)
class StoredPackage:
    """A stored package as it is sent on: its size (for a Content-Length) and its bytes, read
    from the store in pieces of at most 1 MiB only while ``pieces()`` is iterated."""

    size: int
    pieces: Callable[[], AsyncIterator[bytes]]


@dataclass(frozen=True)
class Carried:
    """What carrying a route produced: the sealed transfer as the recipients' network holds it,
    or, when that network has its own node (``forward_to``), as this network's adapter sealed it
    for the crossing."""

    sealed: bytes
    events: tuple[NewEvent, ...]
    forward_to: Network | None = None


@dataclass(frozen=True)
class InboxItem:
    document: DocumentRecord
    delivery: DeliveryRecord
    recalled: bool = False  # the sender asked to recall it and this recipient agreed (15)
    superseded_by: str | None = None  # the replacement (BussinessDocType 3) that supersedes it


@dataclass(frozen=True)
class EventRecord:
    seq: int
    kind: str
    at: datetime
    document: str | None
    recipient: str | None
    network: str | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class AtRisk:
    """A delivery whose document is due soon (or overdue) and not yet fetched or answered 03."""

    document: str
    recipient: str
    network: Network
    due_at: datetime
    fetched_at: datetime | None
    flagged: frozenset[str]  # deadline kinds already in the trace for this recipient


@dataclass(frozen=True)
class Endpoint:
    """Where an agency wants to hear that something landed in its inbox (push notifications)."""

    agency: str
    url: str
    registered_at: datetime


@dataclass(frozen=True)
class NotificationJob:
    """One queued notification: a delivery landed in the inbox of ``recipient``, which has an
    endpoint. Routing metadata only, never a subject or content."""

    id: int
    document: str
    recipient: str
    network: Network
    kind: str  # the document's: edoc | status
    status_code: str | None
    response_for: str | None
    sender: str
    priority: Priority
    created_at: datetime  # when the delivery landed
    attempts: int  # tries made before this claim
    url: str  # the recipient's endpoint now


class Peers(Protocol):
    """The nodes of other networks that this node hands sealed transfers to."""

    def knows(self, network: Network) -> bool: ...

    async def send(self, network: Network, sealed: bytes, package: StoredPackage) -> None:
        """Hand over one sealed transfer header and the package it names (streamed); raises
        ``PeerUnavailable`` (try later) or ``DeliveryError`` (the peer refused it)."""
        ...


class PackageChunks(Protocol):
    """A stored package read in pieces, never whole."""

    def package_chunks(self, doc_id: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The stored bytes [start, end) of document ``doc_id``'s package (encrypted when
        classified), in order, in pieces of at most 1 MiB, each read when asked for (an async
        generator); ``end`` None or past the end: to the end. Nothing for an unknown id."""
        ...


class DocumentReads(PackageChunks, Protocol):
    """One stored document as intake, the mailbox and inbound federation read it."""

    async def document(self, doc_id: str) -> DocumentRecord | None: ...

    async def deliveries(self, doc_id: str) -> list[DeliveryRecord]:
        """The document's deliveries, in the order they were stored."""
        ...

    async def package(self, doc_id: str) -> bytes | None:
        """The package as stored (encrypted when classified), whole in memory: for small ones
        (status packages) and tools; a delivery streams ``package_chunks`` instead."""
        ...

    async def sealed_for(self, doc_id: str, network: Network) -> bytes | None:
        """The sealed transfer as ``network`` holds it; None until its route is done."""
        ...

    async def attachments(self, doc_id: str) -> list[AttachmentFacts]:
        """The attachments recorded with the document when it was stored, by position; empty for
        a classified document, one taken over from a peer node, or one stored before they were."""
        ...


class DeliveryLog(Protocol):
    """The tamper-evident delivery log, for records that go with no other change."""

    async def add_events(self, events: Sequence[NewEvent]) -> None: ...


class IntakeStore(DocumentReads, DeliveryLog, Protocol):
    """What ``Intake`` needs: store an accepted document, read the one a status answers."""

    async def edocs_with_document_id(self, document_id: str) -> list[DocumentRecord]:
        """The edoc documents (not statuses) whose DocumentId is ``document_id``, oldest first:
        how a recall package, which names its original by DocumentId, finds it."""
        ...

    async def accept(self, doc: NewDocument) -> tuple[str, bool]:
        """Store a document; returns (id, created). Same sender + doc_key with the same
        signed digest returns the existing id; with another digest raises ``DocumentConflict``."""
        ...


class CourierStore(PackageChunks, Protocol):
    """What ``Courier`` needs: claim routes under a lease, read their packages in pieces (to check
    their digest, and to stream them to a peer node), and settle each one."""

    async def claim_routes(
        self, *, node: str, limit: int, now: datetime, lease_seconds: float, exclude: Collection[Network] = ()
    ) -> list[RouteJob]:
        """Claim pending routes whose lease has run out, most urgent first, then by fair rank
        between senders, then oldest; routes into the ``exclude``d networks stay unclaimed."""
        ...

    async def complete_routes(self, done: Sequence[tuple[RouteJob, Carried]], *, now: datetime) -> None:
        """Deliver carried routes into inboxes (exactly once) and record their events; in the same
        transaction, queue a notification for each recipient that has an endpoint."""
        ...

    async def defer_route(self, job: RouteJob, *, reason: str, not_before: datetime, now: datetime) -> None:
        """Leave a route pending, not to be claimed again before ``not_before``."""
        ...

    async def fail_route(self, job: RouteJob, *, reason: str, now: datetime) -> None:
        """Give up on a pending route: its deliveries are failed until an operator re-drives them."""
        ...

    async def quarantine_route(self, job: RouteJob, *, reason: str, now: datetime) -> None:
        """A hop refused the route: its pending deliveries never reach an inbox."""
        ...

    async def release_claims(self, *, node: str) -> int:
        """Give back the pending routes ``node`` holds (it restarted); returns how many."""
        ...


class MailboxStore(DocumentReads, DeliveryLog, Protocol):
    """What ``Mailbox`` needs: an agency's inbox, its fetches, receipts and traces."""

    async def inbox(self, agency: str, *, include_fetched: bool, limit: int) -> list[InboxItem]:
        """Deliveries waiting for ``agency``, most urgent first, then oldest."""
        ...

    async def mark_fetched(
        self,
        doc_id: str,
        agency: str,
        *,
        now: datetime,
        receipt: NewDocument | None,
        events: Sequence[NewEvent] = (),
    ) -> bool:
        """First fetch: mark fetched, store the 01 receipt and record ``events``, all in one
        transaction; later fetches change nothing and record nothing. Returns whether it was first."""
        ...

    async def statuses_for(self, doc_id: str) -> list[tuple[DocumentRecord, bytes]]:
        """The status documents answering ``doc_id`` with their packages, oldest first."""
        ...

    async def events(self, doc_id: str) -> list[EventRecord]:
        """The document's trace, by time then sequence."""
        ...

    async def recall_statuses(self, doc_ids: Collection[str]) -> dict[str, list[DocumentRecord]]:
        """For each of ``doc_ids`` that has any, its 13, 15 and 16 statuses, oldest first (one read
        for a whole inbox page; ``gateway.exchange.recalls`` turns them into recall states)."""
        ...

    async def superseded_by(self, doc_ids: Collection[str]) -> dict[str, str]:
        """For each of ``doc_ids`` that a replacement (BussinessDocType 3) supersedes, the id of the
        newest such replacement (one read for a whole inbox page)."""
        ...


class InboundStore(DeliveryLog, Protocol):
    """What inbound federation (``Inbound``) needs: take over a transfer from a peer node once."""

    async def document(self, doc_id: str) -> DocumentRecord | None: ...

    async def accept_forwarded(self, doc: NewDocument, sealed: bytes, *, now: datetime) -> bool:
        """Store a document taken over from a peer node, already sealed for this network and in
        its recipients' inboxes (queueing their notifications, as ``complete_routes`` does). False
        if it was taken over before."""
        ...


class DeadlineStore(DeliveryLog, Protocol):
    """What ``DeadlineWatcher`` needs: the deliveries at risk of missing their due time."""

    async def deadlines_at_risk(self, *, until: datetime) -> list[AtRisk]:
        """Deliveries of documents due by ``until`` whose recipient has not answered, soonest first."""
        ...


class NotificationStore(DeliveryLog, Protocol):
    """What push notifications need: the agencies' endpoints, and the queue of notifications
    that ``complete_routes`` and ``accept_forwarded`` fill, durable until each is settled."""

    async def set_endpoint(self, agency: str, url: str, *, now: datetime) -> Endpoint:
        """Register (or replace) ``agency``'s endpoint; later notifications go there."""
        ...

    async def endpoint(self, agency: str) -> Endpoint | None: ...

    async def remove_endpoint(self, agency: str) -> int | None:
        """Forget ``agency``'s endpoint and drop its queued notifications (pull still finds every
        document); returns how many were dropped, or None if it had no endpoint."""
        ...

    async def claim_notifications(
        self, *, node: str, limit: int, now: datetime, lease_seconds: float, exclude: Collection[str] = ()
    ) -> list[NotificationJob]:
        """Claim queued notifications that are due, most urgent first, then oldest, each held for
        the lease; those of the ``exclude``d agencies (their endpoint is down) stay queued."""
        ...

    async def finish_notification(self, job: NotificationJob, *, events: Sequence[NewEvent]) -> None:
        """Take a notification off the queue (sent, or given up) and record ``events`` with it."""
        ...

    async def retry_notification(
        self,
        job: NotificationJob,
        *,
        not_before: datetime,
        reason: str,
        attempted: bool,
        events: Sequence[NewEvent] = (),
    ) -> None:
        """Leave a notification queued until ``not_before``; ``attempted``: it was tried (and
        failed), so its count of attempts goes up."""
        ...

    async def release_notifications(self, *, node: str) -> int:
        """Make the notifications ``node`` held (it restarted) due at once; returns how many."""
        ...

    async def queued_notifications(self) -> int: ...


class QueueControl(Protocol):
    """What operators and the health check do to the queue of routes."""

    async def redrive(self, doc_id: str, *, now: datetime, by: str) -> int:
        """Put a document's failed routes back to pending (an operator's re-drive); returns how many."""
        ...

    async def pending_routes(self) -> int: ...


class Store(
    IntakeStore,
    CourierStore,
    MailboxStore,
    InboundStore,
    DeadlineStore,
    NotificationStore,
    QueueControl,
    Protocol,
):
    """Durable state of one gateway node: the whole port, as each store implements it.

    Every method is one transaction, and every type crossing it is a record of this module or
    of ``gateway.domain``. Each use case is given only the narrow port above that it needs."""

    async def close(self) -> None: ...
