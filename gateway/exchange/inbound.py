"""Taking over a transfer from the node of another network (the receiving half of a bridge).

The peer presented its adapter's TLS certificate; this network's adapter verifies the peer
adapter's seal, appends its hop and re-seals, verifies the result as the recipient side, checks
the package bytes that came beside the header against the digest the seal names, and stores the
document with its deliveries already in the inboxes, in one transaction. Only then
does the peer hear 2xx and mark its hop done. A transfer seen before is answered the same way
without being stored twice.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509

from gateway.adapters.network import NetworkAdapter
from gateway.adapters.ports import Trust
from gateway.crypto.pki import CertIdentity
from gateway.crypto.xmldsig import verify_enveloped
from gateway.domain.agencies import Registry
from gateway.domain.body import Body, body_size
from gateway.domain.clock import Clock
from gateway.domain.edxml import Edoc, read_package, signature_location
from gateway.domain.transfer import Transfer, check_carried
from gateway.domain.vocabulary import Classification, Network, StatusCode
from gateway.domain.xmlsafe import parse_xml, parse_xml_file
from gateway.errors import ClientError, DeliveryError, Forbidden, GatewayError
from gateway.exchange.ports import InboundStore, NewDelivery, NewDocument, NewEvent, NewRoute

XENC_DATA = "{http://www.w3.org/2001/04/xmlenc#}EncryptedData"


@dataclass(frozen=True)
class TakenOver:
    id: str
    created: bool


class Inbound:
    """Takes over sealed transfers that peer nodes hand to this network's node: checks the peer
    and the seal, re-seals with a hop of ours, and stores the deliveries once."""

    def __init__(
        self,
        adapter: NetworkAdapter,
        peers: set[Network],
        registry: Registry,
        store: InboundStore,
        trust: Trust,
        clock: Clock,
        *,
        on_delivered: Callable[[], None] = lambda: None,
    ) -> None:
        self._on_delivered = on_delivered
        self._adapter = adapter
        self._peers = peers
        self._registry = registry
        self._store = store
        self._trust = trust
        self._clock = clock

    def peer_network(self, identity: CertIdentity) -> Network:
        """The network a TLS client speaks for: only a peer network's adapter may hand over transfers."""
        if (
            identity.code != f"ADAPTER.{identity.network.value.upper()}"
            or identity.network not in self._peers
        ):
            raise Forbidden(f"{identity.code} is not the adapter of a peer network of this node")
        return identity.network

    async def take_over(self, sealed: bytes, package: Body, *, from_network: Network) -> TakenOver:
        """Take over one transfer: ``package`` in memory, or spooled as it arrived (its digest
        counted then, and checked here against the one the seal names before anything else)."""
        now = self._clock.now()
        try:
            bridged = self._adapter.bridge(sealed, from_network=from_network)
            transfer, _ = self._adapter.open(bridged, sealed_by=self._adapter.network)
            check_carried(transfer, package)
        except DeliveryError as exc:
            await self._store.add_events(
                [NewEvent("quarantined", now, None, None, self._adapter.network.value,
                          {"from": from_network.value, "reason": exc.message})]
            )  # fmt: skip
            raise Forbidden(f"transfer refused: {exc.message}") from exc
        routing = transfer.routing
        existing = await self._store.document(routing.transfer_id)
        if existing is not None:
            return TakenOver(existing.id, False)
        # The sender's signature over up to 50 MB: off the event loop (libxmlsec1 releases the GIL).
        subject, signer = await asyncio.to_thread(self._read_package, transfer, package)
        network = self._adapter.network.value
        events = [
            NewEvent("bridged", now, routing.transfer_id, None, network,
                     {"from": from_network.value, "to": network, "adapter": self._adapter.name}),
            NewEvent("seal_verified", now, routing.transfer_id, None, network,
                     {"adapter": self._adapter.name, "hops": len(transfer.hops)}),
        ]  # fmt: skip
        if routing.kind == "status" and routing.response_for:
            events.append(
                NewEvent("status", now, routing.response_for, routing.sender, from_network.value,
                         {"status": routing.status_code, "status_id": routing.transfer_id})
            )  # fmt: skip
        doc = NewDocument(
            id=routing.transfer_id,
            kind=routing.kind,
            sender=routing.sender,
            sender_network=routing.source,
            doc_key=routing.document_id or routing.transfer_id,
            document_id=routing.document_id,
            response_for=routing.response_for,
            status_code=routing.status_code,
            signed_digest=base64.b64decode(routing.package_digest).hex(),
            signer=signer,
            subject=subject,
            priority=routing.priority,
            classification=routing.classification,
            accepted_at=now,
            package=package,
            routes=(
                NewRoute(
                    self._adapter.network, tuple(NewDelivery(r.code, r.addressed) for r in routing.recipients)
                ),
            ),
            events=tuple(events),
            due_at=routing.due_at,
            business_doc_type=routing.business_doc_type,
        )
        created = await self._store.accept_forwarded(doc, bridged, now=now)
        if created:
            self._on_delivered()
        return TakenOver(doc.id, created)

    def _read_package(self, transfer: Transfer, package: Body) -> tuple[str | None, str]:
        """The subject to list in inboxes (unclassified only) and who signed a status package.

        Read only from what the sealed transfer carried and its own signature covers.
        """
        if transfer.package.encrypted:  # ciphertext for the recipients: nothing here to read or check
            return None, f"agency:{transfer.routing.sender}"
        # Its size is the one the seal names, within what the API let in (twice the package limit).
        size = max(body_size(package), 1)
        if isinstance(package, bytes):
            root = parse_xml(package, max_bytes=size)
        else:
            root = parse_xml_file(package.path, max_bytes=size)
        if root.tag == XENC_DATA:
            raise Forbidden(
                "the transfer carries ciphertext but its seal says the package is signed plaintext"
            )
        at = self._clock.now()

        def check(cert: x509.Certificate) -> CertIdentity:
            try:
                return self._trust.signer(cert, at=at)
            except ClientError:
                if transfer.routing.kind != "status":
                    raise
                return self._trust.adapter(cert, network=transfer.routing.source, at=at)

        try:
            verified, who = verify_enveloped(root, location=signature_location(root), check_certificate=check)
        except GatewayError as exc:
            raise Forbidden(f"the package inside the transfer does not verify: {exc.message}") from exc
        content = read_package(verified.signed)
        signer = f"adapter:{who.code}" if who.code.startswith("ADAPTER.") else f"agency:{who.code}"
        if isinstance(content, Edoc):
            subject = None if content.classification is not Classification.NONE else content.subject
            return subject, signer
        if content.code is not StatusCode(transfer.routing.status_code or content.code.value):
            raise Forbidden("the status code in the routing differs from the signed status package")
        return None, signer
