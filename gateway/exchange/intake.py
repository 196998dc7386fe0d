"""Accepting packages: the checks every submission passes before it is stored and answered 202.

Order matters and is fixed: bounded hardened parse → schema → sender's
signature (certificate checked first) → read routing facts from what the
signature covers → bind to the authenticated agency → registry → store.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from lxml import etree

from gateway.adapters.ports import Trust
from gateway.crypto.pki import CertIdentity
from gateway.crypto.xmldsig import verify_enveloped
from gateway.crypto.xmlenc import EncryptionRecipient, encrypt_element
from gateway.domain.agencies import Registry, Resolution
from gateway.domain.clock import Clock
from gateway.domain.edxml import NS, Edoc, Status, read_package, validate_package
from gateway.domain.vocabulary import Classification, Network, StatusCode
from gateway.domain.xmlsafe import parse_xml
from gateway.errors import (
    BadRequest,
    ClassificationMismatch,
    ClearanceTooLow,
    Forbidden,
    NotFound,
    ReceiptMismatch,
    SenderMismatch,
    SignatureInvalid,
    SignatureRejected,
    SignerNotTrusted,
)
from gateway.exchange.deadlines import due_at
from gateway.exchange.ports import DocumentRecord, IntakeStore, NewDelivery, NewDocument, NewEvent, NewRoute

SENDER_SIGNATURE_AT = f"./{{{NS}}}edXMLHeader/"


def new_id() -> str:
    """A time-ordered 32-hex-digit id: sorts by acceptance, unguessable in its low 80 bits."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


@dataclass(frozen=True)
class Accepted:
    id: str
    created: bool
    recipients: tuple[NewDelivery, ...]
    networks: dict[str, str]  # recipient code → network


def plan_routes(resolutions: Iterable[Resolution]) -> tuple[NewRoute, ...]:
    """Group final recipients by network; two codes that lead to one successor deliver once."""
    by_network: dict[Network, dict[str, NewDelivery]] = {}
    for res in resolutions:
        bucket = by_network.setdefault(res.agency.network, {})
        if res.agency.code not in bucket:
            chain = res.chain if res.redirected else ()
            bucket[res.agency.code] = NewDelivery(res.agency.code, res.addressed, chain)
    return tuple(NewRoute(network, tuple(d.values())) for network, d in by_network.items())


def routed_events(doc_id: str, routes: Iterable[NewRoute], now: datetime) -> list[NewEvent]:
    """One ``routed`` record per network a document goes to, naming its recipients there."""
    return [
        NewEvent(
            "routed", now, doc_id, None, r.network.value, {"recipients": [d.recipient for d in r.deliveries]}
        )
        for r in routes
    ]


def redirect_events(
    doc_id: str, resolutions: Iterable[Resolution], now_events_at: NewEvent
) -> list[NewEvent]:
    return [
        NewEvent(
            "redirected",
            now_events_at.at,
            doc_id,
            res.agency.code,
            res.agency.network.value,
            {"addressed": res.addressed, "chain": list(res.chain), "reason": "addressed code is retired"},
        )
        for res in resolutions
        if res.redirected
    ]


class Intake:
    """Turns an authenticated agency's package into a stored document with its deliveries."""

    def __init__(
        self,
        registry: Registry,
        store: IntakeStore,
        trust: Trust,
        clock: Clock,
        *,
        max_bytes: int,
        on_accepted: Callable[[], None] = lambda: None,
    ) -> None:
        self._registry = registry
        self._store = store
        self._trust = trust
        self._clock = clock
        self._max_bytes = max_bytes
        self._on_accepted = on_accepted

    async def submit(
        self, agency: str, raw: bytes, *, about: str | None = None, declared: Classification | None = None
    ) -> Accepted:
        """Check and store a package sent by ``agency`` (the TLS-authenticated caller).

        ``about`` is the document id a status package must answer (from the URL);
        ``declared`` is the secrecy level of the transport metadata, which must equal the signed one.
        """
        now = self._clock.now()
        root = parse_xml(raw, max_bytes=self._max_bytes)
        validate_package(root)

        def check(cert: x509.Certificate) -> CertIdentity:
            return self._trust.signer(cert, at=now)

        try:
            verified, signer = verify_enveloped(root, location=SENDER_SIGNATURE_AT, check_certificate=check)
        except SignatureInvalid as exc:
            raise SignatureRejected.from_crypto(exc) from exc
        package = read_package(verified.signed)
        if package.sender != agency:
            raise SenderMismatch(
                f"the package says it is from {package.sender}, "
                f"but the connection is authenticated as {agency}"
            )
        if signer.code != package.sender:
            raise SignerNotTrusted(
                f"the package is signed with the certificate of {signer.code}, "
                f"not of its sender {package.sender}"
            )
        sender = self._registry.get(agency)
        if sender is None or sender.state != "active":
            raise Forbidden(f"agency {agency} is not an active agency in this gateway's registry")

        verify_event = NewEvent(
            "verified",
            now,
            None,
            None,
            sender.network.value,
            {"signer": signer.code, "serial": format(signer.serial, "x"), "fingerprint": signer.fingerprint},
        )
        if isinstance(package, Edoc):
            if about is not None:
                raise BadRequest("this endpoint takes a status package, not a document")
            if package.classification is not (declared or Classification.NONE):
                raise ClassificationMismatch(
                    f"the package is signed as '{package.classification.slug}' but declared for routing as "
                    f"'{(declared or Classification.NONE).slug}' (X-Classification header); they must match"
                )
            return await self._accept_edoc(package, root, raw, verified.signed_digest, signer, verify_event)
        if about is None:
            raise BadRequest("a status package goes to POST /v1/edocs/{id}/status, not /v1/edocs")
        return await self._accept_status(package, raw, verified.signed_digest, signer, verify_event, about)

    async def _accept_edoc(
        self,
        pkg: Edoc,
        root: etree._Element,
        raw: bytes,
        digest: str,
        signer: CertIdentity,
        verified: NewEvent,
    ) -> Accepted:
        resolutions = [self._registry.resolve(code) for code in pkg.recipients]
        now = verified.at
        await self._check_clearance(pkg, resolutions, verified)
        doc_id = new_id()
        routes = plan_routes(resolutions)
        classified = pkg.classification is not Classification.NONE
        # Sign-then-encrypt, before anything is stored: the database never holds the plaintext.
        stored = self._encrypt_for(root, routes, now) if classified else raw
        events = [
            NewEvent(
                "accepted",
                now,
                doc_id,
                None,
                verified.network,
                {
                    "kind": "edoc",
                    "from": pkg.sender,
                    "document_id": pkg.document_id,
                    "size": len(raw),
                    "priority": int(pkg.priority),
                    "classification": pkg.classification.slug,
                    "sha256": hashlib.sha256(raw).hexdigest(),
                },
            ),
            NewEvent(verified.kind, now, doc_id, None, verified.network, verified.detail),
            *redirect_events(doc_id, resolutions, verified),
            *routed_events(doc_id, routes, now),
        ]
        sender_network = self._registry.get(pkg.sender).network  # type: ignore[union-attr]
        doc = NewDocument(
            id=doc_id,
            kind="edoc",
            sender=pkg.sender,
            sender_network=sender_network,
            doc_key=pkg.document_id,
            document_id=pkg.document_id,
            response_for=None,
            status_code=None,
            signed_digest=digest,
            signer=f"agency:{signer.code}",
            subject=None if classified else pkg.subject,
            priority=pkg.priority,
            classification=pkg.classification,
            accepted_at=now,
            package=stored,
            routes=routes,
            events=tuple(events),
            due_at=due_at(pkg.due),
        )
        stored_id, created = await self._store.accept(doc)
        if created:
            self._on_accepted()
        return _accepted(stored_id, created, routes)

    async def _check_clearance(self, pkg: Edoc, resolutions: list[Resolution], verified: NewEvent) -> None:
        """Refuse (and audit) a document that any final recipient is not cleared to receive."""
        for res in resolutions:
            if res.agency.clearance >= pkg.classification:
                continue
            via = f" (addressed as {res.addressed}, forwarded to its successor)" if res.redirected else ""
            detail = {
                "from": pkg.sender,
                "document_id": pkg.document_id,
                "recipient": res.agency.code,
                "addressed": res.addressed,
                "level": pkg.classification.slug,
                "clearance": res.agency.clearance.slug,
            }
            await self._store.add_events(
                [NewEvent("refused_clearance", verified.at, None, res.agency.code, verified.network, detail)]
            )
            raise ClearanceTooLow(
                f"recipient {res.agency.code}{via} is cleared for '{res.agency.clearance.slug}', "
                f"below this document's level '{pkg.classification.slug}'"
            )

    def _encrypt_for(self, root: etree._Element, routes: tuple[NewRoute, ...], now: datetime) -> bytes:
        recipients = [
            EncryptionRecipient(d.recipient, self._trust.encryption_certificate(d.recipient, at=now))
            for route in routes
            for d in route.deliveries
        ]
        return bytes(etree.tostring(encrypt_element(root, recipients)))

    async def _check_receipt(self, pkg: Status, original: DocumentRecord, network: Network) -> None:
        """A 01 must be over the digest of exactly what was delivered (mandatory when classified)."""
        if pkg.delivered_digest is None:
            if original.classification is not Classification.NONE:
                raise ReceiptMismatch(
                    "a 01 receipt for a classified document must carry gw:DeliveredDigest, "
                    "the SHA-256 of the sealed transfer the recipient fetched"
                )
            return
        sealed = await self._store.sealed_for(original.id, network)
        expected = base64.b64encode(hashlib.sha256(sealed or b"").digest()).decode("ascii")
        if sealed is None or pkg.delivered_digest.strip() != expected:
            raise ReceiptMismatch(f"the receipt's digest is not that of document {original.id} as delivered")

    async def _accept_status(
        self, pkg: Status, raw: bytes, digest: str, signer: CertIdentity, verified: NewEvent, about: str
    ) -> Accepted:
        original = await self._store.document(about)
        if original is None or original.kind != "edoc":
            raise NotFound(f"no document with id {about}")
        if (pkg.about_organ, pkg.about_document_id) != (original.sender, original.document_id):
            raise BadRequest(
                f"the status package answers DocumentId {pkg.about_document_id} of {pkg.about_organ}, "
                f"but document {about} is DocumentId {original.document_id} of {original.sender}"
            )
        deliveries = await self._store.deliveries(about)
        if pkg.code.from_sender:
            if pkg.sender != original.sender:
                raise Forbidden(f"only the sender {original.sender} may ask to recall document {about}")
            targets = [d.recipient for d in deliveries]
        else:
            mine = next((d for d in deliveries if d.recipient == pkg.sender), None)
            if mine is None:
                raise Forbidden(f"agency {pkg.sender} is not a recipient of document {about}")
            if pkg.code is StatusCode.ARRIVED:
                await self._check_receipt(pkg, original, mine.network)
            targets = [original.sender]
        resolutions = [self._registry.resolve(code) for code in targets]
        doc = status_document(
            original,
            sender=pkg.sender,
            sender_network=self._registry.get(pkg.sender).network,  # type: ignore[union-attr]
            code=pkg.code.value,
            package=raw,
            digest=digest,
            signer=f"agency:{signer.code}",
            resolutions=resolutions,
            now=verified.at,
            extra_events=(verified,),
        )
        stored_id, created = await self._store.accept(doc)
        if created:
            self._on_accepted()
        return _accepted(stored_id, created, doc.routes)


def status_document(
    original: DocumentRecord,
    *,
    sender: str,
    sender_network: Network,
    code: str,
    package: bytes,
    digest: str,
    signer: str,
    resolutions: list[Resolution],
    now: datetime,
    extra_events: tuple[NewEvent, ...] = (),
) -> NewDocument:
    """A status package as a document of its own, routed like any other, answering ``original``."""
    doc_id = new_id()
    routes = plan_routes(resolutions)
    events = [
        NewEvent(
            "accepted",
            now,
            doc_id,
            None,
            sender_network.value,
            {"kind": "status", "from": sender, "status": code, "response_for": original.id},
        ),
        *(NewEvent(e.kind, e.at, doc_id, e.recipient, e.network, e.detail) for e in extra_events),
        *routed_events(doc_id, routes, now),
        NewEvent(
            "status", now, original.id, sender, sender_network.value, {"status": code, "status_id": doc_id}
        ),
    ]
    return NewDocument(
        id=doc_id,
        kind="status",
        sender=sender,
        sender_network=sender_network,
        doc_key=digest,
        document_id=None,
        response_for=original.id,
        status_code=code,
        signed_digest=digest,
        signer=signer,
        subject=None,
        priority=original.priority,
        classification=original.classification,
        accepted_at=now,
        package=package,
        routes=routes,
        events=tuple(events),
    )


def _accepted(doc_id: str, created: bool, routes: tuple[NewRoute, ...]) -> Accepted:
    deliveries = tuple(d for r in routes for d in r.deliveries)
    networks = {d.recipient: r.network.value for r in routes for d in r.deliveries}
    return Accepted(doc_id, created, deliveries, networks)
