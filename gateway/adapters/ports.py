"""What the boundary adapters are given: trust decisions over certificates. Keys come in as
``gateway.adapters.network.SealKey``; ``gateway.pki.trust.RegistryTrust`` implements ``Trust``."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from cryptography import x509

from gateway.crypto.pki import CertIdentity
from gateway.domain.vocabulary import Network


class Trust(Protocol):
    """Decides who a certificate belongs to and whether it may act in a role now."""

    def signer(self, cert: x509.Certificate, *, at: datetime) -> CertIdentity:
        """An agency's document-signing certificate; raises ``SignerNotTrusted``."""
        ...

    def adapter(self, cert: x509.Certificate, *, network: Network, at: datetime) -> CertIdentity:
        """The sealing certificate of ``network``'s adapter; raises ``DeliveryError``."""
        ...

    def client(self, cert_der: bytes, *, at: datetime) -> CertIdentity:
        """A TLS client certificate; raises ``Unauthenticated``."""
        ...

    def encryption_certificate(self, code: str, *, at: datetime) -> x509.Certificate:
        """Agency ``code``'s current encryption certificate; raises ``CryptoError``."""
        ...
