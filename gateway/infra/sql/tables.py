"""The database schema, declared once with SQLModel; queries use SQLAlchemy Core on these tables.

No column ever holds the subject, content or attachment name of a classified
document: ``subject`` is NULL for them and the package (``package_parts``; ``documents.package``
for documents stored before 0007) holds what the sender signed, encrypted when classified.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from gateway.audit.log import utc_text


class UTCDateTime(TypeDecorator[datetime]):
    """Datetimes stored as ISO text in UTC so SQLite and PostgreSQL sort and compare them alike."""

    impl = String(32)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> str | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use timezone-aware UTC")
        return utc_text(value)

    def process_result_value(self, value: str | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return datetime.fromisoformat(value)  # reads the trailing Z as UTC (Python 3.11)


def _ts(nullable: bool = False) -> object:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable))


class DocumentRow(SQLModel, table=True):
    __tablename__ = "documents"
    __table_args__ = (
        UniqueConstraint("sender", "doc_key", name="uq_documents_sender_key"),
        # Operators' searches (console, `gateway trace --agency`): newest first, by sender,
        # by acceptance time, by DocumentId; each a range scan, however large the table.
        Index("ix_documents_sender_id", "sender", "id"),
        Index("ix_documents_accepted_at", "accepted_at"),
        Index("ix_documents_document_id", "document_id"),
    )

    id: str = Field(primary_key=True, max_length=32)
    kind: str = Field(max_length=8)
    sender: str = Field(max_length=35)
    sender_network: str = Field(max_length=16)
    doc_key: str = Field(max_length=200)
    document_id: str | None = Field(default=None, max_length=200)
    response_for: str | None = Field(default=None, max_length=32, index=True)
    status_code: str | None = Field(default=None, max_length=2)
    # An edoc's BussinessDocType (2 update, 3 replace the edoc in response_for); None for a status.
    business_doc_type: int | None = Field(default=None)
    signed_digest: str = Field(max_length=64)
    # SHA-256 (hex) of ``package`` as stored: the courier checks it before sealing, so bytes that
    # changed at rest are caught before delivery. NULL for rows stored before issue 13.
    package_sha256: str | None = Field(default=None, max_length=64)
    due_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True, index=True))
    signer: str = Field(max_length=120)
    subject: str | None = Field(default=None)
    priority: int
    classification: int
    size: int
    accepted_at: datetime = _ts()  # type: ignore[assignment]
    # The package itself for documents stored before 0007; empty since, the bytes being in
    # ``package_parts`` (``parts`` of them): a 50 MB blob bound, copied and read whole cost the
    # node several copies of it at once (issue 13).
    package: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    parts: int | None = Field(default=None)  # NULL: the package is in ``package`` (stored before 0007)


class PackagePartRow(SQLModel, table=True):
    """One piece of a stored package, in order: every part but the last holds exactly
    ``gateway.domain.body.PART_BYTES``, so the part that holds a byte offset is found by
    division, and a range is read one part (one query) at a time."""

    __tablename__ = "package_parts"

    document: str = Field(foreign_key="documents.id", primary_key=True, max_length=32)
    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class AttachmentRow(SQLModel, table=True):
    """One attachment of an unclassified edoc, as the CPU phase found it in the stored package:
    what it is served with, the size and SHA-256 of its decoded bytes, and where its base64 text
    lies in ``documents.package`` (NULL when no span could be trusted: read from the parsed
    package). Never written for a classified document: its attachment names stay encrypted."""

    __tablename__ = "attachments"

    document: str = Field(foreign_key="documents.id", primary_key=True, max_length=32)
    position: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    content_id: str  # as matched: without ``cid:``
    name: str
    content_type: str
    size: int
    sha256: str = Field(max_length=64)
    span_offset: int | None = None
    span_length: int | None = None


class RouteRow(SQLModel, table=True):
    __tablename__ = "routes"
    __table_args__ = (
        UniqueConstraint("document", "network", name="uq_routes_document_network"),
        # The claim query: pending work, most urgent first, then fairly between senders, then oldest.
        Index("ix_routes_claim", "state", "priority", "fair_rank", "id"),
        # Where each sender stands in its lane (start-time fair queueing, see gateway.infra.sql.fair).
        Index("ix_routes_sender_lane", "state", "priority", "sender", "fair_rank"),
    )

    id: int | None = Field(default=None, primary_key=True)
    document: str = Field(foreign_key="documents.id", max_length=32)
    network: str = Field(max_length=16)
    state: str = Field(max_length=16)  # pending | done | quarantined | failed
    priority: int
    sender: str = Field(default="", max_length=35)
    fair_rank: int = 0
    attempts: int = 0
    claimed_by: str | None = Field(default=None, max_length=64)
    carried_by: str | None = Field(default=None, max_length=64)  # the replica that finished it
    claimed_until: datetime | None = _ts(nullable=True)  # type: ignore[assignment]
    last_error: str | None = None
    sealed: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    done_at: datetime | None = _ts(nullable=True)  # type: ignore[assignment]


class DeliveryRow(SQLModel, table=True):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("document", "recipient", name="uq_deliveries_document_recipient"),
        # The inbox query: what waits for one agency, most urgent first, then oldest.
        Index("ix_deliveries_inbox", "recipient", "state", "priority", "document"),
        # What one agency received, newest first (ids are time-ordered), for operators' searches.
        Index("ix_deliveries_recipient_document", "recipient", "document"),
    )

    id: int | None = Field(default=None, primary_key=True)
    document: str = Field(foreign_key="documents.id", max_length=32)
    route: int = Field(foreign_key="routes.id", index=True)
    recipient: str = Field(max_length=35)
    addressed: str = Field(max_length=35)
    chain: str | None = Field(default=None, max_length=400)
    network: str = Field(max_length=16)
    state: str = Field(max_length=16)
    priority: int
    delivered_at: datetime | None = _ts(nullable=True)  # type: ignore[assignment]
    fetched_at: datetime | None = _ts(nullable=True)  # type: ignore[assignment]


class EventRow(SQLModel, table=True):
    """One record of the tamper-evident delivery log (``gateway.audit.log``): ``hash`` covers the
    record's fields and ``prev_hash``, the hash of the record before it. Written only through
    ``gateway.infra.sql.chain.append_events``; NOT NULL makes any other insert fail loudly instead of
    silently breaking the chain."""

    __tablename__ = "events"

    seq: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=24)
    at: datetime = _ts()  # type: ignore[assignment]
    document: str | None = Field(default=None, max_length=32, index=True)
    recipient: str | None = Field(default=None, max_length=35)
    network: str | None = Field(default=None, max_length=16)
    detail: str = "{}"
    request_id: str | None = Field(default=None, max_length=64)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)
    # The node (replica) whose store wrote the record; NULL for the command line. Not part of the
    # hash: it tells each replica which records to count and log, it is not evidence.
    writer: str | None = Field(default=None, max_length=64)


class EndpointRow(SQLModel, table=True):
    """An agency's push-notification endpoint (``PUT /v1/notifications/endpoint``)."""

    __tablename__ = "notify_endpoints"

    agency: str = Field(primary_key=True, max_length=35)
    url: str = Field(max_length=2048)
    registered_at: datetime = _ts()  # type: ignore[assignment]


class NotificationRow(SQLModel, table=True):
    """A queued push notification: a delivery landed in the inbox of an agency with an endpoint.
    Written in the transaction that delivers, deleted once sent or given up (the trace keeps
    ``notified`` / ``notify_failed``); it holds ids and codes only, never a subject."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("document", "recipient", name="uq_notifications_document_recipient"),
        # The claim: one urgency at a time, oldest first (as routes are claimed).
        Index("ix_notifications_claim", "priority", "id"),
        Index("ix_notifications_recipient", "recipient"),
    )

    id: int | None = Field(default=None, primary_key=True)
    document: str = Field(foreign_key="documents.id", max_length=32)
    recipient: str = Field(max_length=35)
    network: str = Field(max_length=16)
    priority: int
    created_at: datetime = _ts()  # type: ignore[assignment]
    next_attempt_at: datetime = _ts()  # type: ignore[assignment]
    attempts: int = 0
    claimed_by: str | None = Field(default=None, max_length=64)
    last_error: str | None = None


class AuditHeadRow(SQLModel, table=True):
    """A signed head of the delivery log: the node's signature over (seq, hash) of its newest record."""

    __tablename__ = "audit_heads"

    id: int | None = Field(default=None, primary_key=True)
    seq: int = Field(index=True)
    hash: str = Field(max_length=64)
    signed_at: str = Field(max_length=32)  # exactly the signed text
    node: str = Field(max_length=64)
    signer: str = Field(max_length=120)
    algorithm: str = Field(max_length=24)
    signature: str
    certificate: str  # the adapter's signing certificate (PEM), so old heads verify after rotation


METADATA = SQLModel.metadata
