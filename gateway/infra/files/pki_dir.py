"""The dev PKI on disk: where each file lives, and reading what is there.

Layout under ``certs_dir`` (other code depends on it)::

    root-ca.crt, root-ca.key
    networks/<network>/ca.crt, ca.key                       intermediate CA per network
    networks/<network>/adapter/{tls,sign,encrypt}.{crt,key} the network adapter
    agencies/<code>/{tls,sign,encrypt}.{crt,key}            each agency
    server/tls.crt, tls.key                                 the gateway's HTTPS server
    operators/<name>/tls.{crt,key,p12}                      an operator's console certificate
    trust.pem                                               root + all intermediates
    inventory.json                                          every certificate issued (gateway.pki.inventory)
    <leaf dir>/next/<role>-<serial>.{crt,key}               issued ahead of a rotation
    <leaf dir>/retired/<role>-<serial>.{crt,key}            predecessors, kept for decryption

The files at the usual paths are always the ACTIVE certificates. A leaf ``.crt`` holds the
leaf then its intermediate (a ready TLS chain); a CA ``.crt`` holds just the CA. Keys are
written owner-only (0600) in 0700 directories, atomically; ``ensure_dev_pki``
(``gateway.infra.files.pki_init``) never overwrites one (rotation, in
``gateway.infra.files.dev_ca``, moves the old pair to ``retired/`` first).
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.crypto.pki import PrivateKey, Role, TrustAnchors
from gateway.domain.vocabulary import Network
from gateway.errors import ConfigError, CryptoError
from gateway.infra.files.atomic import write_atomic
from gateway.pki.inventory import Inventory

AGENCY_ROLES = (Role.TLS, Role.SIGN, Role.ENCRYPT)
ADAPTER_ROLES = (Role.TLS, Role.SIGN, Role.ENCRYPT)  # what an adapter may hold
BASIC_ADAPTER_ROLES = (Role.TLS, Role.SIGN)  # what the gateway needs to run
INVENTORY = "inventory.json"
SERVER_CODE = "gateway"
SERVER_NETWORK = Network.GOVERNMENT

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


def checked_code(code: str) -> str:
    """``code`` if it can be an agency's directory name, else ``ConfigError``."""
    if not _SAFE_CODE.fullmatch(code):
        raise ConfigError(f"agency code {code!r} cannot be used as a directory name")
    return code


def agency_paths(certs_dir: Path, code: str, role: Role) -> tuple[Path, Path]:
    """(certificate, key) paths of an agency's ``role`` certificate."""
    if role not in AGENCY_ROLES:
        raise ValueError(f"agencies have no {role.value!r} certificate")
    base = certs_dir / "agencies" / checked_code(code)
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
    write_atomic(inventory_path(certs_dir), data, 0o644, private_dir=True)
