"""What ``AgencyClient`` returns: frozen dataclasses read from the gateway's JSON answers.

Each keeps the answer it was read from in ``raw`` (not compared, not shown): the CLI prints it
for ``--json``, and a system can read a field this client does not know yet there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.agency_side.packages import Opened
from gateway.domain.edxml import Attachment, Edoc, Status
from gateway.domain.edxml.dates import ACCEPTED_FORMS, read_moment
from gateway.domain.transfer import Hop
from gateway.domain.vocabulary import Classification, Network, Priority
from gateway.errors import InvalidDate

VIETNAM = ZoneInfo("Asia/Ho_Chi_Minh")


@dataclass(frozen=True)
class Draft:
    """A document an agency system wants to send; the client adds the sender, a DocumentId
    (unless given), the date, and the signature.

    ``due`` is the deadline (edXML DueDate, Vietnam time; a date alone means the end of that
    day): a ``datetime``, a ``date``, or text in one of the accepted forms. For an update or a
    replacement, ``to`` defaults to the original's recipients."""

    subject: str
    to: Sequence[str] = ()
    content: str = ""
    priority: Priority = Priority.THUONG
    classification: Classification = Classification.NONE
    due: datetime | date | str | None = None
    attachments: Sequence[Attachment] = ()
    document_id: str | None = None


def due_text(due: datetime | date | str | None) -> str | None:
    """``due`` in the standard edXML form (``yyyy/MM/dd`` or ``yyyy/MM/dd HH:mm:ss``, Vietnam time)."""
    if due is None:
        return None
    if isinstance(due, datetime):
        moment = due.astimezone(VIETNAM) if due.tzinfo is not None else due  # naive: Vietnam time
        return moment.strftime("%Y/%m/%d %H:%M:%S")
    if isinstance(due, date):
        return due.strftime("%Y/%m/%d")
    try:
        return read_moment(due).standard
    except ValueError:
        shown = due.strip()[:40]
        raise InvalidDate(
            f"due date {shown!r} is not a real date in an accepted form ({ACCEPTED_FORMS})"
        ) from None


@dataclass(frozen=True)
class Recipient:
    """One recipient of an accepted document, after following retired codes to their successor."""

    code: str
    addressed: str
    network: Network
    forwarded_via: tuple[str, ...] | None  # the chain of retired codes, when it was forwarded


@dataclass(frozen=True)
class Accepted:
    """The gateway's 202: the document (or status) is stored and will be carried."""

    id: str
    duplicate: bool  # the same package was accepted before: same id, nothing new stored
    recipients: tuple[Recipient, ...]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def read(cls, d: Mapping[str, Any]) -> Accepted:
        return cls(
            id=str(d["id"]),
            duplicate=bool(d.get("duplicate")),
            recipients=tuple(
                Recipient(
                    code=str(r["code"]),
                    addressed=str(r["addressed"]),
                    network=Network(r["network"]),
                    forwarded_via=_strings(r.get("forwarded_via")),
                )
                for r in d["recipients"]
            ),
            raw=d,
        )


@dataclass(frozen=True)
class InboxEntry:
    """One document or status waiting for (or, with ``include_fetched``, already fetched by) the agency."""

    id: str
    kind: str  # edoc | status
    sender: str
    document_id: str | None
    subject: str | None  # None for a classified document: the gateway never holds it in clear
    priority: Priority
    classification: Classification
    status_code: str | None
    response_for: str | None
    size: int
    addressed: str
    state: str
    accepted_at: datetime
    delivered_at: datetime | None
    recalled: bool
    updates: str | None
    replaces: str | None
    superseded_by: str | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def read(cls, d: Mapping[str, Any]) -> InboxEntry:
        return cls(
            id=str(d["id"]),
            kind=str(d["kind"]),
            sender=str(d["from"]),
            document_id=_opt(d.get("document_id")),
            subject=_opt(d.get("subject")),
            priority=Priority(int(d["priority"])),
            classification=Classification.from_slug(str(d["classification"])),
            status_code=_opt(d.get("status_code")),
            response_for=_opt(d.get("response_for")),
            size=int(d.get("size") or 0),
            addressed=str(d.get("addressed") or ""),
            state=str(d.get("state") or ""),
            accepted_at=_time(d["accepted_at"]),
            delivered_at=_opt_time(d.get("delivered_at")),
            recalled=bool(d.get("recalled")),
            updates=_opt(d.get("updates")),
            replaces=_opt(d.get("replaces")),
            superseded_by=_opt(d.get("superseded_by")),
            raw=d,
        )


@dataclass(frozen=True)
class Delivery:
    """A fetched document or status, opened: the network adapter's seal and the sender's
    signature verified, a classified package decrypted with the agency's own key."""

    id: str
    package: bytes  # the sender's signed edXML package, exactly as signed (plaintext if it was classified)
    content: Edoc | Status  # what the package says, read from its signed part
    signed_by: str  # the agency (or, for a 01, the adapter) whose signature verified
    classification: Classification
    hops: tuple[Hop, ...]
    attachments: tuple[Attachment, ...]
    superseded_by: (
        str | None
    )  # a replacement the sender has sent since (the gateway's word, beside the package)
    # As packages.open_delivery returned it; ``opened.sealed`` is the sealed transfer header as
    # fetched, what a 01 receipt's digest covers.
    opened: Opened = field(repr=False, compare=False)
    receipt_sent: bool = False  # this agency's own signed 01 went back (classified documents)


@dataclass(frozen=True)
class StatusReceipt:
    """One status (01-06, 13, 15, 16) about a document, re-verified by the gateway."""

    id: str
    code: str
    meaning: str
    at: datetime
    signed_by: str
    signature_valid: bool
    problem: str | None


@dataclass(frozen=True)
class RecipientReceipts:
    """Where one recipient stands: delivery, fetch, its statuses, a recall or change asked of it."""

    recipient: str
    addressed: str
    forwarded_via: tuple[str, ...] | None
    network: Network
    state: str
    delivered_at: datetime | None
    fetched_at: datetime | None
    receipts: tuple[StatusReceipt, ...]
    confirmed: bool  # a 01 is in
    recall: str | None  # asked | agreed | refused
    change: str | None  # an update or replacement: asked | agreed | refused


@dataclass(frozen=True)
class Receipts:
    """The receipts and statuses of one document, per recipient."""

    id: str
    document_id: str
    sender: str
    updates: str | None
    replaces: str | None
    superseded_by: str | None
    recipients: tuple[RecipientReceipts, ...]
    sender_statuses: tuple[StatusReceipt, ...]  # the sender's own (a recall)
    unconfirmed: tuple[str, ...]  # recipients without a 01 yet
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def read(cls, d: Mapping[str, Any]) -> Receipts:
        return cls(
            id=str(d["id"]),
            document_id=str(d["document_id"]),
            sender=str(d["from"]),
            updates=_opt(d.get("updates")),
            replaces=_opt(d.get("replaces")),
            superseded_by=_opt(d.get("superseded_by")),
            recipients=tuple(
                RecipientReceipts(
                    recipient=str(r["recipient"]),
                    addressed=str(r["addressed"]),
                    forwarded_via=_strings(r.get("forwarded_via")),
                    network=Network(r["network"]),
                    state=str(r["state"]),
                    delivered_at=_opt_time(r.get("delivered_at")),
                    fetched_at=_opt_time(r.get("fetched_at")),
                    receipts=tuple(_status_receipt(s) for s in r.get("receipts", ())),
                    confirmed=bool(r.get("confirmed")),
                    recall=_opt(r.get("recall")),
                    change=_opt(r.get("change")),
                )
                for r in d["recipients"]
            ),
            sender_statuses=tuple(_status_receipt(s) for s in d.get("sender_statuses", ())),
            unconfirmed=tuple(str(c) for c in d.get("unconfirmed", ())),
            raw=d,
        )


@dataclass(frozen=True)
class TraceEvent:
    """One event of a document's trace, in order (``seq``)."""

    seq: int
    at: datetime
    event: str
    recipient: str | None
    network: str | None
    detail: Mapping[str, Any]

    @classmethod
    def read(cls, d: Mapping[str, Any]) -> TraceEvent:
        return cls(
            seq=int(d["seq"]),
            at=_time(d["at"]),
            event=str(d["event"]),
            recipient=_opt(d.get("recipient")),
            network=_opt(d.get("network")),
            detail=d.get("detail") or {},
        )


def _status_receipt(s: Mapping[str, Any]) -> StatusReceipt:
    return StatusReceipt(
        id=str(s["id"]),
        code=str(s["code"]),
        meaning=str(s.get("meaning") or ""),
        at=_time(s["at"]),
        signed_by=str(s.get("signed_by") or ""),
        signature_valid=bool(s.get("signature_valid")),
        problem=_opt(s.get("problem")),
    )


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


def _strings(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(str(v) for v in value)


def _time(value: Any) -> datetime:
    return datetime.fromisoformat(str(value))


def _opt_time(value: Any) -> datetime | None:
    return None if value is None else _time(value)
