"""The tables as the store's queries name them, and rows turned into the port's records."""

from __future__ import annotations

import json
from typing import Any

from gateway.domain.edxml import AttachmentFacts
from gateway.domain.vocabulary import Classification, DeliveryState, Network, Priority
from gateway.exchange.ports import DeliveryRecord, DocumentRecord, EventRecord
from gateway.infra.sql.tables import (
    AttachmentRow,
    DeliveryRow,
    DocumentRow,
    EndpointRow,
    EventRow,
    NotificationRow,
    PackagePartRow,
    RouteRow,
)

D = DocumentRow.__table__  # type: ignore[attr-defined]
R = RouteRow.__table__  # type: ignore[attr-defined]
V = DeliveryRow.__table__  # type: ignore[attr-defined]
E = EventRow.__table__  # type: ignore[attr-defined]
P = EndpointRow.__table__  # type: ignore[attr-defined]
N = NotificationRow.__table__  # type: ignore[attr-defined]
A = AttachmentRow.__table__  # type: ignore[attr-defined]
PP = PackagePartRow.__table__  # type: ignore[attr-defined]

DOC_COLUMNS = [c for c in D.c if c.name != "package"]


def document_record(row: Any) -> DocumentRecord:
    return DocumentRecord(
        id=row.id,
        kind=row.kind,
        sender=row.sender,
        sender_network=Network(row.sender_network),
        document_id=row.document_id,
        response_for=row.response_for,
        status_code=row.status_code,
        signed_digest=row.signed_digest,
        signer=row.signer,
        subject=row.subject,
        priority=Priority(row.priority),
        classification=Classification(row.classification),
        size=row.size,
        accepted_at=row.accepted_at,
        due_at=row.due_at,
        business_doc_type=row.business_doc_type,
        package_sha256=row.package_sha256,
    )


def attachment_facts(row: Any) -> AttachmentFacts:
    span = (row.span_offset, row.span_length) if row.span_offset is not None else None
    return AttachmentFacts(
        row.position, row.content_id, row.name, row.content_type, row.size, row.sha256, span
    )


def attachment_rows(doc_id: str, facts: tuple[AttachmentFacts, ...]) -> list[dict[str, Any]]:
    return [
        {
            "document": doc_id,
            "position": a.position,
            "content_id": a.content_id,
            "name": a.name,
            "content_type": a.content_type,
            "size": a.size,
            "sha256": a.sha256,
            "span_offset": a.span[0] if a.span is not None else None,
            "span_length": a.span[1] if a.span is not None else None,
        }
        for a in facts
    ]


def delivery_record(row: Any) -> DeliveryRecord:
    return DeliveryRecord(
        document=row.document,
        recipient=row.recipient,
        addressed=row.addressed,
        chain=tuple(row.chain.split(">")) if row.chain else (),
        network=Network(row.network),
        state=DeliveryState(row.state),
        delivered_at=row.delivered_at,
        fetched_at=row.fetched_at,
    )


def event_record(row: Any) -> EventRecord:
    return EventRecord(
        row.seq, row.kind, row.at, row.document, row.recipient, row.network, json.loads(row.detail)
    )


class DocumentView:
    """A joined delivery+document row seen as a document row (the join shares column names)."""

    def __init__(self, row: Any) -> None:
        self._m = row._mapping

    def __getattr__(self, name: str) -> Any:
        column = D.c[name]
        return self._m[column]
