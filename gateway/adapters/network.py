"""Network adapters: the boundary of each network (the Adapter-M role).

An adapter seals what leaves its network, and verifies the previous seal
before it lets a transfer in (bridging: verify, append a hop, seal again).
It never reads the package it carries: it seals a small header that names the
package by SHA-256 and size (``gateway.domain.transfer``), and routes on
``gw:Routing`` alone; whoever holds the bytes checks them against that header.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from lxml import etree

from gateway.adapters.ports import Trust
from gateway.crypto.pki import CertIdentity
from gateway.crypto.xmldsig import SigningKey, sign_enveloped, verify_enveloped
from gateway.domain import transfer as tr
from gateway.domain.clock import Clock
from gateway.domain.edxml import validate_transfer
from gateway.domain.vocabulary import Network
from gateway.domain.xmlsafe import parse_xml
from gateway.errors import ClientError, DeliveryError, SignatureInvalid


@dataclass(frozen=True)
class SealKey:
    """An adapter's sealing key and certificate chain (leaf first)."""

    network: Network
    adapter: str
    key: SigningKey
    chain: list[x509.Certificate]


class NetworkAdapter:
    """Seals and opens transfers at the boundary of one network."""

    def __init__(self, seal: SealKey, trust: Trust, clock: Clock) -> None:
        self._seal = seal
        self._trust = trust
        self._clock = clock

    @property
    def network(self) -> Network:
        return self._seal.network

    @property
    def name(self) -> str:
        return self._seal.adapter

    @property
    def seal_key(self) -> SealKey:
        """The adapter's signing key and chain; push notifications are signed with it too."""
        return self._seal

    def seal(self, routing: tr.Routing, package: tr.PackageRef, hops: tuple[tr.Hop, ...] = ()) -> bytes:
        """A header for the road: routing facts, the package's digest, the hops so far plus ours,
        and our seal."""
        hop = tr.Hop(self.network, self.name, "sealed", self._clock.now(), None)
        root = tr.build(routing, package, (*hops, hop))
        return bytes(etree.tostring(sign_enveloped(root, self._seal.key, self._seal.chain)))

    def open(self, sealed: bytes, *, sealed_by: Network) -> tuple[tr.Transfer, str]:
        """Verify a transfer sealed by ``sealed_by``'s adapter; returns it, read from what the seal
        covers, and the digest of that seal (for the next hop to chain to)."""
        try:
            root = parse_xml(sealed)
            validate_transfer(root)
        except ClientError as exc:
            raise DeliveryError(f"sealed transfer refused: {exc.message}") from exc

        def check(cert: x509.Certificate) -> CertIdentity:
            return self._trust.adapter(cert, network=sealed_by, at=self._clock.now())

        try:
            verified, _ = verify_enveloped(root, location="./", check_certificate=check)
        except (ClientError, SignatureInvalid) as exc:  # the adapter's certificate, or its seal
            raise DeliveryError(f"seal of the {sealed_by} adapter does not verify: {exc.message}") from exc
        transfer = tr.read(verified.signed)
        if transfer.hops and transfer.hops[-1].network is not sealed_by:
            raise DeliveryError(f"the last hop was not made by the {sealed_by} adapter")
        return transfer, tr.seal_digest(root)

    def bridge(self, sealed: bytes, *, from_network: Network) -> bytes:
        """Take a transfer across from ``from_network`` into ours: verify its seal, add our hop, re-seal."""
        transfer, previous = self.open(sealed, sealed_by=from_network)
        if transfer.routing.target is not self.network:
            raise DeliveryError(f"transfer is for the {transfer.routing.target} network, not {self.network}")
        hop = tr.Hop(self.network, self.name, "bridged", self._clock.now(), previous)
        root = tr.build(transfer.routing, transfer.package, (*transfer.hops, hop))
        return bytes(etree.tostring(sign_enveloped(root, self._seal.key, self._seal.chain)))

    def sign_package(self, root: etree._Element) -> bytes:
        """Sign an edXML package on behalf of this network's side (the 01 receipt a fetch creates)."""
        return bytes(etree.tostring(sign_enveloped(root, self._seal.key, self._seal.chain)))
