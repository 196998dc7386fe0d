"""edXML packages (QCVN 102:2016): schema checks, reading and building.

Everything that enters the gateway as XML goes through ``gateway.domain.xmlsafe.parse_xml``
(the one hardened parser) and then :func:`validate_package` (or the transfer schema) before anything else
looks at it. Fields are only ever read from what a signature verifier
returned as signed (see ``gateway.crypto.xmldsig``), never from the raw tree.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from lxml import etree

import schemas_xml
from gateway.domain.vocabulary import Classification, Priority, StatusCode
from gateway.errors import SchemaInvalid

NS = schemas_xml.EDXML_NS
GW = schemas_xml.GATEWAY_NS
DS = schemas_xml.DSIG_NS
NSMAP = {"edXML": NS, "gw": GW}


def q(tag: str, ns: str = NS) -> str:
    """Clark-notation name of an element in the edXML namespace (or ``ns``)."""
    return f"{{{ns}}}{tag}"


_QUOTED_VALUE = re.compile(r"(?<!Element )'[^']*'")


def _validate(schema: etree.XMLSchema, root: etree._Element, what: str) -> None:
    # assertValid carries its own error log: the schema object's log is shared between threads.
    try:
        schema.assertValid(root)
    except etree.DocumentInvalid as exc:
        entries: list[Any] = list(cast(Any, exc.error_log))
        raise _schema_error(entries[-1] if entries else None, what) from None


def _schema_error(err: etree._LogEntry | None, what: str) -> SchemaInvalid:
    # Messages may quote values (a subject, say); a classified one must not reach logs or the client.
    message = _QUOTED_VALUE.sub("'…'", err.message) if err is not None else "invalid"
    line = f" (line {err.line})" if err is not None else ""
    return SchemaInvalid(f"{what} does not match the schema{line}: {message}")


def validate_package(root: etree._Element) -> None:
    """Check an edoc or status package against ``schemas_xml/edxml.xsd``."""
    schema = schemas_xml.package_schema()
    if root.tag != q("edXMLEnvelope"):
        raise SchemaInvalid(f"the root element must be edXML:edXMLEnvelope in namespace {NS}")
    _validate(schema, root, "the edXML package")
    header = root.find(q("edXMLHeader"))
    if (
        header is not None
        and header.find(q("MessageHeader")) is not None
        and root.find(q("edXMLBody")) is None
    ):
        raise SchemaInvalid("an edoc package needs an edXMLBody (with its edXMLManifest)")


def validate_transfer(root: etree._Element) -> None:
    """Check a sealed transfer against ``schemas_xml/gateway.xsd``."""
    if root.tag != f"{{{GW}}}Transfer":
        raise SchemaInvalid(f"the root element must be gw:Transfer in namespace {GW}")
    _validate(schemas_xml.transfer_schema(), root, "the sealed transfer")


# --- reading (only ever from the signed tree a verifier returned) -------------------------------


@dataclass(frozen=True)
class Edoc:
    """The routing facts of a document package, read from its signed content."""

    sender: str
    recipients: tuple[str, ...]
    document_id: str
    subject: str
    priority: Priority
    classification: Classification
    due: str | None


@dataclass(frozen=True)
class Status:
    """A status package: a recipient's (or, for a recall, the sender's) word on a document."""

    sender: str
    about_organ: str
    about_document_id: str
    code: StatusCode
    description: str | None
    timestamp: str
    delivered_digest: str | None


def _text(parent: etree._Element, path: str) -> str | None:
    node = parent.find(path, NSMAP)
    return node.text if node is not None and node.text is not None else None


def _required(parent: etree._Element, path: str) -> str:
    value = _text(parent, path)
    if value is None:
        raise SchemaInvalid(f"{path} is missing or empty")
    return value.strip()


def read_package(signed: etree._Element) -> Edoc | Status:
    """Read routing facts from a verified, schema-valid package."""
    header = signed.find("edXML:edXMLHeader", NSMAP)
    if header is None:
        raise SchemaInvalid("edXMLHeader is missing")
    message = header.find("edXML:MessageHeader", NSMAP)
    if message is not None:
        level = _text(message, "gw:Classification")
        priority = _text(message, "edXML:OtherInfo/edXML:Priority")
        return Edoc(
            sender=_required(message, "edXML:From/edXML:OrganId"),
            recipients=tuple(
                (node.text or "").strip() for node in message.iterfind("edXML:To/edXML:OrganId", NSMAP)
            ),
            document_id=_required(message, "edXML:DocumentId"),
            subject=_text(message, "edXML:Subject") or "",
            priority=Priority(int(priority)) if priority else Priority.THUONG,
            classification=Classification.from_slug(level) if level else Classification.NONE,
            due=_text(message, "edXML:DueDate"),
        )
    status = header.find("edXML:Status", NSMAP)
    if status is None:
        raise SchemaInvalid("edXMLHeader holds neither a MessageHeader nor a Status")
    return Status(
        sender=_required(status, "edXML:From/edXML:OrganId"),
        about_organ=_required(status, "edXML:ResponseFor/edXML:OrganId"),
        about_document_id=_required(status, "edXML:ResponseFor/edXML:DocumentId"),
        code=StatusCode(_required(status, "edXML:StatusCode")),
        description=_text(status, "edXML:Description"),
        timestamp=_required(status, "edXML:Timestamp"),
        delivered_digest=_text(status, "gw:DeliveredDigest"),
    )


# --- building (used by the CLI for agencies, and by adapters for receipts) ----------------------


@dataclass(frozen=True)
class Organ:
    """An organisation as edXML names it (From / To)."""

    code: str
    name: str = ""


@dataclass(frozen=True)
class Attachment:
    name: str
    content_type: str
    data: bytes


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


def _sub(parent: etree._Element, tag: str, text: str | None = None, ns: str = NS) -> etree._Element:
    node = etree.SubElement(parent, q(tag, ns))
    if text is not None:
        node.text = text
    return node


def _organ(parent: etree._Element, tag: str, organ: Organ) -> None:
    node = _sub(parent, tag)
    _sub(node, "OrganId", organ.code)
    if organ.name:
        _sub(node, "OrganName", organ.name)


def _signature_placeholder(header: etree._Element) -> None:
    # signxml replaces this element with the enveloped signature, pinning where it goes.
    etree.SubElement(header, q("Signature", DS), {"Id": "placeholder"}, nsmap={"ds": DS})


def edxml_date(moment: datetime) -> str:
    return moment.strftime("%Y/%m/%d")


def edxml_timestamp(moment: datetime) -> str:
    return moment.strftime("%Y/%m/%d %H:%M:%S")


def build_edoc(doc: NewEdoc, *, now: datetime) -> etree._Element:
    """An unsigned edoc package with a signature placeholder in its header."""
    root = etree.Element(q("edXMLEnvelope"), nsmap={"edXML": NS})
    header = _sub(root, "edXMLHeader")
    message = _sub(header, "MessageHeader")
    _organ(message, "From", doc.sender)
    for recipient in doc.recipients:
        _organ(message, "To", recipient)
    _sub(message, "DocumentId", doc.document_id)
    code = _sub(message, "Code")
    _sub(code, "CodeNumber", doc.code_number or doc.document_id.rsplit(",", 1)[-1].split("/")[0])
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
    if doc.classification is not Classification.NONE:
        _sub(message, "Classification", doc.classification.slug, ns=GW)
    trace = _sub(header, "TraceHeaderList")
    hop = _sub(trace, "TraceHeader")
    _sub(hop, "OrganId", doc.sender.code)
    _sub(hop, "Timestamp", edxml_timestamp(now))
    _signature_placeholder(header)
    body = _sub(root, "edXMLBody")
    manifest = _sub(body, "edXMLManifest")
    manifest.set("version", "1.0")
    for index, attachment in enumerate(doc.attachments, start=1):
        ref = _sub(manifest, "Reference")
        _sub(ref, "ContentId", f"cid:{index}")
        _sub(ref, "ContentType", attachment.content_type)
        _sub(ref, "AttachmentName", attachment.name)
    if doc.attachments:
        encoded = _sub(body, "AttachmentEncoded")
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
) -> etree._Element:
    """An unsigned status package answering (or, code 13, recalling) a document."""
    root = etree.Element(q("edXMLEnvelope"), nsmap={"edXML": NS})
    header = _sub(root, "edXMLHeader")
    status = _sub(header, "Status")
    _organ(status, "From", sender)
    response = _sub(status, "ResponseFor")
    _sub(response, "OrganId", about_organ)
    _sub(response, "Code", about_document_id.rsplit(",", 1)[-1])
    _sub(response, "DocumentId", about_document_id)
    _sub(status, "StatusCode", code.value)
    if description:
        _sub(status, "Description", description)
    _sub(status, "Timestamp", edxml_timestamp(now))
    if delivered_digest:
        digest = _sub(status, "DeliveredDigest", delivered_digest, ns=GW)
        digest.set("Algorithm", "http://www.w3.org/2001/04/xmlenc#sha256")
    _signature_placeholder(header)
    return root


def attachments_of(signed: etree._Element) -> list[Attachment]:
    """Decode the attachments of a verified package (for the CLI's fetch)."""
    found = []
    for node in signed.iterfind("edXML:edXMLBody/edXML:AttachmentEncoded/edXML:Attachment", NSMAP):
        found.append(
            Attachment(
                name=_text(node, "edXML:AttachmentName") or "attachment",
                content_type=_text(node, "edXML:ContentType") or "application/octet-stream",
                data=base64.b64decode(_text(node, "edXML:ContentTransferEncoded") or ""),
            )
        )
    return found
