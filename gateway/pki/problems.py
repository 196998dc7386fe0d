"""Certificates that need an officer: expiring, expired, with a broken chain, or missing.

``find_problems`` judges an inventory against the files and the trust anchors; expiry is
recorded in the delivery log once per certificate; ``CertificateWatch`` is what ``gateway
serve`` runs at start and then daily. Pure: the inspection and the event log come in as
arguments.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from cryptography import x509

from gateway.crypto.pki import Role, TrustAnchors
from gateway.domain.clock import Clock, shown
from gateway.errors import CertificateRejected
from gateway.exchange.ports import EventRecord, NewEvent
from gateway.pki.events import cert_event
from gateway.pki.inventory import FOUND_BY, CertRecord, CertState, Inventory, OwnerKind, Slot, iso

log = logging.getLogger(__name__)

DEFAULT_WARNING = timedelta(days=30)
DAILY = 24 * 3600.0


@dataclass(frozen=True)
class Problem:
    """A certificate that needs an officer: ``expiring``, ``expired``, ``chain_broken`` or ``missing``."""

    kind: str
    owner: str
    role: Role
    serial: str | None
    message: str
    record: CertRecord | None = None

    def view(self) -> dict[str, Any]:
        return {
            "problem": self.kind,
            "code": self.owner,
            "role": self.role.value,
            "serial": self.serial,
            "message": self.message,
        }


def find_problems(
    inventory: Inventory,
    certificates: Mapping[str, x509.Certificate | None],
    anchors: TrustAnchors | None,
    *,
    now: datetime,
    within: timedelta,
    expected: Iterable[tuple[str, Role]] = (),
) -> list[Problem]:
    """Active and next certificates that expire within ``within`` (or have), or whose chain is
    broken; and every expected (owner, role) without an active certificate.

    ``certificates`` maps fingerprints to what the record's file holds now (None: unreadable).
    """
    problems: list[Problem] = []
    for r in inventory:
        if r.slot is Slot.RETIRED or r.state(now) is CertState.REVOKED:
            continue
        who = f"{r.owner} {r.role.value} certificate {r.serial}"
        if r.state(now) is CertState.EXPIRED:
            problems.append(
                Problem("expired", r.owner, r.role, r.serial, f"{who} expired on {shown(r.not_after)}", r)
            )
            continue
        if r.not_after - now <= within:
            days = (r.not_after - now).total_seconds() / 86400
            message = f"{who} expires on {shown(r.not_after)} (in {days:.0f} days)"
            problems.append(Problem("expiring", r.owner, r.role, r.serial, message, r))
        if r.kind is OwnerKind.CA or anchors is None:
            continue  # CAs are checked when the anchors are built
        cert = certificates.get(r.fingerprint)
        if cert is None:
            message = f"{who}: its file {r.crt} is missing or no longer holds it"
            problems.append(Problem("chain_broken", r.owner, r.role, r.serial, message, r))
            continue
        try:
            anchors.verify(cert, role=r.role, at=now)
        except CertificateRejected as exc:
            message = f"{who} does not chain to this PKI's CAs: {exc.message}"
            problems.append(Problem("chain_broken", r.owner, r.role, r.serial, message, r))
    for owner, role in expected:
        if inventory.holding(owner, role, Slot.ACTIVE) is None:
            message = f"{owner} has no active {role.value} certificate (issue one with `gateway certs issue`)"
            problems.append(Problem("missing", owner, role, None, message))
    return problems


def expiry_events(
    problems: Iterable[Problem], logged: set[tuple[str, str]], *, at: datetime, by: str
) -> list[NewEvent]:
    """``cert_expiring`` / ``cert_expired`` for problems not yet in the log (once per certificate)."""
    out: list[NewEvent] = []
    for p in problems:
        kind = {"expiring": "cert_expiring", "expired": "cert_expired"}.get(p.kind)
        if kind is None or p.record is None or (kind, p.record.serial) in logged:
            continue
        logged.add((kind, p.record.serial))
        out.append(cert_event(kind, p.record, at=at, by=by, state=p.record.state(at).value))
    return out


class CertificateLog(Protocol):
    """The part of the store certificate events need (``SqlStore`` has it)."""

    async def add_events(self, events: Sequence[NewEvent]) -> None: ...

    async def events_where(
        self, *, kind_prefix: str, detail_contains: str | None = None, limit: int = 100_000
    ) -> list[EventRecord]: ...


async def log_expiry(problems: Sequence[Problem], store: CertificateLog, *, at: datetime, by: str) -> int:
    """Record expiry problems in the delivery log, each certificate once; returns how many were new.

    Only within the standard warning window: an officer looking further ahead (``--within``)
    must not use up the one warning the log keeps for when it matters."""
    due = [p for p in problems if p.record is not None and p.record.not_after - at <= DEFAULT_WARNING]
    if not due:
        return 0
    seen = await store.events_where(kind_prefix="cert_expir")
    logged = {(e.kind, str(e.detail.get("serial"))) for e in seen}
    events = expiry_events(due, logged, at=at, by=by)
    if events:
        await store.add_events(events)
    return len(events)


async def log_found(records: Iterable[CertRecord], store: CertificateLog, *, at: datetime) -> int:
    """``cert_issued`` for each certificate ``gateway init`` made (or that was found on disk),
    once; returns how many were new to the log.

    ``gateway init`` runs before there is a delivery log to write to (the database may be chosen
    later, and each node of a federation has its own), so what it issued is recorded by the first
    command that opens this log for certificates: ``gateway serve`` at start, ``gateway certs log``.
    The event's time is when it was recorded; ``issued_at`` says when the certificate was made."""
    found = [r for r in records if r.issued_by == FOUND_BY]
    if not found:
        return 0
    logged = {str(e.detail.get("serial")) for e in await store.events_where(kind_prefix="cert_issued")}
    events = [
        cert_event("cert_issued", r, at=at, by=FOUND_BY, state=r.state(at).value, issued_at=iso(r.issued_at))
        for r in found
        if r.serial not in logged
    ]
    if events:
        await store.add_events(events)
    return len(events)


class CertificateWatch:
    """What ``gateway serve`` does at start and then daily: warn about certificates that need an
    officer, in the log and (expiry, once per certificate) in the delivery log; and record in the
    delivery log the certificates ``gateway init`` made (``log_found``)."""

    def __init__(
        self,
        inspect: Callable[[datetime], list[Problem]],
        store: CertificateLog,
        clock: Clock,
        *,
        interval: float = DAILY,
        records: Callable[[], Iterable[CertRecord]] | None = None,
    ) -> None:
        self._inspect = inspect
        self._records = records  # the inventory as saved: what init made is logged from it
        self._store = store
        self._clock = clock
        self.interval = interval  # seconds between checks, as the node runs them

    async def check_once(self) -> list[Problem]:
        """Inspect now, warn about each problem, and log expiry once per certificate."""
        now = self._clock.now()
        problems = await asyncio.to_thread(self._inspect, now)
        for p in problems:
            log.warning("certificate %s: %s", p.kind, p.message)
        await log_expiry(problems, self._store, at=now, by="gateway serve")
        records = self._records
        if records is not None:
            await log_found(await asyncio.to_thread(lambda: list(records())), self._store, at=now)
        return problems
