"""The dev PKI as ``gateway init`` makes it: whatever is missing is created, what is there is checked.

A root CA, one intermediate CA per network, each network adapter's certificates, the gateway's
HTTPS server certificate and every agency's, in the layout of ``gateway.infra.files.pki_dir``.
Existing keys are never overwritten; rotation, revocation and later issuing are the dev CA's
(``gateway.infra.files.dev_ca``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from gateway.crypto.issuing import generate_key, make_intermediate_ca, make_leaf, make_root_ca
from gateway.crypto.pki import KeyType, PrivateKey, Role, TrustAnchors, cert_pem, key_pem
from gateway.domain.vocabulary import Network, adapter_code
from gateway.errors import ConfigError, CryptoError
from gateway.infra.files.atomic import make_dirs, write_atomic
from gateway.infra.files.pki_dir import (
    AGENCY_ROLES,
    BASIC_ADAPTER_ROLES,
    SERVER_CODE,
    SERVER_NETWORK,
    adapter_paths,
    agency_paths,
    ca_paths,
    checked_code,
    read_certs,
    read_key,
    root_paths,
    server_paths,
    spki,
    trust_path,
)

ROOT_NAME = "Dev edXML Gateway Root CA"
# localhost, and the network names: docker-compose.yml's services, by which each node of the
# federation reaches its peers (https://government:8443); all nodes share this dev certificate.
SERVER_DNS = ("localhost", *(n.value for n in Network))
SERVER_IPS = ("127.0.0.1", "::1")
LEAF_DAYS = 825  # the CA/Browser Forum's old maximum: long enough for a dev PKI
# CAs outlive leaves so agencies added later still get full-length certificates.
MIN_CA_DAYS = 3650


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
            write_atomic(key_path, key_pem(key), 0o600, private_dir=True)
            self.created.append(key_path)
        if crt.exists():
            cert = read_certs(crt)[0]
            self._check_existing(crt, key_path, cert, key, issuer)
            return cert, key
        cert = make(key)
        write_atomic(crt, cert_pem(cert) + b"".join(cert_pem(c) for c in chain), 0o644, private_dir=True)
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
        checked_code(code)
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
        write_atomic(trust, bundle, 0o644, private_dir=True)
        b.created.append(trust)
    return b.created
