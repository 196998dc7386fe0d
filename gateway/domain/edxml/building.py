"""Building packages in the SDKs' shape: what the gateway and its CLI emit, an SDK-based system reads.

Every package is rooted at ``edXML`` (default namespace QCVN 102) around an ``edXML:``-prefixed
envelope, with ``AttachmentEncoded`` beside the envelope, unprefixed, exactly as the VXP SDKs
write them; ``Bussiness`` is spelt as they spell it. A status is a ``MessageHeader`` with From,
ResponseFor, StaffInfo, StatusCode, Description and Timestamp, and no To (the addressee is
``ResponseFor/OrganId``). Packages are built unsigned, with a ``ds:Signature`` placeholder as the
last child of ``edXMLHeader``, where the signer puts the signature and the verifier expects it.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from lxml import etree

from gateway.domain.edxml.attachments import Attachment
from gateway.domain.edxml.dates import edxml_date, edxml_timestamp, read_moment
from gateway.domain.edxml.names import DS, GW, NS, q
from gateway.domain.edxml.reading import Business, BusinessDocType, DocumentRef
from gateway.domain.vocabulary import Classification, Priority, StatusCode

SHA256_URI = "http://www.w3.org/2001/04/xmlenc#sha256"


@dataclass(frozen=True)
class Organ:
    """An organisation as edXML names it (From / To)."""

    code: str
    name: str = ""


@dataclass(frozen=True)
class StaffInfo:
    """Who handled a status on the sender's side (all optional)."""

    department: str = ""
    staff: str = ""
    email: str = ""
    mobile: str = ""


@dataclass(frozen=True)
class NewEdoc:
    """What an agency's document system fills in to send a document."""

    sender: Organ
    recipients: Sequence[Organ]
    document_id: str
    subject: str
    content: str = ""
    priority: Priority = Priority.THUONG
    classification: Classification = Classification.NONE
    due: str | None = None
    code_number: str = ""
    code_notation: str = ""
    attachments: Sequence[Attachment] = field(default_factory=tuple)
    response_for: DocumentRef | None = None
    business: Business = field(default_factory=Business)


def _sub(parent: etree._Element, tag: str, text: str | None = None, ns: str = NS) -> etree._Element:
    node = etree.SubElement(parent, q(tag, ns), nsmap={"gw": GW} if ns == GW else None)
    if text is not None:
        node.text = text
    return node


def _organ(parent: etree._Element, tag: str, organ: Organ) -> None:
    node = _sub(parent, tag)
    _sub(node, "OrganId", organ.code)
    if organ.name:
        _sub(node, "OrganName", organ.name)


def _root() -> tuple[etree._Element, etree._Element]:
    # The default namespace on the root, the edXML prefix from the envelope down: AttachmentEncoded
    # comes out unprefixed and the envelope prefixed, as the SDKs write them.
    root = etree.Element(q("edXML"), nsmap={None: NS})  # type: ignore[dict-item]  # lxml takes None
    envelope = etree.SubElement(root, q("edXMLEnvelope"), nsmap={"edXML": NS})
    return root, envelope


def _signature_placeholder(header: etree._Element) -> None:
    # signxml replaces this element with the enveloped signature, pinning where it goes.
    etree.SubElement(header, q("Signature", DS), {"Id": "placeholder"}, nsmap={"ds": DS})


def _code_of(document_id: str) -> str:
    # A DocumentId is "organ,yyyy/MM/dd,number/notation".
    return document_id.rsplit(",", 1)[-1]


def _date_of(document_id: str) -> str | None:
    parts = document_id.split(",")
    if len(parts) != 3:
        return None
    try:
        return read_moment(parts[1]).standard
    except ValueError:
        return None


def _response_for(parent: etree._Element, ref: DocumentRef) -> None:
    node = _sub(parent, "ResponseFor")
    _sub(node, "OrganId", ref.organ)
    _sub(node, "Code", ref.code if ref.code is not None else _code_of(ref.document_id))
    promulgated = ref.promulgation_date if ref.promulgation_date is not None else _date_of(ref.document_id)
    if promulgated:
        _sub(node, "PromulgationDate", promulgated)
    _sub(node, "DocumentId", ref.document_id)


def _business(parent: etree._Element, business: Business) -> None:
    node = _sub(parent, "Bussiness")
    if business.document_id is not None:
        _sub(node, "DocumentId", business.document_id)
    _sub(node, "BussinessDocType", str(int(business.doc_type)))
    if business.reason:
        _sub(node, "BussinessDocReason", business.reason)
    _sub(node, "Paper", business.paper or "0")
    if business.doc_type is BusinessDocType.UPDATE or business.receivers:
        info = _sub(node, "BussinessDocumentInfo")
        _sub(info, "DocumentInfo", business.document_info or "0")
        _sub(info, "DocumentReceiver", business.document_receiver or "0")
        receivers = _sub(info, "ReceiverList")
        for receiver in business.receivers:
            entry = _sub(receivers, "Receiver")
            _sub(entry, "OrganId", receiver.organ or "")
            _sub(entry, "ReceiverType", receiver.receiver_type or "0")
    if business.replacements:
        replacements = _sub(node, "ReplacementInfoList")
        for replacement in business.replacements:
            entry = _sub(replacements, "ReplacementInfo")
            _sub(entry, "DocumentId", replacement.document_id or "")
            organs = _sub(entry, "OrganIdList")
            for organ in replacement.organs:
                _sub(organs, "OrganId", organ)


def build_edoc(doc: NewEdoc, *, now: datetime) -> etree._Element:
    """An unsigned edoc package in the SDKs' shape, with a signature placeholder in its header."""
    root, envelope = _root()
    header = _sub(envelope, "edXMLHeader")
    message = _sub(header, "MessageHeader")
    _organ(message, "From", doc.sender)
    for recipient in doc.recipients:
        _organ(message, "To", recipient)
    _sub(message, "DocumentId", doc.document_id)
    code = _sub(message, "Code")
    _sub(code, "CodeNumber", doc.code_number or _code_of(doc.document_id).split("/")[0])
    _sub(code, "CodeNotation", doc.code_notation or "GW")
    promulgation = _sub(message, "PromulgationInfo")
    _sub(promulgation, "PromulgationDate", edxml_date(now))
    _sub(message, "Subject", doc.subject)
    if doc.content:
        _sub(message, "Content", doc.content)
    if doc.due:
        _sub(message, "DueDate", doc.due)
    other = _sub(message, "OtherInfo")
    _sub(other, "Priority", str(int(doc.priority)))
    if doc.response_for is not None:
        _response_for(message, doc.response_for)
    if doc.classification is not Classification.NONE:
        _sub(message, "Classification", doc.classification.slug, ns=GW)
    trace = _sub(header, "TraceHeaderList")
    hop = _sub(trace, "TraceHeader")
    _sub(hop, "OrganId", doc.sender.code)
    _sub(hop, "Timestamp", edxml_timestamp(now))
    _business(trace, doc.business)
    _signature_placeholder(header)
    body = _sub(envelope, "edXMLBody")
    manifest = _sub(body, "edXMLManifest")
    manifest.set("version", "1.0")
    for index, attachment in enumerate(doc.attachments, start=1):
        ref = _sub(manifest, "Reference")
        _sub(ref, "ContentId", f"cid:{index}")
        _sub(ref, "ContentType", attachment.content_type)
        _sub(ref, "AttachmentName", attachment.name)
    if doc.attachments:
        encoded = _sub(root, "AttachmentEncoded")
        for index, attachment in enumerate(doc.attachments, start=1):
            node = _sub(encoded, "Attachment")
            _sub(node, "ContentId", f"cid:{index}")
            _sub(node, "AttachmentName", attachment.name)
            _sub(node, "ContentType", attachment.content_type)
            _sub(node, "ContentTransferEncoded", base64.b64encode(attachment.data).decode("ascii"))
    return root


def build_status(
    *,
    sender: Organ,
    about_organ: str,
    about_document_id: str,
    code: StatusCode,
    now: datetime,
    description: str | None = None,
    delivered_digest: str | None = None,
    staff: StaffInfo | None = None,
) -> etree._Element:
    """An unsigned status package in the axis's shape answering (or, code 13, recalling) a document.

    ``about_organ`` is the addressee, written as ``ResponseFor/OrganId``: the document's sender
    for a recipient's status; for a recall, the recipient asked (or the sender's own code, which
    this gateway reads as "every recipient")."""
    root, envelope = _root()
    header = _sub(envelope, "edXMLHeader")
    message = _sub(header, "MessageHeader")
    _organ(message, "From", sender)
    _response_for(message, DocumentRef(about_organ, about_document_id))
    # Always written, empty if need be: SDK-based readers expect the element.
    info = _sub(message, "StaffInfo")
    for tag, value in (
        ("Department", staff.department if staff else ""),
        ("Staff", staff.staff if staff else ""),
        ("Email", staff.email if staff else ""),
        ("Mobile", staff.mobile if staff else ""),
    ):
        if value:
            _sub(info, tag, value)
    _sub(message, "StatusCode", code.value)
    _sub(message, "Description", description or "")
    _sub(message, "Timestamp", edxml_timestamp(now))
    if delivered_digest:
        _sub(message, "DeliveredDigest", delivered_digest, ns=GW).set("Algorithm", SHA256_URI)
    _signature_placeholder(header)
    return root


def envelope_rooted(root: etree._Element) -> etree._Element:
    """The same unsigned package rooted at its ``edXMLEnvelope``, its attachments moved inside
    ``edXMLBody``: the other shape the gateway accepts, with the same meaning."""
    if root.tag != q("edXML"):
        return root
    envelope = root.find(q("edXMLEnvelope"))
    if envelope is None:
        return root
    copy = etree.fromstring(etree.tostring(envelope))
    encoded = root.find(q("AttachmentEncoded"))
    if encoded is not None:
        body = copy.find(q("edXMLBody"))
        if body is None:
            body = etree.SubElement(copy, q("edXMLBody"))
        body.append(etree.fromstring(etree.tostring(encoded)))
    return copy
