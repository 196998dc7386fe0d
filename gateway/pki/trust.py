"""Trust decisions: who a certificate belongs to and what it may do.

``RegistryTrust`` implements ``gateway.adapters.ports.Trust``. Chain and role checks are
pure (``gateway.crypto.pki.TrustAnchors``); this adds the registry binding
(agency code and network) and caches verdicts per certificate, since the
same few hundred certificates sign every document. Beyond the chain it
consults the certificate inventory (revocations, retired TLS certificates)
through ``CertificateBook``, which ``gateway.infra.files.keys.DirectoryBook`` implements
over the PKI directory and re-reads whenever the file changes: a revocation holds for
every request that arrives after ``gateway certs revoke`` returns, with no restart.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.crypto.pki import CertIdentity, Role, TrustAnchors
from gateway.domain.agencies import Registry
from gateway.domain.vocabulary import Network, adapter_code
from gateway.errors import CertificateRejected, CryptoError, DeliveryError, SignerNotTrusted, Unauthenticated
from gateway.pki.inventory import Standing


class CertificateBook(Protocol):
    """Where trust decisions read what changes while a node runs: the inventory's standing
    (revocations, retirements) and the agencies' current encryption certificates."""

    def standing(self) -> Standing: ...

    def generation(self) -> int:
        """A number that changes whenever the inventory has changed (issue, rotate, revoke)."""
        ...

    def reload(self) -> None:
        """Read the inventory again even if it looks unchanged (SIGHUP)."""
        ...

    def encryption_certificate(self, code: str) -> x509.Certificate:
        """Agency ``code``'s filed encryption certificate, unchecked; raises ``CryptoError``."""
        ...


class RegistryTrust:
    """``Trust`` over trust anchors, the agency registry and the certificate inventory."""

    def __init__(
        self, anchors: TrustAnchors, registry: Registry, book: CertificateBook | None = None
    ) -> None:
        self._anchors = anchors
        self._registry = registry
        self._verdicts: dict[tuple[bytes, Role], CertIdentity] = {}
        self._lock = threading.Lock()
        self._inventory = book

    def generation(self) -> int:
        """Changes whenever certificates were issued, rotated or revoked (see ``CertificateBook``)."""
        return self._inventory.generation() if self._inventory is not None else 0

    def reload(self) -> None:
        if self._inventory is not None:
            self._inventory.reload()

    def _identity(self, cert: x509.Certificate | bytes, role: Role, at: datetime) -> CertIdentity:
        # Verdicts are kept by the certificate's DER: a TLS client's, given as DER on every
        # request, is then neither parsed nor hashed again once judged.
        der = cert if isinstance(cert, bytes) else cert.public_bytes(serialization.Encoding.DER)
        key = (der, role)
        with self._lock:
            known = self._verdicts.get(key)
        if known is not None and known.not_before <= at <= known.not_after:
            identity = known
        else:
            certificate = x509.load_der_x509_certificate(der) if isinstance(cert, bytes) else cert
            identity = self._anchors.verify(certificate, role=role, at=at)
            with self._lock:
                self._verdicts[key] = identity
        # After the cache, on every call: a cached verdict must not outlive a revocation.
        if self._inventory is not None:
            why = self._inventory.standing().refusal(identity.fingerprint, role, at)
            if why is not None:
                raise CertificateRejected(f"certificate {identity.fingerprint[:16]}…: {why}")
        return identity

    def signer(self, cert: x509.Certificate, *, at: datetime) -> CertIdentity:
        try:
            identity = self._identity(cert, Role.SIGN, at)
        except CertificateRejected as exc:
            raise SignerNotTrusted(f"signing certificate refused: {exc.message}") from exc
        agency = self._registry.get(identity.code)
        if agency is None:
            raise SignerNotTrusted(
                f"signing certificate is for {identity.code}, which is not a registered agency"
            )
        if agency.network is not identity.network:
            raise SignerNotTrusted(
                f"signing certificate of {identity.code} was issued by the {identity.network} network CA, "
                f"but the agency belongs to the {agency.network} network"
            )
        return identity

    def adapter(self, cert: x509.Certificate, *, network: Network, at: datetime) -> CertIdentity:
        try:
            identity = self._identity(cert, Role.SIGN, at)
        except CertificateRejected as exc:
            raise DeliveryError(f"seal certificate refused: {exc.message}") from exc
        if identity.code != adapter_code(network) or identity.network is not network:
            raise DeliveryError(f"sealed by {identity.code}, not by the adapter of the {network} network")
        return identity

    def client(self, cert_der: bytes, *, at: datetime) -> CertIdentity:
        try:
            identity = self._identity(cert_der, Role.TLS, at)
        except (ValueError, CertificateRejected) as exc:
            raise Unauthenticated(f"client certificate refused: {exc}") from exc
        agency = self._registry.get(identity.code)
        if agency is not None and agency.network is not identity.network:
            raise Unauthenticated(
                f"client certificate of {identity.code} was issued by the {identity.network} network CA, "
                f"but the agency belongs to the {agency.network} network"
            )
        return identity

    def encryption_certificate(self, code: str, *, at: datetime) -> x509.Certificate:
        """The current encryption certificate of agency ``code``, checked for the ``encrypt`` role."""
        if self._inventory is None:
            raise CryptoError("no certificate directory to look up encryption certificates in")
        cert = self._inventory.encryption_certificate(code)
        try:
            identity = self._identity(cert, Role.ENCRYPT, at)
        except CertificateRejected as exc:
            raise CryptoError(f"encryption certificate of {code} refused: {exc.message}") from exc
        if identity.code != code:
            raise CryptoError(f"the encryption certificate filed for {code} names {identity.code}")
        return cert
