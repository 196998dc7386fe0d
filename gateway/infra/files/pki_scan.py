"""The PKI directory read as inventory records, and the inventory brought up to date with it.

The files at the usual paths are the active certificates. What is there but not in the
inventory (``gateway init`` made it, the console issued an operator's certificate, or a crash
came between the files and the inventory) is recorded when next seen, as made by ``FOUND_BY``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from cryptography import x509

from gateway.crypto.pki import Role, fingerprint, key_label
from gateway.domain.vocabulary import Network, adapter_code
from gateway.errors import ConfigError, CryptoError
from gateway.infra.files.pki_dir import (
    ADAPTER_ROLES,
    AGENCY_ROLES,
    SERVER_CODE,
    SERVER_NETWORK,
    adapter_paths,
    agency_paths,
    ca_paths,
    read_certs,
    root_paths,
    server_paths,
)
from gateway.pki.inventory import (
    FOUND_BY,
    OPERATOR_PREFIX,
    ROOT_OWNER,
    CertRecord,
    Inventory,
    OwnerKind,
    Slot,
    ca_owner,
    serial_hex,
    superseded,
)

# (owner, kind, network if known from the path, role, certificate file, key file)
ActiveFile = tuple[str, OwnerKind, Network | None, Role, Path, Path]


def read_cert(path: Path) -> x509.Certificate | None:
    """The first certificate in ``path``; ``None`` when there is no such file or it holds none."""
    if not path.is_file():
        return None
    try:
        return read_certs(path)[0]
    except CryptoError:
        return None


def relative(certs_dir: Path, path: Path) -> str:
    """``path`` as the inventory keeps it: relative to the certificate directory."""
    return str(path.relative_to(certs_dir))


def cert_record(
    certs_dir: Path,
    owner: str,
    kind: OwnerKind,
    network: Network | None,
    role: Role,
    cert: x509.Certificate,
    crt: Path,
    key_path: Path,
    slot: Slot,
    *,
    issued_at: datetime,
    issued_by: str,
) -> CertRecord:
    """The inventory record of ``cert``, whose files are ``crt`` and ``key_path``."""
    return CertRecord(
        owner=owner,
        kind=kind,
        network=network,
        role=role,
        serial=serial_hex(cert.serial_number),
        fingerprint=fingerprint(cert),
        key_type=key_label(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        crt=relative(certs_dir, crt),
        key=relative(certs_dir, key_path),
        slot=slot,
        issued_at=issued_at,
        issued_by=issued_by,
    )


def reconcile(certs_dir: Path, inventory: Inventory, *, now: datetime) -> list[CertRecord]:
    """Record in ``inventory`` the active files it does not know yet; returns those records."""
    found: list[CertRecord] = []
    networks = ca_networks(certs_dir)
    for owner, kind, network, role, crt, key_path in active_files(certs_dir):
        cert = read_cert(crt)
        if cert is None:
            continue
        fp = fingerprint(cert)
        current = inventory.holding(owner, role, Slot.ACTIVE)
        if current is not None and current.fingerprint == fp:
            continue
        serial = serial_hex(cert.serial_number)
        if current is not None:  # replaced outside these commands: its files are gone
            inventory.put(superseded(current, successor=serial, crt="", key="", at=now))
        known = inventory.by_fingerprint(fp)
        if known is not None:  # e.g. a crash between moving files and writing the inventory
            record = replace(
                known, slot=Slot.ACTIVE, crt=relative(certs_dir, crt), key=relative(certs_dir, key_path)
            )
        else:
            net = network or networks.get(cert.issuer)
            record = cert_record(
                certs_dir, owner, kind, net, role, cert, crt, key_path, Slot.ACTIVE,
                issued_at=cert.not_valid_before_utc, issued_by=FOUND_BY,
            )  # fmt: skip
            found.append(record)
        inventory.put(record)
    return found


def active_files(certs_dir: Path) -> Iterator[ActiveFile]:
    """Every certificate's usual place in ``certs_dir``, whether a file is there or not."""
    yield (ROOT_OWNER, OwnerKind.CA, None, Role.CA, *root_paths(certs_dir))
    for n in Network:
        yield (ca_owner(n), OwnerKind.CA, n, Role.CA, *ca_paths(certs_dir, n))
    for n in Network:
        for role in ADAPTER_ROLES:
            yield (adapter_code(n), OwnerKind.ADAPTER, n, role, *adapter_paths(certs_dir, n, role))
    yield (SERVER_CODE, OwnerKind.SERVER, SERVER_NETWORK, Role.TLS, *server_paths(certs_dir))
    operators = certs_dir / "operators"
    for sub in sorted(operators.iterdir()) if operators.is_dir() else ():
        # Recorded so that `certs list` shows them and `certs revoke` can stop one.
        yield (
            OPERATOR_PREFIX + sub.name,
            OwnerKind.OPERATOR,
            None,
            Role.TLS,
            sub / "tls.crt",
            sub / "tls.key",
        )
    agencies = certs_dir / "agencies"
    for sub in sorted(agencies.iterdir()) if agencies.is_dir() else ():
        for role in AGENCY_ROLES:
            try:
                paths = agency_paths(certs_dir, sub.name, role)
            except ConfigError:
                break  # not an agency's directory
            yield (sub.name, OwnerKind.AGENCY, None, role, *paths)


def ca_networks(certs_dir: Path) -> dict[x509.Name, Network]:
    """Each network CA's subject, to tell which network a found certificate belongs to."""
    cas = {n: read_cert(ca_paths(certs_dir, n)[0]) for n in Network}
    return {ca.subject: n for n, ca in cas.items() if ca is not None}
