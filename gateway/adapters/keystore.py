"""Trust decisions over the PKI on disk: who a certificate belongs to and what it may do.

``FileTrust`` implements ``gateway.ports.Trust``. Chain and role checks are
pure (``gateway.crypto.pki.TrustAnchors``); this adds the registry binding
(agency code and network) and caches verdicts per certificate, since the
same few hundred certificates sign every document.
"""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.adapters.devpki import (
    adapter_code,
    adapter_paths,
    agency_paths,
    load_key_pair,
    load_trust_anchors,
)
from gateway.adapters.network import SealKey
from gateway.agency import Registry
from gateway.crypto.pki import CertIdentity, CertificateRejected, Role, TrustAnchors
from gateway.errors import CryptoError, DeliveryError, SignerNotTrusted, Unauthenticated
from gateway.levels import Network


class FileTrust:
    """``Trust`` over trust anchors and the agency registry."""

    def __init__(self, anchors: TrustAnchors, registry: Registry, certs_dir: Path | None = None) -> None:
        self._anchors = anchors
        self._registry = registry
        self._certs_dir = certs_dir
        self._verdicts: dict[tuple[bytes, Role], CertIdentity] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_dir(cls, certs_dir: Path, registry: Registry) -> FileTrust:
        return cls(load_trust_anchors(certs_dir), registry, certs_dir)

    def _identity(self, cert: x509.Certificate, role: Role, at: datetime) -> CertIdentity:
        key = (cert.fingerprint(hashes.SHA256()), role)
        with self._lock:
            known = self._verdicts.get(key)
        if known is not None and known.not_before <= at <= known.not_after:
            return known
        identity = self._anchors.verify(cert, role=role, at=at)
        with self._lock:
            self._verdicts[key] = identity
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
            cert = x509.load_der_x509_certificate(cert_der)
            identity = self._identity(cert, Role.TLS, at)
        except (ValueError, CertificateRejected) as exc:
            raise Unauthenticated(f"client certificate refused: {exc}") from exc
        return identity

    def encryption_certificate(self, code: str, *, at: datetime) -> x509.Certificate:
        """The current encryption certificate of agency ``code``, checked for the ``encrypt`` role."""
        if self._certs_dir is None:
            raise CryptoError("no certificate directory to look up encryption certificates in")
        crt, _ = agency_paths(self._certs_dir, code, Role.ENCRYPT)
        try:
            cert = x509.load_pem_x509_certificates(crt.read_bytes())[0]
        except (OSError, ValueError, IndexError) as exc:
            raise CryptoError(f"no usable encryption certificate for agency {code} ({crt.name})") from exc
        try:
            identity = self._identity(cert, Role.ENCRYPT, at)
        except CertificateRejected as exc:
            raise CryptoError(f"encryption certificate of {code} refused: {exc.message}") from exc
        if identity.code != code:
            raise CryptoError(f"the encryption certificate filed for {code} names {identity.code}")
        return cert


def load_seal_key(certs_dir: Path, network: Network) -> SealKey:
    """The adapter's document-sealing key of ``network``, loaded once (parsing PEM per use is slow)."""
    crt, key_path = adapter_paths(certs_dir, network, Role.SIGN)
    cert, key, chain = load_key_pair(crt, key_path)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CryptoError(f"{key_path}: the adapter's signing key must be RSA or EC")
    return SealKey(network=network, adapter=adapter_code(network), key=key, chain=[cert, *chain])
