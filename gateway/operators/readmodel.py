"""What operators read about a node: the port behind the console, ``gateway trace`` and the metrics.

Every read here is one indexed query (or a handful), paginated by document id
(ids sort by acceptance), so a page costs the same with a million documents as
with ten. ``gateway.infra.sql.reads.SqlOversight`` implements it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from gateway.audit.heads import SignedHead
from gateway.audit.log import AuditRecord
from gateway.audit.signer import AuditLog
from gateway.exchange.ports import AtRisk, DeliveryRecord, DocumentRecord, EventRecord


@dataclass(frozen=True)
class RouteState:
    """One (document, target network) route: how carrying it went."""

    network: str
    state: str  # pending | done | quarantined | failed
    attempts: int
    last_error: str | None
    done_at: datetime | None


@dataclass(frozen=True)
class TraceParts:
    """Everything a document's timeline is drawn from, read in one go."""

    document: DocumentRecord
    deliveries: list[DeliveryRecord]
    events: list[EventRecord]
    statuses: list[DocumentRecord]  # status packages answering it (01 receipts, 03 ...), oldest first
    routes: list[RouteState]


@dataclass(frozen=True)
class DocumentSummary:
    document: DocumentRecord
    deliveries: tuple[DeliveryRecord, ...]


@dataclass(frozen=True)
class Search:
    """A search over documents (edoc packages), newest first; ``before`` pages to older ones."""

    id: str | None = None  # the gateway's id
    document_id: str | None = None  # the sender's DocumentId
    agency: str | None = None  # sent by or delivered to this agency
    since: datetime | None = None
    until: datetime | None = None
    states: frozenset[str] = field(default_factory=frozenset)  # any delivery (of ``agency``) in these
    before: str | None = None
    limit: int = 50


@dataclass(frozen=True)
class MinuteCount:
    minute: datetime  # UTC, start of the minute
    network: str  # the sender's network
    priority: int
    count: int


@dataclass(frozen=True)
class RouteMinute:
    """Routes made in one minute (a document to two networks makes one on each)."""

    minute: datetime  # UTC, start of the minute the document was accepted here
    network: str  # the target network
    priority: int
    kind: str  # edoc | status
    count: int


@dataclass(frozen=True)
class Finished:
    """A delivery that left the queue: into an inbox, handed to a peer node, or given up on."""

    at: datetime
    document: str
    network: str  # the target network (the recipient's)
    kind: str  # delivered | forwarded | failed | quarantined
    document_kind: str | None  # edoc | status
    accepted_at: datetime | None  # of the document, here


@dataclass(frozen=True)
class Activity:
    """What the overview's charts are drawn from: the routes made since ``since``, the deliveries
    that left the queue since then (from the delivery log), and the queue as it is now."""

    since: datetime
    routes: list[RouteMinute]
    finished: list[Finished]
    pending: list[QueueDepth]
    complete: bool  # False: the log had more records than one read takes; the oldest were left out


@dataclass(frozen=True)
class QueueDepth:
    network: str  # the target network of the pending routes
    priority: int
    count: int


@dataclass(frozen=True)
class Failing:
    """A delivery that did not reach an inbox, or that its recipient could not open."""

    document: str
    kind: str  # quarantined | failed | recipient_failed
    network: str | None
    recipient: str | None
    reason: str
    attempts: int | None
    at: datetime | None


@dataclass(frozen=True)
class FeedEvent:
    """A new record of the log with the facts about its document that metrics label by."""

    seq: int
    kind: str
    at: datetime
    document: str | None
    recipient: str | None
    network: str | None
    request_id: str | None
    detail: dict[str, Any]
    priority: int | None
    sender_network: str | None
    document_kind: str | None
    accepted_at: datetime | None
    writer: str | None = None  # the node (replica) that wrote it; None: the command line


class Oversight(AuditLog, Protocol):
    async def trace_parts(self, doc_id: str) -> TraceParts | None: ...

    async def search_documents(self, search: Search) -> list[DocumentSummary]: ...

    async def accepted_per_minute(self, *, since: datetime) -> list[MinuteCount]: ...

    async def queue_depths(self) -> list[QueueDepth]: ...

    async def activity(self, *, since: datetime) -> Activity:
        """Routes made, deliveries finished and the queue now: the charts of the overview."""
        ...

    async def recent_documents(self, *, limit: int) -> list[DocumentSummary]:
        """The newest documents of any kind (edoc and status packages), newest first."""
        ...

    async def failing(self, *, limit: int) -> list[Failing]: ...

    async def events_after(self, seq: int, *, limit: int) -> list[FeedEvent]: ...

    async def last_seq(self) -> int: ...

    async def at_risk(self, *, until: datetime) -> list[AtRisk]:
        """Deliveries due by ``until`` (or overdue) not yet fetched or answered 03, soonest first."""
        ...

    async def audit_heads(self, *, from_seq: int = 0) -> list[SignedHead]: ...

    async def first_seq_at(self, moment: datetime) -> int | None: ...

    async def audit_record_before(self, seq: int) -> AuditRecord | None: ...
