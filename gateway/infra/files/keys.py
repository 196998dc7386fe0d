"""The PKI directory as the running node reads it: the inventory's standing, re-read when the file
changes, the agencies' encryption certificates, and the adapters' sealing keys."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.adapters.network import SealKey
from gateway.crypto.pki import Role
from gateway.domain.agencies import Registry
from gateway.domain.vocabulary import Network, adapter_code
from gateway.errors import ConfigError, CryptoError
from gateway.infra.files.pki_dir import (
    adapter_paths,
    agency_paths,
    inventory_path,
    load_key_pair,
    load_trust_anchors,
    read_inventory,
)
from gateway.pki.inventory import Standing
from gateway.pki.trust import RegistryTrust

log = logging.getLogger(__name__)


class DirectoryBook:
    """``CertificateBook`` over a PKI directory: the inventory's ``Standing``, re-read when the file
    changes, and the encryption certificates filed there.

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

    def encryption_certificate(self, code: str) -> x509.Certificate:
        crt, _ = agency_paths(self._certs_dir, code, Role.ENCRYPT)
        try:
            return x509.load_pem_x509_certificates(crt.read_bytes())[0]
        except (OSError, ValueError, IndexError) as exc:
            raise CryptoError(f"no usable encryption certificate for agency {code} ({crt.name})") from exc


def file_trust(certs_dir: Path, registry: Registry) -> RegistryTrust:
    """The node's ``Trust``: the directory's anchors and inventory, bound to ``registry``."""
    return RegistryTrust(load_trust_anchors(certs_dir), registry, DirectoryBook(certs_dir))


def load_seal_key(certs_dir: Path, network: Network) -> SealKey:
    """The adapter's document-sealing key of ``network``, loaded once (parsing PEM per use is slow)."""
    crt, key_path = adapter_paths(certs_dir, network, Role.SIGN)
    cert, key, chain = load_key_pair(crt, key_path)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CryptoError(f"{key_path}: the adapter's signing key must be RSA or EC")
    return SealKey(network=network, adapter=adapter_code(network), key=key, chain=[cert, *chain])
