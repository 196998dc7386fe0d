"""The sealed transfer: how a package travels between network adapters, by digest.

The sender's package is stored once and carried unchanged (so its signature verifies end to end);
what each adapter seals is a small header, a ``gw:Transfer``, that names the package by its
SHA-256 and size, with the gateway's routing facts and one hop per adapter::

    gw:Transfer
      ds:Signature          the current adapter's seal (first child)
      gw:Routing            id, kind, from, networks, recipients, level, priority, signed digest
      gw:Hops/gw:Hop*       network, adapter, action (sealed|bridged), time, previous seal
      gw:Package            Digest (SHA-256 of the carried bytes), Size, Form (signed|encrypted)

The carried bytes are the sender's signed package (rooted at edXML or edXMLEnvelope), or its
xenc:EncryptedData when classified. Sealing and verifying cost the same for 5 KB and 50 MB
(issue 13: before, each hop base64-encoded and canonicalised the whole package again), and every
receiving side checks the bytes against the sealed digest (:func:`check_carried`) before it
acts on them. Where the two travel together (a delivery fetched by its recipient, a transfer
handed to a peer node) they are framed as one ``multipart/mixed`` body (:func:`frame`).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from lxml import etree

from gateway.domain.body import Body, body_sha256, body_size
from gateway.domain.edxml import DS, GW, NS
from gateway.domain.vocabulary import Classification, Network, Priority
from gateway.errors import DeliveryError

_NS = {"gw": GW, "ds": DS, "edXML": NS}
SHA256_URI = "http://www.w3.org/2001/04/xmlenc#sha256"


def g(tag: str) -> str:
    return f"{{{GW}}}{tag}"


@dataclass(frozen=True)
class RecipientRef:
    code: str
    addressed: str  # the code the sender wrote; differs when forwarded to a successor


@dataclass(frozen=True)
class Hop:
    network: Network
    adapter: str
    action: str  # sealed | bridged
    at: datetime
    previous_seal: str | None


@dataclass(frozen=True)
class Routing:
    """What the gateway routes on; never a subject or content."""

    transfer_id: str
    kind: str  # edoc | status
    sender: str
    source: Network
    target: Network
    recipients: tuple[RecipientRef, ...]
    classification: Classification
    priority: Priority
    package_digest: str  # base64 SHA-256 of what the sender signed
    response_for: str | None = None
    document_id: str | None = None  # edXML DocumentId of an edoc (an id, never content)
    status_code: str | None = None
    due_at: datetime | None = None
    # An edoc's BussinessDocType when it updates (2) or replaces (3) ``response_for``: the node
    # across the bridge links it as this one did, even when it holds only ciphertext.
    business_doc_type: int | None = None


@dataclass(frozen=True)
class PackageRef:
    """The carried bytes as a seal names them."""

    digest: str  # base64 SHA-256 of the exact bytes
    size: int
    encrypted: bool  # xenc:EncryptedData of a classified package, else the sender's signed package

    @classmethod
    def of(cls, data: bytes, *, encrypted: bool) -> PackageRef:
        return cls(base64.b64encode(hashlib.sha256(data).digest()).decode("ascii"), len(data), encrypted)


@dataclass(frozen=True)
class Transfer:
    routing: Routing
    hops: tuple[Hop, ...]
    package: PackageRef


def check_carried(transfer: Transfer, data: Body) -> None:
    """Refuse bytes that are not the package the seal names (a flipped byte, a swapped package);
    a spooled body by the digest counted as it arrived."""
    check_carried_digest(transfer, body_size(data), body_sha256(data))


def check_carried_digest(transfer: Transfer, size: int, sha256: str) -> None:
    """:func:`check_carried` of bytes known by their size and SHA-256 (hex) only."""
    if size != transfer.package.size:
        raise DeliveryError(f"the carried package is {size} bytes; the seal names {transfer.package.size}")
    digest = base64.b64encode(bytes.fromhex(sha256)).decode("ascii")
    if digest != transfer.package.digest:
        raise DeliveryError("the carried package is not the one the seal names (its SHA-256 differs)")


def package_digest_of(digest: bytes) -> str:
    """Base64 of the SHA-256 of what the sender signed (``Verified.digest``), as routing carries it."""
    return base64.b64encode(digest).decode("ascii")


def build(routing: Routing, package: PackageRef, hops: tuple[Hop, ...]) -> etree._Element:
    """An unsealed transfer, with the seal placeholder as its first child."""
    root = etree.Element(g("Transfer"), nsmap={"gw": GW, "edXML": NS})
    etree.SubElement(root, f"{{{DS}}}Signature", {"Id": "placeholder"}, nsmap={"ds": DS})
    node = etree.SubElement(root, g("Routing"))
    for tag, text in (
        ("TransferId", routing.transfer_id),
        ("Kind", routing.kind),
        ("From", routing.sender),
        ("SourceNetwork", routing.source.value),
        ("TargetNetwork", routing.target.value),
    ):
        etree.SubElement(node, g(tag)).text = text
    for recipient in routing.recipients:
        ref = etree.SubElement(node, g("Recipient"))
        ref.text = recipient.code
        if recipient.addressed != recipient.code:
            ref.set("addressedTo", recipient.addressed)
    etree.SubElement(node, g("Classification")).text = routing.classification.slug
    etree.SubElement(node, g("Priority")).text = str(int(routing.priority))
    digest = etree.SubElement(node, g("PackageDigest"), Algorithm=SHA256_URI)
    digest.text = routing.package_digest
    if routing.response_for:
        etree.SubElement(node, g("ResponseFor")).text = routing.response_for
    if routing.document_id:
        etree.SubElement(node, g("DocumentId")).text = routing.document_id
    if routing.status_code:
        etree.SubElement(node, g("StatusCode")).text = routing.status_code
    if routing.due_at:
        etree.SubElement(node, g("DueAt")).text = _iso(routing.due_at)
    if routing.business_doc_type is not None:
        etree.SubElement(node, g("BusinessDocType")).text = str(routing.business_doc_type)
    hops_node = etree.SubElement(root, g("Hops"))
    for hop in hops:
        attrs = {
            "network": hop.network.value,
            "adapter": hop.adapter,
            "action": hop.action,
            "at": _iso(hop.at),
        }
        if hop.previous_seal:
            attrs["previousSeal"] = hop.previous_seal
        etree.SubElement(hops_node, g("Hop"), attrs)
    carried = etree.SubElement(root, g("Package"))
    etree.SubElement(carried, g("Digest"), Algorithm=SHA256_URI).text = package.digest
    etree.SubElement(carried, g("Size")).text = str(package.size)
    etree.SubElement(carried, g("Form")).text = "encrypted" if package.encrypted else "signed"
    return root


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _first_children(node: etree._Element) -> dict[str, etree._Element]:
    """``node``'s child elements by local name (gw namespace only), the first of each name: what
    ``find`` would give, in one pass (each ``find`` with a namespace map compiles its path again;
    twenty of them were most of reading a transfer)."""
    children: dict[str, etree._Element] = {}
    prefix = f"{{{GW}}}"
    for child in node.iterchildren(tag=etree.Element):
        tag = child.tag
        if isinstance(tag, str) and tag.startswith(prefix):
            children.setdefault(tag[len(prefix) :], child)
    return children


def _text(children: dict[str, etree._Element], name: str) -> str:
    found = children.get(name)
    if found is None or found.text is None:
        raise DeliveryError(f"sealed transfer lacks gw:{name}")
    return found.text


def read(signed: etree._Element) -> Transfer:
    """Read a transfer from the tree its seal's verifier returned."""
    top = _first_children(signed)
    routing_node, carried_node = top.get("Routing"), top.get("Package")
    if routing_node is None or carried_node is None:
        raise DeliveryError("sealed transfer lacks its routing or its package")
    carried = _first_children(carried_node)
    try:
        package = PackageRef(
            digest=_text(carried, "Digest"),
            size=int(_text(carried, "Size")),
            encrypted=_text(carried, "Form") == "encrypted",
        )
    except ValueError as exc:
        raise DeliveryError("the sealed transfer names its package with an unreadable size") from exc
    fields = _first_children(routing_node)

    def optional(tag: str) -> str | None:
        found = fields.get(tag)
        return found.text if found is not None else None

    due = optional("DueAt")
    business = optional("BusinessDocType")
    recipient_tag = f"{{{GW}}}Recipient"
    routing = Routing(
        transfer_id=_text(fields, "TransferId"),
        kind=_text(fields, "Kind"),
        sender=_text(fields, "From"),
        source=Network(_text(fields, "SourceNetwork")),
        target=Network(_text(fields, "TargetNetwork")),
        recipients=tuple(
            RecipientRef(code=(r.text or ""), addressed=r.get("addressedTo") or (r.text or ""))
            for r in routing_node.iterchildren(recipient_tag)
        ),
        classification=Classification.from_slug(_text(fields, "Classification")),
        priority=Priority(int(_text(fields, "Priority"))),
        package_digest=_text(fields, "PackageDigest"),
        response_for=optional("ResponseFor"),
        document_id=optional("DocumentId"),
        status_code=optional("StatusCode"),
        due_at=datetime.fromisoformat(due) if due else None,
        business_doc_type=int(business) if business is not None and business.isdigit() else None,
    )
    hops_node = top.get("Hops")
    hops = tuple(
        Hop(
            network=Network(h.get("network", "")),
            adapter=h.get("adapter", ""),
            action=h.get("action", ""),
            at=datetime.fromisoformat(h.get("at", "")),
            previous_seal=h.get("previousSeal"),
        )
        for h in (hops_node.iterchildren(f"{{{GW}}}Hop") if hops_node is not None else ())
    )
    return Transfer(routing=routing, hops=hops, package=package)


def seal_digest(sealed: etree._Element) -> str:
    """Digest of a seal's SignatureValue, chained into the next hop so a hop cannot be dropped unseen."""
    value = sealed.find("ds:Signature/ds:SignatureValue", _NS)
    raw = (value.text or "").encode() if value is not None else b""
    return base64.b64encode(hashlib.sha256(raw).digest()).decode("ascii")


# --- A sealed header and its package as one body ------------------------------------------------

TRANSFER_TYPE = "application/vnd.gateway.transfer+xml"
_PART = b"--%s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
_BOUNDARY = re.compile(rb"--(gw-[0-9a-f]{32})\r\n")
_PART_HEAD = re.compile(rb"Content-Type: ([!-~]+)\r\nContent-Length: ([0-9]{1,12})\r\n\r\n")


@dataclass(frozen=True)
class Framing:
    """A body :func:`frame` makes, without its package: what goes before the package's bytes and
    after them. Only the package's size is needed (each part's Content-Length), so the package
    can be streamed between the two from wherever it is stored."""

    content_type: str
    head: bytes  # the header part, then the package part's own header
    tail: bytes  # the closing boundary

    def length(self, package_size: int) -> int:
        return len(self.head) + package_size + len(self.tail)


def framing(sealed: bytes, package_size: int) -> Framing:
    """The sealed header and a package of ``package_size`` bytes as one ``multipart/mixed`` body,
    each part with its Content-Length so that a reader never scans the package for the boundary."""
    boundary = f"gw-{secrets.token_hex(16)}".encode("ascii")
    return Framing(
        f"multipart/mixed; boundary={boundary.decode()}",
        _PART % (boundary, TRANSFER_TYPE.encode(), len(sealed))
        + sealed
        + b"\r\n"
        + _PART % (boundary, b"application/xml", package_size),
        b"\r\n--%s--\r\n" % boundary,
    )


def frame(sealed: bytes, package: bytes) -> tuple[str, list[bytes]]:
    """:func:`framing` with the package in memory: the Content-Type and the body's pieces (the
    package is one of them, not copied)."""
    framed = framing(sealed, len(package))
    return framed.content_type, [framed.head, package, framed.tail]


def split_head(body: bytes, *, max_sealed: int) -> tuple[bytes, int, bytes, int] | None:
    """The start of a body :func:`frame` made, read before its package arrives: (sealed header,
    package size, the closing expected after the package, where the package starts in ``body``),
    or None while ``body`` is too short to tell. Raises ``DeliveryError`` for anything else, and
    for a header part over ``max_sealed`` bytes."""
    start = _BOUNDARY.match(body)
    if start is None:
        if len(body) >= 40 or not b"--gw-".startswith(body[:5]):
            raise DeliveryError(
                "not a gateway delivery: expected a multipart/mixed body of a sealed transfer"
            )
        return None
    boundary, at = start.group(1), start.end()
    head = _PART_HEAD.match(body, at)
    if head is None:
        if len(body) - at > 200:
            raise DeliveryError("part 1 of the delivery has no Content-Type and Content-Length")
        return None
    size = int(head.group(2))
    if size > max_sealed:
        raise DeliveryError(f"the delivery's sealed header is {size} bytes, more than {max_sealed}")
    end = head.end() + size
    closing = b"\r\n--" + boundary + b"\r\n"
    if len(body) < end + len(closing):
        return None
    if not body.startswith(closing, end):
        raise DeliveryError("part 1 of the delivery is not as long as it says")
    package_head = _PART_HEAD.match(body, end + len(closing))
    if package_head is None:
        if len(body) - (end + len(closing)) > 200:
            raise DeliveryError("part 2 of the delivery has no Content-Type and Content-Length")
        return None
    tail = b"\r\n--" + boundary + b"--\r\n"
    return body[head.end() : end], int(package_head.group(2)), tail, package_head.end()


def unframe(body: bytes) -> tuple[bytes, bytes]:
    """The (sealed header, package) of a body :func:`frame` made; raises ``DeliveryError`` for
    anything else. Reads lengths, never searches the package."""
    sealed, package = unframe_view(body)
    return sealed, bytes(package)


def unframe_view(body: bytes) -> tuple[bytes, memoryview]:
    """:func:`unframe`, the package a view into ``body`` rather than a copy of it (a 50 MB
    delivery is not held twice to be opened)."""
    start = _BOUNDARY.match(body)
    if start is None:
        raise DeliveryError("not a gateway delivery: expected a multipart/mixed body of a sealed transfer")
    boundary, at = start.group(1), start.end()
    parts = []
    for index in range(2):
        head = _PART_HEAD.match(body, at)
        if head is None:
            raise DeliveryError(f"part {index + 1} of the delivery has no Content-Type and Content-Length")
        size = int(head.group(2))
        end = head.end() + size
        closing = b"\r\n--" + boundary + (b"\r\n" if index == 0 else b"--\r\n")
        if not body.startswith(closing, end):
            raise DeliveryError(f"part {index + 1} of the delivery is not as long as it says")
        parts.append((head.end(), end))
        at = end + len(closing)
    if at != len(body):
        raise DeliveryError("the delivery has bytes after its last part")
    (sealed_at, sealed_end), (package_at, package_end) = parts
    return body[sealed_at:sealed_end], memoryview(body)[package_at:package_end]
