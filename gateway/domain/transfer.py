"""The sealed transfer: how a package travels between network adapters.

The sender's package is carried unchanged (so its signature verifies end to
end); the gateway's routing facts and one hop per adapter travel beside it in
a ``gw:Transfer`` that each adapter seals with an enveloped signature::

    gw:Transfer
      ds:Signature          the current adapter's seal (first child)
      gw:Routing            id, kind, from, networks, recipients, level, priority, digest
      gw:Hops/gw:Hop*       network, adapter, action (sealed|bridged), time, previous seal
      gw:Package/gw:Encoded the package's exact bytes, base64: the sender's signed package (rooted
                            at edXML or edXMLEnvelope), or its xenc:EncryptedData when classified
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from lxml import etree

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


@dataclass(frozen=True)
class Transfer:
    routing: Routing
    hops: tuple[Hop, ...]
    package: bytes  # exactly as the sender signed it (or as it was encrypted)


def package_digest_of(signed_data: bytes) -> str:
    """Base64 SHA-256 of what the sender signed (as its verifier canonicalised it)."""
    return base64.b64encode(hashlib.sha256(signed_data).digest()).decode("ascii")


def build(routing: Routing, package: bytes, hops: tuple[Hop, ...]) -> etree._Element:
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
    # Bytes, not a subtree: appending another document's elements lets lxml re-map their
    # namespace prefixes, which changes their canonical form and breaks the sender's signature.
    encoded = etree.SubElement(etree.SubElement(root, g("Package")), g("Encoded"))
    encoded.text = base64.b64encode(package).decode("ascii")
    return root


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _text(node: etree._Element, path: str) -> str:
    found = node.find(path, _NS)
    if found is None or found.text is None:
        raise DeliveryError(f"sealed transfer lacks {path}")
    return found.text


def read(signed: etree._Element) -> Transfer:
    """Read a transfer from the tree its seal's verifier returned."""
    routing_node = signed.find("gw:Routing", _NS)
    encoded = signed.find("gw:Package/gw:Encoded", _NS)
    if routing_node is None or encoded is None or not encoded.text:
        raise DeliveryError("sealed transfer lacks its routing or its package")
    try:
        package = base64.b64decode(encoded.text, validate=True)
    except ValueError as exc:
        raise DeliveryError("the package in the sealed transfer is not valid base64") from exc

    def optional(tag: str) -> str | None:
        found = routing_node.find(f"gw:{tag}", _NS)
        return found.text if found is not None else None

    due = optional("DueAt")
    routing = Routing(
        transfer_id=_text(routing_node, "gw:TransferId"),
        kind=_text(routing_node, "gw:Kind"),
        sender=_text(routing_node, "gw:From"),
        source=Network(_text(routing_node, "gw:SourceNetwork")),
        target=Network(_text(routing_node, "gw:TargetNetwork")),
        recipients=tuple(
            RecipientRef(code=(r.text or ""), addressed=r.get("addressedTo") or (r.text or ""))
            for r in routing_node.iterfind("gw:Recipient", _NS)
        ),
        classification=Classification.from_slug(_text(routing_node, "gw:Classification")),
        priority=Priority(int(_text(routing_node, "gw:Priority"))),
        package_digest=_text(routing_node, "gw:PackageDigest"),
        response_for=optional("ResponseFor"),
        document_id=optional("DocumentId"),
        status_code=optional("StatusCode"),
        due_at=datetime.fromisoformat(due.replace("Z", "+00:00")) if due else None,
    )
    hops = tuple(
        Hop(
            network=Network(h.get("network", "")),
            adapter=h.get("adapter", ""),
            action=h.get("action", ""),
            at=datetime.fromisoformat(h.get("at", "").replace("Z", "+00:00")),
            previous_seal=h.get("previousSeal"),
        )
        for h in signed.iterfind("gw:Hops/gw:Hop", _NS)
    )
    return Transfer(routing=routing, hops=hops, package=package)


def seal_digest(sealed: etree._Element) -> str:
    """Digest of a seal's SignatureValue, chained into the next hop so a hop cannot be dropped unseen."""
    value = sealed.find("ds:Signature/ds:SignatureValue", _NS)
    raw = (value.text or "").encode() if value is not None else b""
    return base64.b64encode(hashlib.sha256(raw).digest()).decode("ascii")
