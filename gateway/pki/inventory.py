"""Certificates over their life: the inventory of every certificate issued, and what it implies.

The inventory records each certificate once, with its owner (agency, network adapter, the
gateway's server, or a CA), role, serial, fingerprint and validity, and where it stands in its
lifecycle (its *slot*): ``active`` (what new work uses; its files sit at the usual paths),
``next`` (issued ahead of a rotation) or ``retired`` (a predecessor, kept for verification and
decryption). Revocation is recorded on top of any slot. The *state* shown to an officer is
derived from slot, revocation, overlap and validity at a given time.

Pure: no files and no clock (``gateway.infra.files.dev_ca`` does the I/O). What the records
mean for the delivery log is in ``gateway.pki.events``; what needs an officer, in
``gateway.pki.problems``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from gateway.crypto.pki import Role
from gateway.domain.clock import shown
from gateway.domain.vocabulary import Network
from gateway.errors import BadRequest, ConfigError, NotFound

INVENTORY_VERSION = 1
ROOT_OWNER = "ROOT.CA"
# An operator's console certificate is CN=OPERATOR.<name>: how the console recognises one, and
# the owner code the inventory records it under (its files: operators/<name>/).
OPERATOR_PREFIX = "OPERATOR."
# How long an operator's console certificate lasts unless --days says otherwise: one value for
# `gateway certs issue --operator` and its alias `gateway operator issue`. Shorter than an
# agency's: it is a person's credential, imported into a browser.
OPERATOR_DAYS = 365
FOUND_BY = "gateway init"  # who made what is found on disk but not yet in the inventory
# Shortest serial prefix an officer may type: long enough that a slip names no other certificate.
MIN_SERIAL_PREFIX = 8


def ca_owner(network: Network) -> str:
    """The owner code of ``network``'s intermediate CA in the inventory, e.g. ``CA.PARTY``."""
    return f"CA.{network.value.upper()}"


class Slot(enum.StrEnum):
    """Where a certificate stands in its owner's succession (stored)."""

    ACTIVE = "active"
    NEXT = "next"
    RETIRED = "retired"


class CertState(enum.StrEnum):
    """What an officer sees (derived at a given time)."""

    ACTIVE = "active"
    NEXT = "next"  # issued ahead of a rotation; `certs rotate` makes it active
    RETIRING = "retiring"  # superseded; still good for everything during the overlap
    RETIRED = "retired"  # superseded and past the overlap: verifies and decrypts, no longer connects
    REVOKED = "revoked"
    EXPIRED = "expired"


class OwnerKind(enum.StrEnum):
    AGENCY = "agency"
    ADAPTER = "adapter"
    SERVER = "server"
    OPERATOR = "operator"  # an operator's console certificate (issued by `gateway operator`)
    CA = "ca"


@dataclass(frozen=True)
class Revocation:
    at: datetime
    by: str
    reason: str


@dataclass(frozen=True)
class CertRecord:
    """One certificate ever issued in this PKI. Paths are relative to the certificate directory."""

    owner: str
    kind: OwnerKind
    network: Network | None  # None for the root CA
    role: Role
    serial: str  # lowercase hex, as the trace writes it
    fingerprint: str  # SHA-256 of the DER, lowercase hex
    key_type: str  # p256, rsa2048, rsa3072, ...
    not_before: datetime
    not_after: datetime
    crt: str
    key: str
    slot: Slot
    issued_at: datetime
    issued_by: str
    predecessor: str | None = None  # serial
    successor: str | None = None  # serial
    retire_at: datetime | None = None  # end of the overlap, once superseded
    revocation: Revocation | None = None

    def state(self, now: datetime) -> CertState:
        if self.revocation is not None and now >= self.revocation.at:
            return CertState.REVOKED
        if now > self.not_after:
            return CertState.EXPIRED
        if self.slot is Slot.RETIRED:
            return CertState.RETIRING if self.retire_at is None or now < self.retire_at else CertState.RETIRED
        return CertState.ACTIVE if self.slot is Slot.ACTIVE else CertState.NEXT

    def to_json(self) -> dict[str, Any]:
        rev = self.revocation
        return {
            "owner": self.owner,
            "kind": self.kind.value,
            "network": self.network.value if self.network else None,
            "role": self.role.value,
            "serial": self.serial,
            "fingerprint": self.fingerprint,
            "key_type": self.key_type,
            "not_before": stamp(self.not_before),
            "not_after": stamp(self.not_after),
            "crt": self.crt,
            "key": self.key,
            "slot": self.slot.value,
            "issued_at": stamp(self.issued_at),
            "issued_by": self.issued_by,
            "predecessor": self.predecessor,
            "successor": self.successor,
            "retire_at": stamp(self.retire_at) if self.retire_at else None,
            "revocation": {"at": stamp(rev.at), "by": rev.by, "reason": rev.reason} if rev else None,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CertRecord:
        rev = d.get("revocation")
        return cls(
            owner=str(d["owner"]),
            kind=OwnerKind(d["kind"]),
            network=Network(d["network"]) if d.get("network") else None,
            role=Role(d["role"]),
            serial=str(d["serial"]),
            fingerprint=str(d["fingerprint"]),
            key_type=str(d["key_type"]),
            not_before=parse_time(d["not_before"]),
            not_after=parse_time(d["not_after"]),
            crt=str(d["crt"]),
            key=str(d["key"]),
            slot=Slot(d["slot"]),
            issued_at=parse_time(d["issued_at"]),
            issued_by=str(d["issued_by"]),
            predecessor=d.get("predecessor"),
            successor=d.get("successor"),
            retire_at=parse_time(d["retire_at"]) if d.get("retire_at") else None,
            revocation=Revocation(parse_time(rev["at"]), str(rev["by"]), str(rev["reason"])) if rev else None,
        )

    def view(self, now: datetime) -> dict[str, Any]:
        """What ``certs list --json`` shows: the record and its state now."""
        return {**self.to_json(), "state": self.state(now).value}


def iso(t: datetime) -> str:
    """A time as people read it in messages and the log (whole seconds, UTC)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp(t: datetime) -> str:
    """A time as the inventory keeps it: to the microsecond, since a revocation is judged against
    acceptance times (a document accepted earlier in the same second stays good)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    t = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"time {text!r} has no timezone")
    return t


def serial_hex(serial: int) -> str:
    return format(serial, "x")


class Inventory:
    """Every certificate ever issued in one PKI, keyed by fingerprint, in order of issue."""

    def __init__(self, records: Iterable[CertRecord] = ()) -> None:
        self._records: dict[str, CertRecord] = {r.fingerprint: r for r in records}

    def __iter__(self) -> Iterator[CertRecord]:
        return iter(self._records.values())

    def __len__(self) -> int:
        return len(self._records)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Inventory) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def copy(self) -> Inventory:
        return Inventory(self)

    def by_fingerprint(self, fp: str) -> CertRecord | None:
        return self._records.get(fp)

    def holding(self, owner: str, role: Role, slot: Slot) -> CertRecord | None:
        """The certificate of ``owner`` for ``role`` in ``slot`` (active and next hold one at most)."""
        found = [r for r in self._records.values() if (r.owner, r.role, r.slot) == (owner, role, slot)]
        return found[-1] if found else None

    def put(self, record: CertRecord) -> None:
        self._records[record.fingerprint] = record

    def find(self, serial: str) -> CertRecord:
        """The one certificate whose serial is ``serial`` or starts with it (``:``, ``0x`` ignored)."""
        wanted = normalise_serial(serial)
        exact = [r for r in self if r.serial == wanted]
        matches = exact or [r for r in self if r.serial.startswith(wanted)]
        if not matches:
            raise NotFound(f"no certificate with serial {wanted} in this PKI (see `gateway certs list`)")
        if len(matches) > 1:
            raise BadRequest(f"serial {wanted} is ambiguous ({len(matches)} certificates); give more digits")
        return matches[0]

    def to_json(self) -> dict[str, Any]:
        return {"version": INVENTORY_VERSION, "certificates": [r.to_json() for r in self]}

    @classmethod
    def from_json(cls, data: Any, *, source: str) -> Inventory:
        try:
            if data.get("version") != INVENTORY_VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {INVENTORY_VERSION}")
            return cls(CertRecord.from_json(d) for d in data["certificates"])
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source} is not a readable certificate inventory: {exc}") from exc


def normalise_serial(text: str) -> str:
    value = text.strip().lower().replace(":", "")
    value = value.removeprefix("0x").lstrip("0") or "0"
    if not (MIN_SERIAL_PREFIX <= len(value) <= 64) or any(c not in "0123456789abcdef" for c in value):
        raise BadRequest(
            f"serial {text!r} is not a certificate serial: give at least {MIN_SERIAL_PREFIX} hex digits"
        )
    return value


def superseded(record: CertRecord, *, successor: str | None, crt: str, key: str, at: datetime) -> CertRecord:
    """``record`` moved aside: retired from ``at`` (the end of its overlap), files at ``crt``/``key``."""
    return replace(record, slot=Slot.RETIRED, successor=successor, retire_at=at, crt=crt, key=key)


# --- what a running gateway consults -------------------------------------------------------------


class Standing:
    """Refusals beyond the chain: revoked certificates, and TLS certificates retired after their overlap.

    Judged as of ``at``, the time of the act: a signature made before a revocation stays good
    (a stored receipt is judged as of its acceptance), one made after it is refused. A retired
    signing or encryption certificate is not refused: what it signed while active must keep
    verifying wherever it is read; revoke it to stop that.
    """

    def __init__(self, inventory: Iterable[CertRecord] = ()) -> None:
        self._limits: dict[str, tuple[datetime, str, frozenset[Role]]] = {}
        every = frozenset(Role)
        for r in inventory:
            if r.revocation is not None:
                self._limits[r.fingerprint] = (r.revocation.at, f"revoked on {shown(r.revocation.at)}", every)
            elif r.slot is Slot.RETIRED and r.retire_at is not None:
                why = f"retired on {shown(r.retire_at)}" + (
                    f" (replaced by {r.successor})" if r.successor else ""
                )
                self._limits[r.fingerprint] = (r.retire_at, why, frozenset({Role.TLS}))

    def refusal(self, fingerprint: str, role: Role, at: datetime) -> str | None:
        limit = self._limits.get(fingerprint)
        if limit is None or role not in limit[2] or at < limit[0]:
            return None
        return limit[1]
