"""What an agency reads: its inbox, a delivered document (with the 01 receipt that creates),
the receipts of what it sent, and a document's trace.

Access rule, everywhere: the sender sees its document's receipts and trace;
a recipient sees the document and its own part of them; nobody else sees
that the document exists (404, not 403, so ids cannot be probed).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from cryptography import x509
from lxml import etree

from gateway.adapters.network import NetworkAdapter
from gateway.adapters.ports import Trust
from gateway.crypto.pki import CertIdentity
from gateway.crypto.xmldsig import verify_enveloped
from gateway.domain.agencies import Registry
from gateway.domain.clock import Clock
from gateway.domain.edxml import (
    Attachment,
    AttachmentFacts,
    BusinessDocType,
    Edoc,
    Organ,
    Status,
    attachment_by_content_id,
    build_status,
    read_package,
    signature_location,
)
from gateway.domain.edxml.attachments import content_key
from gateway.domain.edxml.spans import Base64Pieces
from gateway.domain.vocabulary import Classification, DeliveryState, Network, StatusCode
from gateway.domain.xmlsafe import parse_xml
from gateway.errors import AttachmentEncrypted, ClientError, Forbidden, GatewayError, NotFound, StoreError
from gateway.exchange.intake import status_document
from gateway.exchange.ports import (
    DeliveryRecord,
    DocumentRecord,
    EventRecord,
    InboxItem,
    MailboxStore,
    NewDocument,
    NewEvent,
    StoredPackage,
)
from gateway.exchange.recalls import RecallState, recall_state

STATUS_MEANING = {
    "01": "Đã đến",
    "02": "Từ chối tiếp nhận",
    "03": "Đã tiếp nhận",
    "04": "Phân công",
    "05": "Đang xử lý",
    "06": "Hoàn thành",
    "13": "Yêu cầu lấy lại",
    "15": "Đồng ý lấy lại / cập nhật",
    "16": "Từ chối lấy lại / cập nhật",
}


class Mailbox:
    def __init__(
        self,
        registry: Registry,
        store: MailboxStore,
        adapters: Mapping[Network, NetworkAdapter],
        trust: Trust,
        clock: Clock,
        *,
        on_accepted: Callable[[], None] = lambda: None,
    ) -> None:
        self._registry = registry
        self._store = store
        self._adapters = adapters
        self._trust = trust
        self._clock = clock
        self._on_accepted = on_accepted

    async def inbox(self, agency: str, *, include_fetched: bool = False, limit: int = 500) -> list[InboxItem]:
        """Deliveries waiting for ``agency``; one it agreed to give back (a recall), or one a
        replacement supersedes, says so."""
        items = await self._store.inbox(agency, include_fetched=include_fetched, limit=limit)
        edocs = [i.document.id for i in items if i.document.kind == "edoc"]
        asked = await self._store.recall_statuses(edocs) if edocs else {}
        superseded = await self._store.superseded_by(edocs) if edocs else {}

        def recalled(item: InboxItem) -> bool:
            statuses = asked.get(item.document.id, [])
            return recall_state(statuses, sender=item.document.sender, recipient=agency) is RecallState.AGREED

        return [replace(i, recalled=recalled(i), superseded_by=superseded.get(i.document.id)) for i in items]

    async def superseded_by(self, agency: str, doc_id: str) -> str | None:
        """The replacement that supersedes document ``doc_id`` (as ``agency`` may see it), if any."""
        await self._visible(agency, doc_id)
        return (await self._store.superseded_by([doc_id])).get(doc_id)

    async def _visible(self, agency: str, doc_id: str) -> tuple[DocumentRecord, list[DeliveryRecord]]:
        doc = await self._store.document(doc_id)
        deliveries = await self._store.deliveries(doc_id) if doc is not None else []
        if doc is None or (agency != doc.sender and all(d.recipient != agency for d in deliveries)):
            raise NotFound(f"no document with id {doc_id} for agency {agency}")
        return doc, deliveries

    async def fetch(self, agency: str, doc_id: str) -> tuple[bytes, bytes]:
        """:meth:`delivery` with the package read whole: for small packages, tools and tests."""
        sealed, package = await self.delivery(agency, doc_id)
        return sealed, b"".join([piece async for piece in package.pieces()])

    async def delivery(self, agency: str, doc_id: str) -> tuple[bytes, StoredPackage]:
        """The sealed transfer header as delivered to ``agency`` and the stored package it names,
        to be streamed (read in parts as it is sent); the first fetch issues the 01 receipt (over
        the header, which names the package's digest)."""
        doc, deliveries = await self._visible(agency, doc_id)
        mine = next((d for d in deliveries if d.recipient == agency), None)
        if mine is None:
            raise Forbidden(f"agency {agency} sent document {doc_id} but is not one of its recipients")
        if mine.state in (DeliveryState.PENDING, DeliveryState.QUARANTINED, DeliveryState.FAILED):
            raise NotFound(
                f"document {doc_id} is not in the inbox of {agency} (delivery state: {mine.state})"
            )
        sealed = await self._store.sealed_for(doc_id, mine.network)
        if sealed is None:
            raise NotFound(f"document {doc_id} has no sealed copy for the {mine.network} network")
        store = self._store
        package = StoredPackage(doc.size, lambda: store.package_chunks(doc_id))
        now = self._clock.now()
        receipt = None
        # A classified document's 01 must come from the recipient's own system, after it has
        # decrypted and verified it (gateway fetch does that); the gateway cannot vouch for it.
        unclassified = doc.classification is Classification.NONE
        if doc.kind == "edoc" and mine.state is DeliveryState.DELIVERED and unclassified:
            receipt = self._arrival_receipt(doc, mine, sealed)
        # The fetch, its 01 receipt and its `fetched` record are one transaction: a crash between
        # them must not leave a fetch the tamper-evident log does not show.
        fetched = _fetched_event(doc_id, mine, now, receipt is not None)
        first = await self._store.mark_fetched(doc_id, agency, now=now, receipt=receipt, events=[fetched])
        if first and receipt is not None:
            self._on_accepted()
        return sealed, package

    async def attachment(self, agency: str, doc_id: str, content_id: str) -> ServedAttachment:
        """One attachment of a document delivered to ``agency``, decoded from the stored package.

        Where intake recorded the span of its base64 text, that span alone is read and decoded
        piece by piece, once to check it against the digest recorded then and again as it is
        sent (memory: a piece, whatever the size); otherwise (documents stored before, taken over
        from a peer, spans that did not verify) the whole package is checked against its digest
        and parsed off the event loop. A classified document's attachments are ciphertext here:
        ``AttachmentEncrypted``. Reading one is recorded in the trace; it is not a fetch (no 01)."""
        doc, deliveries = await self._visible(agency, doc_id)
        mine = next((d for d in deliveries if d.recipient == agency), None)
        if mine is None:
            raise Forbidden(f"agency {agency} sent document {doc_id} but is not one of its recipients")
        if mine.state not in (DeliveryState.DELIVERED, DeliveryState.FETCHED):
            raise NotFound(
                f"document {doc_id} is not in the inbox of {agency} (delivery state: {mine.state})"
            )
        if doc.kind != "edoc":
            raise NotFound(f"document {doc_id} is a status; it has no attachments")
        if doc.classification is not Classification.NONE:
            raise AttachmentEncrypted(
                f"document {doc_id} is classified ('{doc.classification.slug}'): the gateway holds only its "
                "ciphertext; fetch the document and decrypt it (gateway fetch --attachment does)"
            )
        recorded = await self._store.attachments(doc_id)
        wanted = content_key(content_id)
        facts = next((a for a in recorded if a.content_id == wanted), None)
        if recorded and facts is None:  # what was recorded is every attachment the package has
            raise NotFound(f"document {doc_id} has no attachment with ContentId {_shown_cid(content_id)}")
        if facts is not None and facts.span is not None:
            async for _ in self._span_decoded(doc_id, facts):
                pass  # the first pass only hashes: nothing is sent before the digest is known good
            served = ServedAttachment(
                facts.content_id, facts.name, facts.content_type, facts.size, facts.sha256,
                self._span_decoded(doc_id, facts),
            )  # fmt: skip
        else:
            served = await self._parsed_attachment(doc, content_id)
        event = NewEvent(
            "attachment_fetched", self._clock.now(), doc_id, agency, mine.network.value,
            {"content_id": served.content_id, "size": served.size},
        )  # fmt: skip
        await self._store.add_events([event])
        return served

    async def _span_decoded(self, doc_id: str, facts: AttachmentFacts) -> AsyncIterator[bytes]:
        """The decoded bytes of the attachment's recorded span, read a piece at a time; StoreError
        once they turn out not to be the bytes recorded at acceptance (its digest and size)."""
        assert facts.span is not None
        offset, length = facts.span
        decoder, digest, size = Base64Pieces(), hashlib.sha256(), 0
        try:
            async for piece in self._store.package_chunks(doc_id, offset, offset + length):
                out = decoder.feed(piece)
                digest.update(out)
                size += len(out)
                if out:
                    yield out
            decoder.finish()
        except binascii.Error:
            raise StoreError(_CHANGED) from None
        if (size, digest.hexdigest()) != (facts.size, facts.sha256):
            raise StoreError(_CHANGED)

    async def _parsed_attachment(self, doc: DocumentRecord, content_id: str) -> ServedAttachment:
        package = await self._store.package(doc.id)
        if package is None:
            raise NotFound(f"document {doc.id} has no stored package")
        found = await asyncio.to_thread(_attachment_in, package, doc.package_sha256, content_id)
        del package
        if found is None:
            raise NotFound(f"document {doc.id} has no attachment with ContentId {_shown_cid(content_id)}")
        sha256 = hashlib.sha256(found.data).hexdigest()
        return ServedAttachment(
            found.content_id, found.name, found.content_type, len(found.data), sha256, _once(found.data)
        )

    def _arrival_receipt(self, doc: DocumentRecord, delivery: DeliveryRecord, sealed: bytes) -> NewDocument:
        """A 01 status, signed on the recipient's side over the digest of exactly what was delivered."""
        now = self._clock.now()
        adapter = self._adapters[delivery.network]
        digest = base64.b64encode(hashlib.sha256(sealed).digest()).decode("ascii")
        root = build_status(
            sender=Organ(delivery.recipient),
            about_organ=doc.sender,
            about_document_id=doc.document_id or doc.id,
            code=StatusCode.ARRIVED,
            now=now,
            delivered_digest=digest,
        )
        package = adapter.sign_package(root)
        # The digest a recipient checks is over the canonical signed bytes, as for any status an
        # agency sends (Verified.signed_digest), not over the serialised package.
        parsed = parse_xml(package)
        signed, _ = verify_enveloped(parsed, location=signature_location(parsed), check_certificate=_any)
        return status_document(
            doc,
            sender=delivery.recipient,
            sender_network=delivery.network,
            code=StatusCode.ARRIVED.value,
            package=package,
            digest=signed.signed_digest,
            signer=f"adapter:{adapter.name}",
            resolutions=[self._registry.resolve(doc.sender)],
            now=now,
        )

    async def report_failure(self, agency: str, doc_id: str, *, stage: str, reason: str) -> None:
        """Record that a recipient could not open what it fetched (bad key, altered ciphertext...)."""
        _, deliveries = await self._visible(agency, doc_id)
        mine = next((d for d in deliveries if d.recipient == agency), None)
        if mine is None:
            raise Forbidden(f"agency {agency} is not a recipient of document {doc_id}")
        printable = "".join(ch for ch in reason if ch.isprintable())[:300]
        detail = {"stage": "".join(ch for ch in stage if ch.isalnum() or ch == "_")[:32], "reason": printable}
        event = NewEvent("recipient_failed", self._clock.now(), doc_id, agency, mine.network.value, detail)
        await self._store.add_events([event])

    async def receipts(self, agency: str, doc_id: str) -> dict[str, Any]:
        """Per recipient: delivery state, forwarding, and each status with its signer and verdict."""
        doc, deliveries = await self._visible(agency, doc_id)
        statuses = await self._store.statuses_for(doc_id)
        all_statuses = [s for s, _ in statuses]
        rows = []
        for d in deliveries:
            if agency not in (doc.sender, d.recipient):
                continue
            mine = [(s, pkg) for s, pkg in statuses if s.sender == d.recipient]
            rows.append(
                {
                    "recipient": d.recipient,
                    "addressed": d.addressed,
                    "forwarded_via": list(d.chain) if d.chain else None,
                    "network": d.network.value,
                    "state": d.state.value,
                    "delivered_at": _iso(d.delivered_at),
                    "fetched_at": _iso(d.fetched_at),
                    "receipts": [self._receipt_view(s, pkg, d.network) for s, pkg in mine],
                    "confirmed": any(s.status_code == "01" for s, _ in mine),
                    "recall": recall_state(all_statuses, sender=doc.sender, recipient=d.recipient),
                    "change": change_answer(doc, [s for s, _ in mine]),
                }
            )
        recalls = [
            self._receipt_view(s, pkg, s.sender_network) for s, pkg in statuses if s.sender == doc.sender
        ]
        return {
            "id": doc.id,
            "document_id": doc.document_id,
            "from": doc.sender,
            **changes(doc),
            "superseded_by": (await self._store.superseded_by([doc.id])).get(doc.id),
            "recipients": rows,
            "sender_statuses": recalls,
            "unconfirmed": [r["recipient"] for r in rows if not r["confirmed"]],
        }

    def _receipt_view(self, status: DocumentRecord, package: bytes, network: Network) -> dict[str, Any]:
        ok, signer, reason = self._verify_status(status, package, network)
        view: dict[str, Any] = {
            "id": status.id,
            "code": status.status_code,
            "meaning": STATUS_MEANING.get(status.status_code or "", ""),
            "at": _iso(status.accepted_at),
            "signed_by": signer,
            "signature_valid": ok,
        }
        if reason:
            view["problem"] = reason
        return view

    def _verify_status(
        self, status: DocumentRecord, package: bytes, network: Network
    ) -> tuple[bool, str, str]:
        """Re-verify a stored status package; its signer is the agency or its network's adapter.

        Certificates are judged as of acceptance: a key rotated or revoked since does not
        retroactively unsign what it signed while valid."""
        now = status.accepted_at
        by_adapter = status.signer.startswith("adapter:")

        def check(cert: x509.Certificate) -> CertIdentity:
            if by_adapter:
                return self._trust.adapter(cert, network=network, at=now)
            return self._trust.signer(cert, at=now)

        try:
            root = parse_xml(package)
            verified, who = verify_enveloped(root, location=signature_location(root), check_certificate=check)
            read = read_package(verified.signed)
            # A 13 may have come as a recall package (BussinessDocType 1), an edoc in form.
            recall_package = isinstance(read, Edoc) and read.business.doc_type is BusinessDocType.RECALL
            if not (isinstance(read, Status) or recall_package) or (
                not by_adapter and who.code != read.sender
            ):
                return False, who.code, "signer is not the agency the status is from"
            return True, who.code, ""
        except (ClientError, GatewayError) as exc:
            return False, status.signer.split(":", 1)[-1], exc.message

    async def trace(self, agency: str | None, doc_id: str) -> list[EventRecord]:
        """Events of a document in order; ``agency=None`` is the operator (local CLI), who sees all."""
        if agency is not None:
            doc, _ = await self._visible(agency, doc_id)
            events = await self._store.events(doc_id)
            if agency != doc.sender:
                events = [e for e in events if e.recipient in (None, agency)]
            return events
        return await self._store.events(doc_id)


_CHANGED = "the stored package changed since it was accepted (its SHA-256 differs)"


@dataclass(frozen=True)
class ServedAttachment:
    """One attachment as it is sent: what it is served with, the size and SHA-256 (hex) of its
    decoded bytes, and those bytes in pieces (read once; a piece that turns out not to be what
    was accepted ends them with StoreError)."""

    content_id: str
    name: str
    content_type: str
    size: int
    sha256: str
    pieces: AsyncIterator[bytes]


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _attachment_in(package: bytes, sha256: str | None, content_id: str) -> Attachment | None:
    """Read one attachment from a stored, unclassified package: only bytes whose digest is the one
    recorded when the package was accepted (its sender's signature verified then) are read."""
    if sha256 is not None and hashlib.sha256(package).hexdigest() != sha256:
        raise StoreError(_CHANGED)
    root = parse_xml(package, max_bytes=max(len(package), 1))
    etree.strip_elements(root, etree.Comment, with_tail=False)  # as the verifier read it
    return attachment_by_content_id(root, content_id)


def _shown_cid(content_id: str) -> str:
    shown = "".join(ch for ch in content_id if ch.isprintable())[:64]
    return repr(shown)


def _any(cert: x509.Certificate) -> x509.Certificate:
    return cert  # our own adapter's signature, just made: only its canonical bytes are wanted


def _fetched_event(doc_id: str, delivery: DeliveryRecord, now: datetime, receipt: bool) -> NewEvent:
    return NewEvent(
        "fetched", now, doc_id, delivery.recipient, delivery.network.value, {"receipt_issued": receipt}
    )


def change_answer(doc: DocumentRecord, answers: list[DocumentRecord]) -> str | None:
    """For an update or replacement, its recipient's word on it: the last 15 (``agreed``) or 16
    (``refused``) it sent, else ``asked``; None for any other document."""
    if doc.kind != "edoc" or doc.response_for is None or doc.business_doc_type not in (2, 3):
        return None
    word = {StatusCode.RECALL_AGREED.value: "agreed", StatusCode.RECALL_REFUSED.value: "refused"}
    said = [word[s.status_code] for s in answers if s.status_code in word]
    return said[-1] if said else "asked"


def changes(doc: DocumentRecord) -> dict[str, str | None]:
    """Which earlier document ``doc`` updates (BussinessDocType 2) or replaces (3), by gateway id."""
    kind = doc.business_doc_type if doc.response_for is not None and doc.kind == "edoc" else None
    return {
        "updates": doc.response_for if kind == 2 else None,
        "replaces": doc.response_for if kind == 3 else None,
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None
