"""Attachments as the SDKs send them: names that are plain file names, and a manifest that names
exactly the attachments the package carries.

The manifest (``edXMLBody/edXMLManifest/Reference``) and the attachments (``AttachmentEncoded/
Attachment``) are matched by ContentId, with or without the ``cid:`` prefix (some builders drop
it). Manifest and attachment may disagree on ContentType; the attachment's wins. Attachment bytes
are never looked into: the SDK zips every attachment, and a zip is carried byte for byte.

Messages name an attachment by its position, never by its name: a classified document's
attachment names can say what it is about, and messages reach logs.
"""

from __future__ import annotations

import base64
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from lxml import etree

from gateway.domain.edxml.names import attachments_parent, envelope_of, q, value_of
from gateway.errors import AttachmentMismatch, InvalidAttachmentName

MAX_NAME_BYTES = 255  # what common file systems allow for one file name
# Bidirectional overrides and isolates make "report\u202efdp.exe" display as "reportexe.pdf".
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_PLAIN_ID = re.compile(r"[A-Za-z0-9._:@\-]{1,64}")


@dataclass(frozen=True)
class Attachment:
    """One attachment: its file name, MIME type and exact bytes (and, once read from a package,
    the ContentId it is named by there, without any ``cid:`` prefix)."""

    name: str
    content_type: str
    data: bytes
    content_id: str = ""


@dataclass(frozen=True)
class _Entry:
    position: int
    content_id: str  # as written
    name: str | None
    content_type: str | None
    node: etree._Element


def content_key(content_id: str) -> str:
    """The ContentId an entry is matched by: ``cid:1`` and ``1`` are the same attachment."""
    value = content_id.strip()
    if value[:4].lower() == "cid:":
        value = value[4:].strip()
    return value


def check_attachment_name(name: str, where: str) -> None:
    """Refuse a name that is not a plain file name: one that could reach outside the folder a
    recipient saves it in, or hide characters from the person reading it."""
    problem = None
    if not name.strip():
        problem = "is empty"
    elif "/" in name or "\\" in name:
        problem = "holds a path separator (/ or \\)"
    elif name.strip() in (".", ".."):
        problem = "is a path part (. or ..), not a file name"
    elif any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in _BIDI_CONTROLS for ch in name):
        problem = "holds a NUL or another control character"
    elif len(name.encode("utf-8")) > MAX_NAME_BYTES:
        problem = f"is {len(name.encode('utf-8'))} bytes long; at most {MAX_NAME_BYTES} are allowed"
    if problem is not None:
        raise InvalidAttachmentName(f"the AttachmentName of {where} {problem}; it must be a plain file name")


def _text(node: etree._Element, tag: str) -> str | None:
    child = node.find(q(tag))
    return value_of(child) if child is not None else None


def _entries(nodes: Iterator[etree._Element]) -> list[_Entry]:
    return [
        _Entry(i, _text(n, "ContentId") or "", _text(n, "AttachmentName"), _text(n, "ContentType"), n)
        for i, n in enumerate(nodes, start=1)
    ]


def _references(root: etree._Element) -> list[_Entry]:
    manifest = envelope_of(root).find(f"{q('edXMLBody')}/{q('edXMLManifest')}")
    return _entries(manifest.iterfind(q("Reference"))) if manifest is not None else []


def _attachments(root: etree._Element) -> list[_Entry]:
    parent = attachments_parent(root)
    return _entries(parent.iterfind(q("Attachment"))) if parent is not None else []


def _shown_id(entry: _Entry) -> str:
    # A content id is an identifier, but it comes from the client: echoed only when plain.
    cid = entry.content_id.strip()
    return f" (ContentId {cid})" if _PLAIN_ID.fullmatch(cid) else ""


def _index(entries: list[_Entry], what: str) -> dict[str, _Entry]:
    index: dict[str, _Entry] = {}
    for entry in entries:
        key = content_key(entry.content_id)
        if not key:
            raise AttachmentMismatch(f"{what} {entry.position} has an empty ContentId")
        if key in index:
            raise AttachmentMismatch(
                f"{what}s {index[key].position} and {entry.position} share one ContentId{_shown_id(entry)}"
            )
        index[key] = entry
    return index


def check_attachments(root: etree._Element) -> None:
    """Names are plain file names, and manifest and attachments name each other one to one."""
    references, attachments = _references(root), _attachments(root)
    for ref in references:
        if ref.name is not None:
            check_attachment_name(ref.name, f"manifest Reference {ref.position}")
    for att in attachments:
        if att.name is not None:
            check_attachment_name(att.name, f"Attachment {att.position}")
    by_reference = _index(references, "manifest Reference")
    by_attachment = _index(attachments, "Attachment")
    for key, ref in by_reference.items():
        if key not in by_attachment:
            raise AttachmentMismatch(
                f"manifest Reference {ref.position}{_shown_id(ref)} names an attachment the package "
                "does not carry"
            )
    for key, att in by_attachment.items():
        if key not in by_reference:
            raise AttachmentMismatch(
                f"Attachment {att.position}{_shown_id(att)} is not named by any manifest Reference"
            )


def attachments_of(signed: etree._Element) -> list[Attachment]:
    """Decode the attachments of a verified package (for the CLI's fetch): the attachment's own
    name and ContentType first, the manifest's where the attachment has none."""
    by_reference = {content_key(r.content_id): r for r in _references(signed)}
    found = []
    for att in _attachments(signed):
        ref = by_reference.get(content_key(att.content_id))
        name = att.name or (ref.name if ref else None) or f"attachment-{att.position}"
        content_type = att.content_type or (ref.content_type if ref else None) or "application/octet-stream"
        encoded = _text(att.node, "ContentTransferEncoded") or ""
        found.append(
            Attachment(name, content_type.strip(), base64.b64decode(encoded), content_key(att.content_id))
        )
    return found


def attachment_by_content_id(signed: etree._Element, content_id: str) -> Attachment | None:
    """The one attachment of a verified package named ``content_id`` (``cid:`` or not), decoded;
    None when the package has none by that id. Decodes that attachment only."""
    wanted = content_key(content_id)
    by_reference = {content_key(r.content_id): r for r in _references(signed)}
    for att in _attachments(signed):
        if content_key(att.content_id) != wanted:
            continue
        ref = by_reference.get(wanted)
        name = att.name or (ref.name if ref else None) or f"attachment-{att.position}"
        content_type = att.content_type or (ref.content_type if ref else None) or "application/octet-stream"
        encoded = _text(att.node, "ContentTransferEncoded") or ""
        return Attachment(name, content_type.strip(), base64.b64decode(encoded), wanted)
    return None
