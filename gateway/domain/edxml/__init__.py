"""edXML packages (QCVN 102:2016) as the national axis carries them: names, schema, reading, building.

* ``names``: namespaces and the two shapes (rooted at ``edXML``, as the SDKs write them, or at
  ``edXMLEnvelope``), where the signature goes, the SDKs' legacy signature;
* ``schema``: ``validate_package`` (XSD, then the rules it cannot say) and ``validate_transfer``;
* ``reading``: the facts the gateway acts on, each exactly once, from a verified package;
* ``dates``, ``attachments``: dates in the forms senders use; attachment names and the manifest;
* ``spans``: where an attachment's base64 text lies in the raw package, decoded piece by piece;
* ``building``: packages and statuses in the SDKs' shape.

Fields are only ever acted on as read from what a signature verifier returned as signed (see
``gateway.crypto.xmldsig``), never from the raw tree; the raw tree is read only to refuse early.
"""

from __future__ import annotations

from gateway.domain.edxml.attachments import (
    Attachment,
    AttachmentFacts,
    attachment_by_content_id,
    attachment_facts,
    attachments_of,
    check_attachment_name,
)
from gateway.domain.edxml.building import (
    NewEdoc,
    Organ,
    StaffInfo,
    build_edoc,
    build_status,
    envelope_rooted,
)
from gateway.domain.edxml.dates import EdxmlMoment, edxml_date, edxml_timestamp, read_moment
from gateway.domain.edxml.names import (
    DS,
    GW,
    LEGACY_SIGNATURE_ONLY,
    NS,
    NSMAP,
    envelope_of,
    header_of,
    legacy_signature_only,
    q,
    signature_location,
)
from gateway.domain.edxml.reading import (
    Business,
    BusinessDocType,
    DocumentRef,
    Edoc,
    Receiver,
    Replacement,
    Status,
    read_package,
)
from gateway.domain.edxml.schema import validate_package, validate_transfer

__all__ = [
    "DS",
    "GW",
    "LEGACY_SIGNATURE_ONLY",
    "NS",
    "NSMAP",
    "Attachment",
    "AttachmentFacts",
    "Business",
    "BusinessDocType",
    "DocumentRef",
    "Edoc",
    "EdxmlMoment",
    "NewEdoc",
    "Organ",
    "Receiver",
    "Replacement",
    "StaffInfo",
    "Status",
    "attachment_by_content_id",
    "attachment_facts",
    "attachments_of",
    "build_edoc",
    "build_status",
    "check_attachment_name",
    "edxml_date",
    "edxml_timestamp",
    "envelope_of",
    "envelope_rooted",
    "header_of",
    "legacy_signature_only",
    "q",
    "read_moment",
    "read_package",
    "signature_location",
    "validate_package",
    "validate_transfer",
]
