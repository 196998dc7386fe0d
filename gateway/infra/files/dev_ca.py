"""The dev CA at work on disk: issue, rotate and revoke certificates, and keep the inventory.

The files at the usual paths (``agencies/<code>/<role>.crt|key`` …) are always the ACTIVE
certificates, so everything else keeps reading them. A certificate issued ahead of a rotation
waits in ``next/``; a predecessor moves to ``retired/<role>-<serial>.crt|key`` and stays there:
that is how an agency keeps the keys that decrypt what was encrypted to it before.

Every change holds the inventory lock, writes the new key, then the new certificate, then the
inventory last: the inventory is the commit point a running gateway watches. What is on disk
but not in the inventory is recorded when next seen (``gateway.infra.files.pki_scan``).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509

from gateway.crypto.issuing import generate_key, make_leaf
from gateway.crypto.pki import KeyType, PrivateKey, Role, cert_pem, fingerprint, key_pem
from gateway.domain.agencies import Registry
from gateway.domain.clock import shown
from gateway.domain.vocabulary import Network, adapter_code
from gateway.errors import BadRequest, CryptoError
from gateway.exchange.ports import NewEvent
from gateway.infra.files.atomic import make_dirs, write_atomic
from gateway.infra.files.owners import Owner, find_owner
from gateway.infra.files.pki_dir import (
    AGENCY_ROLES,
    BASIC_ADAPTER_ROLES,
    SERVER_CODE,
    ca_paths,
    load_key_pair,
    load_trust_anchors,
    next_paths,
    read_certs,
    read_inventory,
    retired_paths,
    write_inventory,
)
from gateway.infra.files.pki_init import LEAF_DAYS, SERVER_DNS, SERVER_IPS
from gateway.infra.files.pki_scan import cert_record, read_cert, reconcile, relative
from gateway.pki.events import cert_event
from gateway.pki.inventory import (
    ROOT_OWNER,
    CertRecord,
    CertState,
    Inventory,
    OwnerKind,
    Revocation,
    Slot,
    iso,
    serial_hex,
    superseded,
)
from gateway.pki.problems import Problem, find_problems


@dataclass
class Change:
    """What one command did: the certificates it touched and the events for the delivery log."""

    records: list[CertRecord] = field(default_factory=list)
    events: list[NewEvent] = field(default_factory=list)


class CertOffice:
    """Issue, rotate, revoke and inspect the certificates in ``certs_dir``, as operator ``by``, at ``now``."""

    def __init__(self, certs_dir: Path, registry: Registry, *, now: datetime, by: str) -> None:
        self._dir = certs_dir
        self._registry = registry
        self.now = now
        self.by = by
        self._seen = Inventory()

    # --- reading ---------------------------------------------------------------------------------

    def inventory(self) -> Inventory:
        """The inventory with whatever is on disk and not yet in it (read-only: nothing is written)."""
        return self._load()[0]

    def inspect(self, *, within: timedelta) -> list[Problem]:
        """What ``certs check`` reports: certificates expiring within ``within``, expired, broken, missing."""
        inventory = self.inventory()
        problems: list[Problem] = []
        try:
            anchors = load_trust_anchors(self._dir)
        except CryptoError as exc:
            anchors = None
            problems.append(Problem("chain_broken", ROOT_OWNER, Role.CA, None, exc.message))
        certificates: dict[str, x509.Certificate | None] = {}
        for r in inventory:
            if r.slot is not Slot.RETIRED and r.kind is not OwnerKind.CA:
                cert = read_cert(self._abs(r.crt))
                certificates[r.fingerprint] = cert if cert and fingerprint(cert) == r.fingerprint else None
        expected = [(a.code, role) for a in self._registry if a.active for role in AGENCY_ROLES]
        expected += [(adapter_code(n), role) for n in Network for role in BASIC_ADAPTER_ROLES]
        expected.append((SERVER_CODE, Role.TLS))
        return problems + find_problems(
            inventory, certificates, anchors, now=self.now, within=within, expected=expected
        )

    def trust_bundle(self) -> tuple[bytes, list[x509.Certificate]]:
        """The trust anchors (root, then each network's CA) as PEM, and as certificates."""
        anchors = load_trust_anchors(self._dir)
        return anchors.pem_bundle(), [anchors.root, *anchors.intermediates.values()]

    # --- changing --------------------------------------------------------------------------------

    def record_existing(self) -> list[CertRecord]:
        """Record in the inventory what ``gateway init`` made; returns what was new to it."""
        with self._locked():
            inventory, found = self._load()
            self._save(inventory)
        return found

    def adopt(self, owner: str) -> Change:
        """Record what another command just wrote for ``owner`` (an operator's certificate, made by
        ``gateway.http.console.issue_operator``) as issued now by this officer."""
        with self._locked():
            inventory, found = self._load()
            mine = [replace(r, issued_at=self.now, issued_by=self.by) for r in found if r.owner == owner]
            for record in mine:
                inventory.put(record)
            self._save(inventory)
        change = self._found([r for r in found if r.owner != owner])
        for record in mine:
            change.records.append(record)
            change.events.append(cert_event("cert_issued", record, at=self.now, by=self.by, state="active"))
        return change

    def issue(self, code: str, role: Role, *, key_type: KeyType, days: int) -> Change:
        """A new certificate: active if the owner has none for ``role``, else ``next`` (staged)."""
        owner = find_owner(code, self._registry)
        crt, key_path = owner.paths(self._dir, role)
        with self._locked():
            inventory, found = self._load()
            change = self._found(found)
            staged = self._staged(inventory, owner.code, role)
            if staged is not None:
                raise BadRequest(
                    f"{owner.code} already has a next {role.value} certificate ({staged.serial}); "
                    f"`gateway certs rotate --agency {owner.code} --role {role.value}` makes it active"
                )
            active = inventory.holding(owner.code, role, Slot.ACTIVE)
            key = generate_key(key_type)
            cert = self._make(owner, role, key, days)
            slot = Slot.ACTIVE if active is None else Slot.NEXT
            if slot is Slot.NEXT:
                crt, key_path = next_paths(crt, serial_hex(cert.serial_number))
            self._write_pair(crt, key_path, cert, key, owner.network)
            record = self._record(owner, role, cert, crt, key_path, slot)
            inventory.put(record)
            self._save(inventory)
        change.records.append(record)
        change.events.append(cert_event("cert_issued", record, at=self.now, by=self.by, state=slot.value))
        return change

    def rotate(
        self,
        code: str,
        roles: Sequence[Role] = (),
        *,
        overlap: timedelta,
        key_type: KeyType | None = None,
        days: int | None = None,
    ) -> Change:
        """For each role (default: every role with an active certificate): the successor becomes
        active for new work; the predecessor moves to ``retired/`` and stays good for ``overlap``."""
        owner = find_owner(code, self._registry)
        with self._locked():
            inventory, found = self._load()
            change = self._found(found)
            wanted = list(roles) or [r for r in owner.roles if inventory.holding(owner.code, r, Slot.ACTIVE)]
            for role in wanted:  # refuse before anything moves
                owner.paths(self._dir, role)
                if inventory.holding(owner.code, role, Slot.ACTIVE) is None:
                    raise BadRequest(
                        f"{owner.code} has no active {role.value} certificate to rotate; "
                        f"issue one with `gateway certs issue --agency {owner.code} --role {role.value}`"
                    )
                if (key_type or days) and self._staged(inventory, owner.code, role):
                    raise BadRequest(
                        f"{owner.code} has a next {role.value} certificate already issued; rotating makes "
                        "it active as it is (leave out --key and --days, or revoke it first)"
                    )
            if not wanted:
                raise BadRequest(f"{owner.code} has no active certificate to rotate")
            for role in wanted:
                change.records.append(self._rotate(inventory, owner, role, overlap, key_type, days, change))
                self._save(inventory)  # one role at a time: each step leaves a consistent PKI behind
        return change

    def revoke(self, serial: str, reason: str) -> Change:
        """Revoke at once. An active adapter or server certificate is replaced first (overlap 0),
        so the gateway keeps sealing and serving; an agency gets a new one with ``certs issue``."""
        with self._locked():
            inventory, found = self._load()
            change = self._found(found)
            record = inventory.find(serial)
            if record.kind is OwnerKind.CA:
                raise BadRequest(f"{record.owner} is a CA; CA certificates are not revoked with this command")
            if record.revocation is not None:
                rev = record.revocation
                raise BadRequest(
                    f"certificate {record.serial} was already revoked on {shown(rev.at)} by {rev.by}"
                )
            if record.slot is Slot.ACTIVE and record.kind in (OwnerKind.ADAPTER, OwnerKind.SERVER):
                owner = find_owner(record.owner, self._registry)
                self._rotate(inventory, owner, record.role, timedelta(0), None, None, change)
            elif record.slot is not Slot.RETIRED:
                self._set_aside(inventory, record)
            moved = inventory.by_fingerprint(record.fingerprint) or record
            revoked = replace(moved, revocation=Revocation(self.now, self.by, reason))
            inventory.put(revoked)
            self._save(inventory)
        change.records.append(revoked)
        change.events.append(cert_event("cert_revoked", revoked, at=self.now, by=self.by, reason=reason))
        return change

    # --- steps -----------------------------------------------------------------------------------

    def _rotate(
        self,
        inventory: Inventory,
        owner: Owner,
        role: Role,
        overlap: timedelta,
        key_type: KeyType | None,
        days: int | None,
        change: Change,
    ) -> CertRecord:
        crt, key_path = owner.paths(self._dir, role)
        active = inventory.holding(owner.code, role, Slot.ACTIVE)
        assert active is not None
        current, _, _ = load_key_pair(crt, key_path)  # a sound pair, before anything moves
        if fingerprint(current) != active.fingerprint:
            raise CryptoError(f"{crt} changed while rotating; run the command again")
        kept_crt, kept_key = retired_paths(crt, active.serial)
        write_atomic(kept_key, key_path.read_bytes(), 0o600, private_dir=True)
        write_atomic(kept_crt, crt.read_bytes(), 0o644, private_dir=True)
        staged = self._staged(inventory, owner.code, role)
        if staged is not None:
            staged_crt, staged_key = self._abs(staged.crt), self._abs(staged.key)
            load_key_pair(staged_crt, staged_key)
            write_atomic(
                key_path, staged_key.read_bytes(), 0o600, private_dir=True
            )  # key first: see load_key_pair
            write_atomic(crt, staged_crt.read_bytes(), 0o644, private_dir=True)
            staged_crt.unlink()
            staged_key.unlink()
            new = replace(staged, slot=Slot.ACTIVE, crt=self._rel(crt), key=self._rel(key_path))
        else:
            key = generate_key(key_type or _key_type(active.key_type))
            cert = self._make(owner, role, key, days or LEAF_DAYS)
            self._write_pair(crt, key_path, cert, key, owner.network)
            new = self._record(owner, role, cert, crt, key_path, Slot.ACTIVE)
        new = replace(new, predecessor=active.serial)
        until = self.now + overlap
        inventory.put(
            superseded(
                active, successor=new.serial, crt=self._rel(kept_crt), key=self._rel(kept_key), at=until
            )
        )
        inventory.put(new)
        change.events.append(
            cert_event(
                "cert_rotated",
                new,
                at=self.now,
                by=self.by,
                predecessor=active.serial,
                predecessor_fingerprint=active.fingerprint,
                overlap_until=iso(until),
            )
        )
        return new

    def _set_aside(self, inventory: Inventory, record: CertRecord) -> None:
        """Move an active or next pair to ``retired/`` (kept: an encryption key still decrypts)."""
        crt, key_path = self._abs(record.crt), self._abs(record.key)
        base = crt if record.slot is Slot.ACTIVE else crt.parent.parent / f"{record.role.value}.crt"
        kept_crt, kept_key = retired_paths(base, record.serial)
        if crt.exists() and key_path.exists():
            write_atomic(kept_key, key_path.read_bytes(), 0o600, private_dir=True)
            write_atomic(kept_crt, crt.read_bytes(), 0o644, private_dir=True)
            key_path.unlink()
            crt.unlink()
        inventory.put(
            superseded(record, successor=None, crt=self._rel(kept_crt), key=self._rel(kept_key), at=self.now)
        )

    def _make(self, owner: Owner, role: Role, key: PrivateKey, days: int) -> x509.Certificate:
        ca_cert, ca_key, _ = load_key_pair(*ca_paths(self._dir, owner.network))
        server = owner.kind is OwnerKind.SERVER
        return make_leaf(
            key.public_key(),
            code=owner.code,
            name=owner.name,
            network=owner.network,
            role=role,
            issuer_cert=ca_cert,
            issuer_key=ca_key,
            now=self.now,
            days=days,
            dns_names=SERVER_DNS if server else (),
            ip_addresses=SERVER_IPS if server else (),
        )

    def _write_pair(
        self, crt: Path, key_path: Path, cert: x509.Certificate, key: PrivateKey, network: Network
    ) -> None:
        ca_cert = read_certs(ca_paths(self._dir, network)[0])[0]
        write_atomic(key_path, key_pem(key), 0o600, private_dir=True)  # key first: see load_key_pair
        write_atomic(crt, cert_pem(cert) + cert_pem(ca_cert), 0o644, private_dir=True)

    def _record(
        self, owner: Owner, role: Role, cert: x509.Certificate, crt: Path, key_path: Path, slot: Slot
    ) -> CertRecord:
        """A record of ``cert``, issued now by this officer."""
        return cert_record(
            self._dir, owner.code, owner.kind, owner.network, role, cert, crt, key_path, slot,
            issued_at=self.now, issued_by=self.by,
        )  # fmt: skip

    def _staged(self, inventory: Inventory, owner: str, role: Role) -> CertRecord | None:
        staged = inventory.holding(owner, role, Slot.NEXT)
        return staged if staged is not None and staged.state(self.now) is CertState.NEXT else None

    def _found(self, found: list[CertRecord]) -> Change:
        events = [cert_event("cert_issued", r, at=self.now, by=r.issued_by, state="active") for r in found]
        return Change(list(found), events)

    # --- the inventory ---------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One officer's command at a time (a second one waits): each reads, changes, writes."""
        make_dirs(self._dir)
        fd = os.open(self._dir / ".inventory.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _load(self) -> tuple[Inventory, list[CertRecord]]:
        inventory = read_inventory(self._dir)
        self._seen = inventory.copy()
        return inventory, reconcile(self._dir, inventory, now=self.now)

    def _save(self, inventory: Inventory) -> None:
        if inventory != self._seen:
            write_inventory(self._dir, inventory)
            self._seen = inventory.copy()

    def _abs(self, rel: str) -> Path:
        return self._dir / rel

    def _rel(self, path: Path) -> str:
        return relative(self._dir, path)


def _key_type(label: str) -> KeyType:
    try:
        return KeyType(label)
    except ValueError:
        return KeyType.P256
