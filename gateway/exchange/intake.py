"""Accepting packages: the checks every submission passes before it is stored and answered 202.

Order matters and is fixed: bounded hardened parse → schema → sender's
signature → read routing facts from what the signature covers → the signer's
certificate judged → bind to the authenticated agency → registry → store.

A submission has two phases. The CPU phase (``gateway.exchange.checking``: ``check_package``
— parse, schema, canonicalise, verify, read — and ``encrypt_package`` for a classified document) is
pure — bytes in, a frozen :class:`Checked` out, no store, trust or clock — so it can run
where it cannot stall the event loop (``PackageWork``; a node runs it in worker processes
with a CPU budget, ``gateway.runtime.checkers``). The store phase (``Intake``) judges the
signer with ``Trust``, applies the registry and stores.

Longer than most modules (about 530 lines) on purpose: every kind of submission (a document,
a status, a recall, an update or replacement) passes the same checks in the same order and ends
in the same one-transaction ``accept``; split by kind, that order would be written four times.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from cryptography import x509

from gateway.adapters.ports import Trust
from gateway.crypto.pki import CertIdentity
from gateway.crypto.xmlenc import EncryptionRecipient
from gateway.domain.agencies import Registry, Resolution
from gateway.domain.body import Body, body_sha256, body_size
from gateway.domain.clock import Clock
from gateway.domain.edxml import (
    AttachmentFacts,
    BusinessDocType,
    Edoc,
    Status,
)
from gateway.domain.vocabulary import Classification, Network, StatusCode
from gateway.domain.xmlsafe import DEFAULT_LIMITS, XmlLimits
from gateway.errors import (
    BadRequest,
    ClassificationBelowOriginal,
    ClassificationMismatch,
    ClearanceTooLow,
    Forbidden,
    NotFound,
    ReceiptMismatch,
    SenderMismatch,
    SignatureRejected,
    SignerNotTrusted,
    UnknownDocument,
)
from gateway.exchange.checking import InlineWork, PackageWork
from gateway.exchange.deadlines import due_at
from gateway.exchange.ports import DocumentRecord, IntakeStore, NewDelivery, NewDocument, NewEvent, NewRoute


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
        limits: XmlLimits = DEFAULT_LIMITS,
        work: PackageWork | None = None,
        on_accepted: Callable[[], None] = lambda: None,
    ) -> None:
        self._registry = registry
        self._store = store
        self._trust = trust
        self._clock = clock
        self._limits = replace(limits, max_bytes=max_bytes)
        self._work = work or InlineWork()
        self._on_accepted = on_accepted

    async def submit(
        self, agency: str, raw: Body, *, about: str | None = None, declared: Classification | None = None
    ) -> Accepted:
        """Check and store a package sent by ``agency`` (the TLS-authenticated caller): in memory, or
        spooled to a file as it arrived (a large one; the caller removes the file afterwards).

        ``about`` is the document id a status package must answer (from the URL);
        ``declared`` is the secrecy level of the transport metadata, which must equal the signed one.
        """
        now = self._clock.now()
        checked = await self._work.check(raw, self._limits, agency=agency)
        signer = self._signer(checked.certificate, now)
        package = checked.package
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
            return await self._accept_edoc(
                package, raw, checked.signed_digest, signer, verify_event, checked.attachments
            )
        if about is None:
            raise BadRequest("a status package goes to POST /v1/edocs/{id}/status, not /v1/edocs")
        return await self._accept_status(package, raw, checked.signed_digest, signer, verify_event, about)

    def _signer(self, certificate: bytes, now: datetime) -> CertIdentity:
        """Whether the certificate the verifier used may sign for an agency at ``now``."""
        try:
            cert = x509.load_der_x509_certificate(certificate)
        except ValueError as exc:  # the CPU phase read it already; a worker should not send junk
            raise SignatureRejected("the certificate in KeyInfo cannot be read") from exc
        return self._trust.signer(cert, at=now)

    async def _accept_edoc(
        self,
        pkg: Edoc,
        raw: Body,
        digest: str,
        signer: CertIdentity,
        verified: NewEvent,
        attachments: tuple[AttachmentFacts, ...] = (),
    ) -> Accepted:
        if pkg.business.doc_type is BusinessDocType.RECALL:
            return await self._accept_recall_package(pkg, raw, digest, signer, verified)
        original = await self._changed_original(pkg)
        recipients = list(pkg.recipients)
        if original is not None:
            # Whoever holds the original must learn it changed: its recipients first, then any
            # further ones the package lists.
            held = [d.recipient for d in await self._store.deliveries(original.id)]
            recipients = list(dict.fromkeys([*held, *recipients]))
        resolutions = [self._registry.resolve(code) for code in recipients]
        now = verified.at
        await self._check_clearance(pkg, resolutions, verified)
        doc_id = new_id()
        routes = plan_routes(resolutions)
        classified = pkg.classification is not Classification.NONE
        # Sign-then-encrypt, before anything is stored: the database never holds the plaintext.
        stored = await self._encrypt_for(raw, pkg.sender, routes, now) if classified else raw
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
                    "size": body_size(raw),
                    "priority": int(pkg.priority),
                    "classification": pkg.classification.slug,
                    "sha256": body_sha256(raw),  # a spooled body's was counted as it arrived
                    **_change_of(pkg, original),
                },
            ),
            NewEvent(verified.kind, now, doc_id, None, verified.network, verified.detail),
            *redirect_events(doc_id, resolutions, verified),
            *routed_events(doc_id, routes, now),
            *((changed_event(original, pkg, doc_id, verified),) if original is not None else ()),
        ]
        sender_network = self._registry.get(pkg.sender).network  # type: ignore[union-attr]
        doc = NewDocument(
            id=doc_id,
            kind="edoc",
            sender=pkg.sender,
            sender_network=sender_network,
            doc_key=pkg.document_id,
            document_id=pkg.document_id,
            response_for=original.id if original is not None else None,
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
            business_doc_type=int(pkg.business.doc_type) if original is not None else None,
            # Their spans are offsets in ``raw``, which is what is stored when unclassified.
            attachments=() if classified else attachments,
        )
        stored_id, created = await self._store.accept(doc)
        if created:
            self._on_accepted()
        return _accepted(stored_id, created, routes)

    async def _accept_recall_package(
        self, pkg: Edoc, raw: Body, digest: str, signer: CertIdentity, verified: NewEvent
    ) -> Accepted:
        """``BussinessDocType`` 1: the package form of a 13. It is kept as the 13 it means, answering
        the original it names in ``ResponseFor`` and going to every recipient of that original."""
        if pkg.response_for is None:
            raise BadRequest(
                "a recall package (BussinessDocType 1) names the document it recalls in "
                "MessageHeader/ResponseFor; this one has none"
            )
        if pkg.classification is not Classification.NONE:
            # What is stored of a status is the signed package as sent; a classified one would
            # have to be encrypted, and a recall carries a reason, not content.
            raise BadRequest(
                "a recall package must be unclassified (it carries a reason, not content); "
                "the original keeps its own protection"
            )
        named = await self._store.edocs_with_document_id(pkg.response_for.document_id)
        if not named:
            raise UnknownDocument(
                f"the recall names DocumentId {pkg.response_for.document_id} in ResponseFor, "
                f"which no agency sent through this gateway"
            )
        original = next((d for d in named if d.sender == pkg.sender), None)
        if original is None:
            raise Forbidden(
                f"only the sender of DocumentId {pkg.response_for.document_id} may recall it, "
                f"not {pkg.sender}"
            )
        deliveries = await self._store.deliveries(original.id)
        targets = [d.recipient for d in deliveries]
        code = StatusCode.RECALL_REQUESTED.value
        return await self._store_status(original, pkg.sender, code, raw, digest, signer, verified, targets)

    async def _changed_original(self, pkg: Edoc) -> DocumentRecord | None:
        """For an update (2) or replacement (3), the original it changes; None for a new document.

        The original is named by DocumentId: ``ResponseFor`` (the axis's clients write it there),
        else a replacement's ``ReplacementInfo/DocumentId``. Only its sender may change it, and
        never into something less protected than it is.
        """
        kind = pkg.business.doc_type
        if kind not in (BusinessDocType.UPDATE, BusinessDocType.REPLACE):
            return None
        what = "an update" if kind is BusinessDocType.UPDATE else "a replacement"
        named_id = pkg.response_for.document_id if pkg.response_for is not None else None
        if named_id is None:
            named_id = next((r.document_id for r in pkg.business.replacements if r.document_id), None)
        if named_id is None:
            raise BadRequest(
                f"{what} (BussinessDocType {int(kind)}) names the document it changes in "
                f"MessageHeader/ResponseFor (or ReplacementInfo/DocumentId); this one names none"
            )
        if named_id == pkg.document_id:
            raise BadRequest(f"{what} has a DocumentId of its own, not that of the document it changes")
        named = await self._store.edocs_with_document_id(named_id)
        if not named:
            raise UnknownDocument(
                f"{what} names DocumentId {named_id}, which no agency sent through this gateway"
            )
        original = next((d for d in named if d.sender == pkg.sender), None)
        if original is None:
            raise Forbidden(f"only the sender of DocumentId {named_id} may change it, not {pkg.sender}")
        if pkg.classification < original.classification:
            raise ClassificationBelowOriginal(
                f"{what} must be classified at least '{original.classification.slug}', as the "
                f"document it changes is; it is '{pkg.classification.slug}'"
            )
        return original

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

    async def _encrypt_for(self, raw: Body, agency: str, routes: tuple[NewRoute, ...], now: datetime) -> Body:
        recipients = [
            EncryptionRecipient(d.recipient, self._trust.encryption_certificate(d.recipient, at=now))
            for route in routes
            for d in route.deliveries
        ]
        return await self._work.encrypt(raw, self._limits, recipients, agency=agency)

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
        self, pkg: Status, raw: Body, digest: str, signer: CertIdentity, verified: NewEvent, about: str
    ) -> Accepted:
        original = await self._store.document(about)
        if original is None or original.kind != "edoc":
            raise NotFound(f"no document with id {about}")
        if pkg.about_document_id != original.document_id:
            raise BadRequest(
                f"the status package answers DocumentId {pkg.about_document_id}, "
                f"but document {about} is DocumentId {original.document_id} of {original.sender}"
            )
        deliveries = await self._store.deliveries(about)
        # On the axis a status names its addressee in ResponseFor/OrganId (it has no To).
        if pkg.code.from_sender:
            if pkg.sender != original.sender:
                raise Forbidden(f"only the sender {original.sender} may ask to recall document {about}")
            # A recall reaches every recipient of the original, each to answer 15 or 16. The axis's
            # clients name one recipient in ResponseFor/OrganId (the sender's own code is read the
            # same way); a code that is neither names a document this sender did not send there.
            named = pkg.about_organ == original.sender or any(
                pkg.about_organ in (d.recipient, d.addressed) for d in deliveries
            )
            if not named:
                raise BadRequest(
                    f"the recall names {pkg.about_organ} in ResponseFor/OrganId, which is neither the "
                    f"sender nor a recipient of document {about}"
                )
            targets = [d.recipient for d in deliveries]
        else:
            if pkg.about_organ != original.sender:
                raise BadRequest(
                    f"a status goes to the document's sender: ResponseFor/OrganId must be "
                    f"{original.sender}, not {pkg.about_organ}"
                )
            mine = next((d for d in deliveries if d.recipient == pkg.sender), None)
            if mine is None:
                raise Forbidden(f"agency {pkg.sender} is not a recipient of document {about}")
            if pkg.code is StatusCode.ARRIVED:
                await self._check_receipt(pkg, original, mine.network)
            targets = [original.sender]
        return await self._store_status(
            original, pkg.sender, pkg.code.value, raw, digest, signer, verified, targets
        )

    async def _store_status(
        self,
        original: DocumentRecord,
        sender: str,
        code: str,
        raw: Body,
        digest: str,
        signer: CertIdentity,
        verified: NewEvent,
        targets: Sequence[str],
    ) -> Accepted:
        """Store a status about ``original`` (as signed: ``raw``) for ``targets``, once."""
        doc = status_document(
            original,
            sender=sender,
            sender_network=self._registry.get(sender).network,  # type: ignore[union-attr]
            code=code,
            package=raw,
            digest=digest,
            signer=f"agency:{signer.code}",
            resolutions=[self._registry.resolve(target) for target in targets],
            now=verified.at,
            extra_events=(verified,),
        )
        stored_id, created = await self._store.accept(doc)
        if created:
            self._on_accepted()
        return _accepted(stored_id, created, doc.routes)


def _change_of(pkg: Edoc, original: DocumentRecord | None) -> dict[str, str]:
    if original is None:
        return {}
    return {"replaces" if pkg.business.doc_type is BusinessDocType.REPLACE else "updates": original.id}


def changed_event(original: DocumentRecord, pkg: Edoc, doc_id: str, verified: NewEvent) -> NewEvent:
    """On the original's trace: it was updated, or superseded by the replacement ``doc_id``. It names
    no recipient, so the sender and every recipient see it in their part of the trace."""
    kind = "superseded" if pkg.business.doc_type is BusinessDocType.REPLACE else "updated"
    return NewEvent(
        kind, verified.at, original.id, None, verified.network, {"by": doc_id, "document_id": pkg.document_id}
    )


def status_document(
    original: DocumentRecord,
    *,
    sender: str,
    sender_network: Network,
    code: str,
    package: Body,
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
        # The `status` record names the sender, whose part of the trace a recipient does not see;
        # each recipient asked to give the document back sees that in its own part.
        *(
            NewEvent("recall_asked", now, original.id, d.recipient, r.network.value, {"status_id": doc_id})
            for r in routes
            for d in r.deliveries
            if code == StatusCode.RECALL_REQUESTED
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
