"""Reading a package: the facts the gateway acts on, each exactly once, read by name.

Real packages vary the order of children, so everything is looked up by name. What the gateway
acts on must be there once and only once: a second ``From``, ``DocumentId``, ``gw:Classification``,
``Priority`` or ``DueDate`` (or a second value of anything else in the same place) is refused with
``DuplicateField``, never resolved by taking the first. The same reading runs on the raw tree
before the signature is checked (to refuse early) and on the tree the verifier returned as signed
(the only one acted on).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from lxml import etree

from gateway.domain.agencies import AgencyCode
from gateway.domain.edxml.attachments import check_attachments
from gateway.domain.edxml.dates import ACCEPTED_FORMS, read_moment
from gateway.domain.edxml.names import GW, NS, envelope_of, header_of, q, shown, value_of
from gateway.domain.vocabulary import Classification, Priority, StatusCode
from gateway.errors import DuplicateField, InvalidAgencyCode, InvalidDate, SchemaInvalid

_DATE_SHAPE = frozenset("0123456789/-: ")


class BusinessDocType(enum.IntEnum):
    """``Bussiness/BussinessDocType``: what an edoc package does to the document it names."""

    NEW = 0
    RECALL = 1  # thu hồi
    UPDATE = 2  # cập nhật
    REPLACE = 3  # thay thế


@dataclass(frozen=True)
class DocumentRef:
    """A document another package is about (``ResponseFor``): its sender and DocumentId."""

    organ: str
    document_id: str
    code: str | None = None
    promulgation_date: str | None = None  # informational, carried as written


@dataclass(frozen=True)
class Receiver:
    """``BussinessDocumentInfo/ReceiverList/Receiver``, as written (its meaning is not public)."""

    organ: str | None
    receiver_type: str | None


@dataclass(frozen=True)
class Replacement:
    """``ReplacementInfoList/ReplacementInfo``: a document a replace package supersedes, and for whom."""

    document_id: str | None
    organs: tuple[str, ...]


@dataclass(frozen=True)
class Business:
    """``TraceHeaderList/Bussiness`` (or ``Business``): the business action of an edoc package.

    Read and carried. A recall (1) is acted on, as the 13 it means; an update (2) or replacement (3)
    is linked to the original it names (``gateway.exchange.intake``). The agency codes in
    ``receivers`` and ``replacements`` are as written, not checked: delivery follows ``To`` and
    the original's recipients."""

    doc_type: BusinessDocType = BusinessDocType.NEW
    reason: str | None = None
    document_id: str | None = None
    paper: str | None = None
    document_info: str | None = None
    document_receiver: str | None = None
    receivers: tuple[Receiver, ...] = ()
    replacements: tuple[Replacement, ...] = ()


@dataclass(frozen=True)
class Edoc:
    """The routing facts of a document package, read from its signed content."""

    sender: str
    recipients: tuple[str, ...]
    document_id: str
    subject: str
    priority: Priority
    classification: Classification
    due: str | None  # yyyy/MM/dd or yyyy/MM/dd HH:mm:ss (Vietnam time), whatever form it came in
    response_for: DocumentRef | None = None
    business: Business = field(default_factory=Business)


@dataclass(frozen=True)
class Status:
    """A status package: a recipient's (or, for a recall, the sender's) word on a document.

    ``about_organ`` is ``ResponseFor/OrganId``, the addressee: the document's sender for a
    recipient's status; for a recall (13), the recipient it is asked of."""

    sender: str
    about_organ: str
    about_document_id: str
    code: StatusCode
    description: str | None
    timestamp: str  # yyyy/MM/dd HH:mm:ss (or yyyy/MM/dd), whatever form it came in
    delivered_digest: str | None


# --- by name, once -----------------------------------------------------------------------------


class _Children:
    """The element children of one element, grouped by name, with where they are for messages."""

    def __init__(
        self, parent: etree._Element, where: str, *, repeatable: frozenset[str] = frozenset()
    ) -> None:
        self.where = where
        self.groups: dict[str, list[etree._Element]] = {}
        for child in parent.iterchildren(etree.Element):  # elements only: comments are not fields
            self.groups.setdefault(child.tag, []).append(child)
        for tag, nodes in self.groups.items():
            if len(nodes) > 1 and tag not in repeatable:
                raise DuplicateField(
                    f"{where} holds {len(nodes)} {shown(tag)} elements; exactly one is allowed"
                )

    def node(self, *spellings: str, ns: str = NS) -> etree._Element | None:
        """The one child spelt any of ``spellings`` (``Bussiness``/``Business`` count as one)."""
        found = [n for s in spellings for n in self.groups.get(q(s, ns), ())]
        if len(found) > 1:
            names = " and ".join(shown(n.tag) for n in found)
            raise DuplicateField(f"{self.where} holds {names}; exactly one is allowed")
        return found[0] if found else None

    def all(self, tag: str) -> list[etree._Element]:
        return self.groups.get(q(tag), [])

    def text(self, *spellings: str, ns: str = NS) -> str | None:
        node = self.node(*spellings, ns=ns)
        return value_of(node) if node is not None else None

    def required(self, tag: str) -> str:
        value = self.text(tag)
        if value is None or not value.strip():
            raise SchemaInvalid(f"{self.where}/{shown(q(tag))} is missing or empty")
        return value

    def has(self, tag: str) -> bool:
        return q(tag) in self.groups


_TO = frozenset({q("To")})
_TRACE_HEADER = frozenset({q("TraceHeader")})


def _agency(value: str | None, where: str) -> str:
    """An agency code the gateway routes on: checked, and compared as written (no whitespace)."""
    if value is None or not value.strip():
        raise SchemaInvalid(f"{where} is missing or empty")
    if value != value.strip():
        raise InvalidAgencyCode(f"{where}: the agency code has whitespace around it")
    try:
        return AgencyCode.parse(value).value
    except InvalidAgencyCode as exc:
        raise InvalidAgencyCode(f"{where}: {exc.message}") from None


def _organ(node: etree._Element, where: str) -> str:
    return _agency(_Children(node, where).text("OrganId"), f"{where}/edXML:OrganId")


def _acted_date(value: str | None, where: str, *, empty_is_none: bool) -> str | None:
    """A date the gateway acts on, in the standard form; ``InvalidDate`` names the field."""
    if value is None or (empty_is_none and not value.strip()):
        return None
    try:
        return read_moment(value).standard
    except ValueError:
        # Echoed only when it looks like a date: the field is free text to a hostile sender.
        seen = f" ({value.strip()})" if set(value) <= _DATE_SHAPE and len(value) <= 25 else ""
        raise InvalidDate(
            f"{where}{seen} is not a real date in an accepted form ({ACCEPTED_FORMS})"
        ) from None


def _response_for(node: etree._Element, where: str) -> DocumentRef:
    fields = _Children(node, where)
    return DocumentRef(
        organ=_agency(fields.text("OrganId"), f"{where}/edXML:OrganId"),
        document_id=fields.required("DocumentId"),
        code=fields.text("Code"),
        promulgation_date=fields.text("PromulgationDate"),
    )


def _business(header: etree._Element) -> Business:
    trace = header.find(q("TraceHeaderList"))
    if trace is None:
        return Business()
    node = _Children(trace, "TraceHeaderList", repeatable=_TRACE_HEADER).node("Bussiness", "Business")
    if node is None:
        return Business()
    where = f"TraceHeaderList/{shown(node.tag)}"
    fields = _Children(node, where)
    doc_type = fields.text("BussinessDocType", "BusinessDocType")
    info = fields.node("BussinessDocumentInfo", "BusinessDocumentInfo")
    receivers: tuple[Receiver, ...] = ()
    if info is not None:
        receivers = tuple(
            Receiver(r.findtext(q("OrganId")), r.findtext(q("ReceiverType")))
            for r in info.iterfind(f"{q('ReceiverList')}/{q('Receiver')}")
        )
    replacements = tuple(
        Replacement(
            r.findtext(q("DocumentId")),
            tuple(o.text or "" for o in r.iterfind(f"{q('OrganIdList')}/{q('OrganId')}")),
        )
        for r in node.iterfind(f"{q('ReplacementInfoList')}/{q('ReplacementInfo')}")
    )
    return Business(
        doc_type=BusinessDocType(int(doc_type)) if doc_type and doc_type.strip() else BusinessDocType.NEW,
        reason=fields.text("BussinessDocReason", "BusinessDocReason"),
        document_id=fields.text("DocumentId"),
        paper=fields.text("Paper"),
        document_info=info.findtext(q("DocumentInfo")) if info is not None else None,
        document_receiver=info.findtext(q("DocumentReceiver")) if info is not None else None,
        receivers=receivers,
        replacements=replacements,
    )


def _edoc(message: _Children, header: etree._Element) -> Edoc:
    sender = message.node("From")
    if sender is None:
        raise SchemaInvalid("MessageHeader/edXML:From is missing")
    recipients = message.all("To")
    if not recipients:
        raise SchemaInvalid("MessageHeader has no edXML:To: an edoc package names at least one recipient")
    other = message.node("OtherInfo")
    priority = _Children(other, "MessageHeader/OtherInfo").text("Priority") if other is not None else None
    level = message.text("Classification", ns=GW)
    response_for = message.node("ResponseFor")
    return Edoc(
        sender=_organ(sender, "MessageHeader/edXML:From"),
        recipients=tuple(_organ(to, f"MessageHeader/edXML:To[{i}]") for i, to in enumerate(recipients, 1)),
        document_id=message.required("DocumentId"),
        subject=message.text("Subject") or "",
        priority=Priority(int(priority)) if priority is not None else Priority.THUONG,
        classification=Classification.from_slug(level) if level is not None else Classification.NONE,
        due=_acted_date(message.text("DueDate"), "MessageHeader/edXML:DueDate", empty_is_none=True),
        response_for=_response_for(response_for, "MessageHeader/edXML:ResponseFor")
        if response_for is not None
        else None,
        business=_business(header),
    )


def _status(message: _Children) -> Status:
    if message.has("To"):
        raise SchemaInvalid(
            "a status package has no edXML:To: its addressee is MessageHeader/ResponseFor/OrganId"
        )
    sender = message.node("From")
    if sender is None:
        raise SchemaInvalid("MessageHeader/edXML:From is missing")
    response_for = message.node("ResponseFor")
    if response_for is None:
        raise SchemaInvalid(
            "MessageHeader/edXML:ResponseFor is missing: a status names the document it answers"
        )
    about = _response_for(response_for, "MessageHeader/edXML:ResponseFor")
    timestamp = _acted_date(
        message.required("Timestamp"), "MessageHeader/edXML:Timestamp", empty_is_none=False
    )
    return Status(
        sender=_organ(sender, "MessageHeader/edXML:From"),
        about_organ=about.organ,
        about_document_id=about.document_id,
        code=StatusCode(message.required("StatusCode")),
        description=message.text("Description"),
        timestamp=timestamp or "",
        delivered_digest=message.text("DeliveredDigest", ns=GW),
    )


def read_package(signed: etree._Element) -> Edoc | Status:
    """Read the facts the gateway acts on from a schema-valid package of either shape.

    A status package is one whose MessageHeader holds a StatusCode. Raises ``DuplicateField``,
    ``InvalidAgencyCode``, ``InvalidDate``, ``AttachmentMismatch``, ``InvalidAttachmentName`` or
    ``SchemaInvalid``, each naming the field.
    """
    envelope_of(signed)
    header = header_of(signed)
    node = header.find(q("MessageHeader"))
    if node is None:
        raise SchemaInvalid("edXMLHeader holds no MessageHeader")
    message = _Children(node, "MessageHeader", repeatable=_TO)
    check_attachments(signed)
    if message.has("StatusCode"):
        return _status(message)
    return _edoc(message, header)
