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

import binascii
import hashlib
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from lxml import etree

from gateway.domain.edxml.names import attachments_parent, envelope_of, q, value_of
from gateway.domain.edxml.spans import PIECE, decoded, encoded_spans, raw_pieces
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


def _described(signed: etree._Element) -> Iterator[tuple[_Entry, str, str]]:
    """Each attachment with the name and ContentType it is served with: the attachment's own
    first, the manifest's where the attachment has none."""
    by_reference = {content_key(r.content_id): r for r in _references(signed)}
    for att in _attachments(signed):
        ref = by_reference.get(content_key(att.content_id))
        name = att.name or (ref.name if ref else None) or f"attachment-{att.position}"
        content_type = att.content_type or (ref.content_type if ref else None) or "application/octet-stream"
        yield att, name, content_type.strip()


def _encoded(att: _Entry) -> str:
    return _text(att.node, "ContentTransferEncoded") or ""


def _decoded_text(text: str) -> bytes:
    # binascii reads an ASCII str in place; base64.b64decode would first copy a 49 MB text to bytes.
    return binascii.a2b_base64(text)


def attachments_of(signed: etree._Element) -> list[Attachment]:
    """Decode the attachments of a verified package (for the CLI's fetch)."""
    return [
        Attachment(name, content_type, _decoded_text(_encoded(att)), content_key(att.content_id))
        for att, name, content_type in _described(signed)
    ]


def attachment_by_content_id(signed: etree._Element, content_id: str) -> Attachment | None:
    """The one attachment of a verified package named ``content_id`` (``cid:`` or not), decoded;
    None when the package has none by that id. Decodes that attachment only."""
    wanted = content_key(content_id)
    for att, name, content_type in _described(signed):
        if content_key(att.content_id) == wanted:
            return Attachment(name, content_type, _decoded_text(_encoded(att)), wanted)
    return None


@dataclass(frozen=True)
class AttachmentFacts:
    """One attachment of an unclassified package as the store records it at acceptance: what it
    is served with, the size and SHA-256 (hex) of its decoded bytes, and the span (offset,
    length) of its base64 text in the raw package bytes, or None when no span could be trusted
    (then it is read from the parsed package)."""

    position: int
    content_id: str  # as ``content_key`` gives it: no ``cid:``
    name: str
    content_type: str
    size: int
    sha256: str
    span: tuple[int, int] | None


def attachment_facts(raw: bytes, signed: etree._Element) -> tuple[AttachmentFacts, ...]:
    """The facts of each attachment of ``signed``, the verified tree parsed from ``raw``; none at
    all if one attachment's text is not strict base64 once its white space is dropped (the
    schema lets no such text through; then every attachment is read from the parsed package).

    The digest is of the attachment as the signed tree holds it; the n-th ContentTransferEncoded
    text found in ``raw`` is its span only if decoding exactly that span gives the same digest.
    Linear in the package, and never more than a piece of decoded bytes at a time."""
    candidates = encoded_spans(raw)
    facts = []
    for index, (att, name, content_type) in enumerate(_described(signed)):
        digest = _digest_of_text(_encoded(att))
        if digest is None:
            return ()
        span = candidates[index] if index < len(candidates) else None
        if span is not None and _digest_of_span(raw, span) != digest:
            span = None  # a CDATA section, a character reference, a comment: served the slow way
        facts.append(
            AttachmentFacts(att.position, content_key(att.content_id), name, content_type, *digest, span)
        )
    return tuple(facts)


def _digest_of_text(text: str) -> tuple[int, str] | None:
    # In pieces, so that a 50 MB attachment is never decoded whole.
    def pieces() -> Iterator[bytes]:
        for start in range(0, len(text), PIECE):
            yield "".join(text[start : start + PIECE].split()).encode("ascii")

    try:
        return _size_and_sha256(decoded(pieces()))
    except (binascii.Error, UnicodeEncodeError):
        return None


def _digest_of_span(raw: bytes, span: tuple[int, int]) -> tuple[int, str] | None:
    try:
        return _size_and_sha256(decoded(raw_pieces(raw, *span)))
    except binascii.Error:
        return None


def _size_and_sha256(pieces: Iterable[bytes]) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    for piece in pieces:
        digest.update(piece)
        size += len(piece)
    return size, digest.hexdigest()
