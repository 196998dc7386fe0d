"""The dev PKI on disk: create what is missing, load what is there.

Layout under ``certs_dir`` (other code depends on it)::

    root-ca.crt, root-ca.key
    networks/<network>/ca.crt, ca.key                       intermediate CA per network
    networks/<network>/adapter/{tls,sign,encrypt}.{crt,key} the network adapter
    agencies/<code>/{tls,sign,encrypt}.{crt,key}            each agency
    server/tls.crt, tls.key                                 the gateway's HTTPS server
    trust.pem                                               root + all intermediates
    inventory.json                                          every certificate issued (gateway.pki.inventory)
    <leaf dir>/next/<role>-<serial>.{crt,key}               issued ahead of a rotation
    <leaf dir>/retired/<role>-<serial>.{crt,key}            predecessors, kept for decryption

The files at the usual paths are always the ACTIVE certificates. A leaf ``.crt`` holds the
leaf then its intermediate (a ready TLS chain); a CA ``.crt`` holds just the CA. Keys are
written owner-only (0600) in 0700 directories, atomically; ``ensure_dev_pki`` never
overwrites one (rotation, in ``certoffice``, moves the old pair to ``retired/`` first).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.crypto.pki import (
    KeyType,
    PrivateKey,
    Role,
    TrustAnchors,
    cert_pem,
    generate_key,
    key_pem,
    make_intermediate_ca,
    make_leaf,
    make_root_ca,
)
from gateway.domain.vocabulary import Network, adapter_code
from gateway.errors import ConfigError, CryptoError
from gateway.pki.inventory import Inventory

ROOT_NAME = "Dev edXML Gateway Root CA"
AGENCY_ROLES = (Role.TLS, Role.SIGN, Role.ENCRYPT)
ADAPTER_ROLES = (Role.TLS, Role.SIGN, Role.ENCRYPT)  # what an adapter may hold
BASIC_ADAPTER_ROLES = (Role.TLS, Role.SIGN)  # what the gateway needs to run
INVENTORY = "inventory.json"
SERVER_CODE = "gateway"
SERVER_NETWORK = Network.GOVERNMENT
# localhost, and the network names: docker-compose.yml's services, by which each node of the
# federation reaches its peers (https://government:8443); all nodes share this dev certificate.
SERVER_DNS = ("localhost", *(n.value for n in Network))
SERVER_IPS = ("127.0.0.1", "::1")
LEAF_DAYS = 825  # the CA/Browser Forum's old maximum: long enough for a dev PKI
# CAs outlive leaves so agencies added later still get full-length certificates.
MIN_CA_DAYS = 3650

# Agency codes become directory names: one safe path component, never "." or "..".
_SAFE_CODE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9])?")


# --- paths --------------------------------------------------------------------------------------


def root_paths(certs_dir: Path) -> tuple[Path, Path]:
    return certs_dir / "root-ca.crt", certs_dir / "root-ca.key"


def ca_paths(certs_dir: Path, network: Network) -> tuple[Path, Path]:
    base = certs_dir / "networks" / network.value
    return base / "ca.crt", base / "ca.key"


def trust_path(certs_dir: Path) -> Path:
    return certs_dir / "trust.pem"


def _checked_code(code: str) -> str:
    if not _SAFE_CODE.fullmatch(code):
        raise ConfigError(f"agency code {code!r} cannot be used as a directory name")
    return code


def agency_paths(certs_dir: Path, code: str, role: Role) -> tuple[Path, Path]:
    """(certificate, key) paths of an agency's ``role`` certificate."""
    if role not in AGENCY_ROLES:
        raise ValueError(f"agencies have no {role.value!r} certificate")
    base = certs_dir / "agencies" / _checked_code(code)
    return base / f"{role.value}.crt", base / f"{role.value}.key"


def adapter_paths(certs_dir: Path, network: Network, role: Role) -> tuple[Path, Path]:
    """(certificate, key) paths of ``network``'s adapter certificate for ``role``."""
    if role not in ADAPTER_ROLES:
        raise ValueError(f"adapters have no {role.value!r} certificate")
    base = certs_dir / "networks" / network.value / "adapter"
    return base / f"{role.value}.crt", base / f"{role.value}.key"


def server_paths(certs_dir: Path) -> tuple[Path, Path]:
    """(certificate, key) paths of the gateway's HTTPS server certificate."""
    base = certs_dir / "server"
    return base / "tls.crt", base / "tls.key"


def inventory_path(certs_dir: Path) -> Path:
    return certs_dir / INVENTORY


def retired_paths(crt: Path, serial: str) -> tuple[Path, Path]:
    """Where the predecessor of the active pair ``crt`` (``<dir>/<role>.crt``) is kept."""
    base = crt.parent / "retired" / f"{crt.stem}-{serial}"
    return base.with_suffix(".crt"), base.with_suffix(".key")


def next_paths(crt: Path, serial: str) -> tuple[Path, Path]:
    """Where a certificate issued ahead of the rotation of ``crt`` waits."""
    base = crt.parent / "next" / f"{crt.stem}-{serial}"
    return base.with_suffix(".crt"), base.with_suffix(".key")


# --- loading ------------------------------------------------------------------------------------


def read_certs(path: Path) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise CryptoError(f"certificate file {path} does not exist") from exc
    except OSError as exc:
        raise CryptoError(f"cannot read certificate file {path}: {exc.strerror}") from exc
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CryptoError(f"certificate file {path} holds no readable PEM certificate") from exc


def read_key(path: Path) -> PrivateKey:
    try:
        # Check the mode on the opened file itself, not on a path that could change meanwhile.
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError as exc:
        raise CryptoError(f"key file {path} does not exist") from exc
    except OSError as exc:
        raise CryptoError(f"cannot read key file {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise CryptoError(f"key file {path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise CryptoError(
                f"key file {path} is readable by group or others (mode {mode:04o}); run: chmod 600 {path}"
            )
        data = f.read()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CryptoError(f"key file {path} holds no readable unencrypted PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CryptoError(f"key file {path} holds a {type(key).__name__}; only RSA and EC keys are supported")
    return key


def spki(key: PrivateKey | x509.Certificate) -> bytes:
    public = key.public_key()
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_key_pair(
    crt_path: Path, key_path: Path
) -> tuple[x509.Certificate, PrivateKey, list[x509.Certificate]]:
    """Load (leaf, private key, rest of the chain) from a ``.crt`` / ``.key`` pair.

    Raises ``CryptoError`` naming the file if a file is missing or unreadable, the key file
    is accessible to group or others, or the key does not belong to the leaf.
    """
    # A rotation replaces the key, then the certificate (two renames, each atomic): a reader
    # between them sees a new key beside the old certificate. Read again rather than fail.
    for attempt in range(_PAIR_ATTEMPTS):
        certs = read_certs(crt_path)
        key = read_key(key_path)
        if spki(certs[0]) == spki(key):
            return certs[0], key, certs[1:]
        if attempt + 1 < _PAIR_ATTEMPTS:
            time.sleep(0.05)
    raise CryptoError(f"key file {key_path} does not belong to the certificate in {crt_path}")


_PAIR_ATTEMPTS = 6


def load_trust_anchors(certs_dir: Path) -> TrustAnchors:
    """The root CA and every network's intermediate CA from ``certs_dir``."""
    root = read_certs(root_paths(certs_dir)[0])[0]
    intermediates = {n: read_certs(ca_paths(certs_dir, n)[0])[0] for n in Network}
    try:
        return TrustAnchors(root, intermediates)
    except CryptoError as exc:
        raise CryptoError(f"dev PKI in {certs_dir}: {exc.message}") from exc


def read_inventory(certs_dir: Path) -> Inventory:
    """The certificate inventory; empty if there is none yet (a PKI made before inventories)."""
    path = inventory_path(certs_dir)
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return Inventory()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    return Inventory.from_json(data, source=str(path))


def write_inventory(certs_dir: Path, inventory: Inventory) -> None:
    """Replace the inventory atomically: a running gateway sees the old one or the new one, whole."""
    data = json.dumps(inventory.to_json(), ensure_ascii=False, indent=1).encode("utf-8") + b"\n"
    write_atomic(inventory_path(certs_dir), data, 0o644)


# --- writing ------------------------------------------------------------------------------------


def make_dirs(path: Path) -> None:
    """Create ``path`` and missing parents as 0700 and tighten ``path`` itself to owner-only."""
    try:
        missing = [p for p in (path, *path.parents) if not p.exists()]
        for p in reversed(missing):
            p.mkdir(mode=0o700)
            os.chmod(p, 0o700)  # mkdir's mode is filtered by the umask; be exact
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, mode & ~0o077)
    except OSError as exc:
        raise ConfigError(f"cannot create or secure directory {path}: {exc.strerror}") from exc


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a fresh ``mode`` temp file beside ``path``, fsync, rename it over ``path``."""
    make_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from exc


class _Builder:
    """One ``ensure_dev_pki`` run: what exists is loaded and checked, what is missing is made."""

    def __init__(self, certs_dir: Path, now: datetime, key_type: KeyType, days: int) -> None:
        self.certs_dir = certs_dir
        self.now = now
        self.key_type = key_type
        self.days = days
        self.ca_days = max(days, MIN_CA_DAYS)
        self.created: list[Path] = []

    def pair(
        self,
        crt: Path,
        key_path: Path,
        *,
        issuer: x509.Certificate | None,
        chain: tuple[x509.Certificate, ...],
        make: Callable[[PrivateKey], x509.Certificate],
    ) -> tuple[x509.Certificate, PrivateKey]:
        """Load or create one certificate and its key; ``issuer`` None means self-signed."""
        if crt.exists() and not key_path.exists():
            raise CryptoError(f"{crt} exists but its key {key_path} does not; remove {crt} to re-create both")
        if key_path.exists():
            key = read_key(key_path)
        else:
            key = generate_key(self.key_type)
            write_atomic(key_path, key_pem(key), 0o600)
            self.created.append(key_path)
        if crt.exists():
            cert = read_certs(crt)[0]
            self._check_existing(crt, key_path, cert, key, issuer)
            return cert, key
        cert = make(key)
        write_atomic(crt, cert_pem(cert) + b"".join(cert_pem(c) for c in chain), 0o644)
        self.created.append(crt)
        return cert, key

    @staticmethod
    def _check_existing(
        crt: Path, key_path: Path, cert: x509.Certificate, key: PrivateKey, issuer: x509.Certificate | None
    ) -> None:
        if spki(cert) != spki(key):
            raise CryptoError(f"key file {key_path} does not belong to the certificate in {crt}")
        try:
            cert.verify_directly_issued_by(issuer if issuer is not None else cert)
        except (ValueError, TypeError, InvalidSignature) as exc:
            # Its CA was re-created since: the old certificate would never verify again.
            raise CryptoError(
                f"{crt} was not issued by the current CA in this dev PKI; remove it and its key to re-issue"
            ) from exc

    def leaf(
        self,
        paths: tuple[Path, Path],
        *,
        code: str,
        name: str,
        network: Network,
        role: Role,
        ca: tuple[x509.Certificate, PrivateKey],
        dns_names: tuple[str, ...] = (),
        ip_addresses: tuple[str, ...] = (),
    ) -> None:
        ca_cert, ca_key = ca

        def make(key: PrivateKey) -> x509.Certificate:
            return make_leaf(
                key.public_key(),
                code=code,
                name=name,
                network=network,
                role=role,
                issuer_cert=ca_cert,
                issuer_key=ca_key,
                now=self.now,
                days=self.days,
                dns_names=dns_names,
                ip_addresses=ip_addresses,
            )

        self.pair(*paths, issuer=ca_cert, chain=(ca_cert,), make=make)


def _check_agencies(agencies: Iterable[tuple[str, str, Network]]) -> list[tuple[str, str, Network]]:
    seen: dict[str, tuple[str, Network]] = {}
    for code, name, network in agencies:
        _checked_code(code)
        if seen.setdefault(code, (name, network)) != (name, network):
            raise ConfigError(f"agency {code} is listed twice with different names or networks")
    return [(code, name, network) for code, (name, network) in seen.items()]


def ensure_dev_pki(
    certs_dir: Path,
    *,
    agencies: Iterable[tuple[str, str, Network]],
    now: datetime,
    key_type: KeyType = KeyType.P256,
    days: int = LEAF_DAYS,
    adapter_roles: tuple[Role, ...] = BASIC_ADAPTER_ROLES,
) -> list[Path]:
    """Create whatever part of the dev PKI in ``certs_dir`` is missing; return the paths created.

    ``agencies`` are (code, name, network); each adapter gets ``adapter_roles``. Existing keys
    are never overwritten; an existing certificate is kept if it matches its key and its
    current issuer, else ``CryptoError``. CAs live at least ``MIN_CA_DAYS``; leaves ``days``
    (never beyond their CA).
    """
    wanted = _check_agencies(agencies)
    b = _Builder(certs_dir, now, key_type, days)
    make_dirs(certs_dir)

    root_crt, root_key_path = root_paths(certs_dir)
    root = b.pair(
        root_crt,
        root_key_path,
        issuer=None,
        chain=(),
        make=lambda key: make_root_ca(key, ROOT_NAME, now, b.ca_days),
    )
    cas: dict[Network, tuple[x509.Certificate, PrivateKey]] = {}
    for network in Network:

        def make_ca(key: PrivateKey, network: Network = network) -> x509.Certificate:
            return make_intermediate_ca(key, network, root[0], root[1], now, b.ca_days)

        cas[network] = b.pair(*ca_paths(certs_dir, network), issuer=root[0], chain=(), make=make_ca)

    for network in Network:
        for role in adapter_roles:
            b.leaf(
                adapter_paths(certs_dir, network, role),
                code=adapter_code(network),
                name=f"Adapter {network.value}",
                network=network,
                role=role,
                ca=cas[network],
            )
    b.leaf(
        server_paths(certs_dir),
        code=SERVER_CODE,
        name="edXML gateway",
        network=SERVER_NETWORK,
        role=Role.TLS,
        ca=cas[SERVER_NETWORK],
        dns_names=SERVER_DNS,
        ip_addresses=SERVER_IPS,
    )
    for code, name, network in wanted:
        for role in AGENCY_ROLES:
            b.leaf(
                agency_paths(certs_dir, code, role),
                code=code,
                name=name,
                network=network,
                role=role,
                ca=cas[network],
            )

    # trust.pem is derived: rewrite it whenever it differs (e.g. a CA was re-created).
    bundle = TrustAnchors(root[0], {n: c for n, (c, _) in cas.items()}).pem_bundle()
    trust = trust_path(certs_dir)
    try:
        current = trust.read_bytes() if trust.exists() else None
    except OSError as exc:
        raise ConfigError(f"cannot read {trust}: {exc.strerror}") from exc
    if current != bundle:
        write_atomic(trust, bundle, 0o644)
        b.created.append(trust)
    return b.created
