"""Trust decisions over the PKI on disk: who a certificate belongs to and what it may do.

``FileTrust`` implements ``gateway.exchange.ports.Trust``. Chain and role checks are
pure (``gateway.crypto.pki.TrustAnchors``); this adds the registry binding
(agency code and network) and caches verdicts per certificate, since the
same few hundred certificates sign every document. Beyond the chain it
consults the certificate inventory (revocations, retired TLS certificates),
re-read whenever the file changes: a revocation holds for every request that
arrives after ``gateway certs revoke`` returns, with no restart.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.adapters.network import SealKey
from gateway.crypto.pki import CertIdentity, CertificateRejected, Role, TrustAnchors
from gateway.domain.agencies import Registry
from gateway.domain.vocabulary import Network
from gateway.errors import ConfigError, CryptoError, DeliveryError, SignerNotTrusted, Unauthenticated
from gateway.infra.files.pki_dir import (
    adapter_code,
    adapter_paths,
    agency_paths,
    inventory_path,
    load_key_pair,
    load_trust_anchors,
    read_inventory,
)
from gateway.pki.inventory import Standing

log = logging.getLogger(__name__)


class InventoryWatch:
    """The inventory's ``Standing``, re-read when the file changes.

    One ``stat`` per trust decision (about a microsecond, beside a signature's milliseconds)
    rather than a timer: nothing can slip through between a revocation and its effect. The
    file is replaced atomically, so a new inode or mtime means a new, whole inventory.
    """

    def __init__(self, certs_dir: Path) -> None:
        self._certs_dir = certs_dir
        self._path = inventory_path(certs_dir)
        self._stamp: tuple[int, int, int] | None = None
        self._standing = Standing()
        self._generation = 0
        self._lock = threading.Lock()

    def standing(self) -> Standing:
        try:
            info = os.stat(self._path)
            stamp: tuple[int, int, int] | None = (info.st_ino, info.st_mtime_ns, info.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp or stamp is None:
            # A vanished inventory revokes nothing less: keep what was known.
            return self._standing
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._standing = Standing(read_inventory(self._certs_dir))
                    self._generation += 1
                except ConfigError as exc:
                    log.error("keeping the previous certificate standing: %s", exc.message)
                self._stamp = stamp
        return self._standing

    def generation(self) -> int:
        """A number that changes whenever the inventory has changed (issue, rotate, revoke)."""
        self.standing()
        return self._generation

    def reload(self) -> None:
        """Read the inventory again even if it looks unchanged (SIGHUP)."""
        with self._lock:
            self._stamp = None
        self.standing()
        with self._lock:
            self._generation += 1


class FileTrust:
    """``Trust`` over trust anchors, the agency registry and the certificate inventory."""

    def __init__(self, anchors: TrustAnchors, registry: Registry, certs_dir: Path | None = None) -> None:
        self._anchors = anchors
        self._registry = registry
        self._certs_dir = certs_dir
        self._verdicts: dict[tuple[bytes, Role], CertIdentity] = {}
        self._lock = threading.Lock()
        self._inventory = InventoryWatch(certs_dir) if certs_dir is not None else None

    @classmethod
    def from_dir(cls, certs_dir: Path, registry: Registry) -> FileTrust:
        return cls(load_trust_anchors(certs_dir), registry, certs_dir)

    def generation(self) -> int:
        """Changes whenever certificates were issued, rotated or revoked (see ``InventoryWatch``)."""
        return self._inventory.generation() if self._inventory is not None else 0

    def reload(self) -> None:
        if self._inventory is not None:
            self._inventory.reload()

    def _identity(self, cert: x509.Certificate, role: Role, at: datetime) -> CertIdentity:
        key = (cert.fingerprint(hashes.SHA256()), role)
        with self._lock:
            known = self._verdicts.get(key)
        if known is not None and known.not_before <= at <= known.not_after:
            identity = known
        else:
            identity = self._anchors.verify(cert, role=role, at=at)
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
            cert = x509.load_der_x509_certificate(cert_der)
            identity = self._identity(cert, Role.TLS, at)
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
