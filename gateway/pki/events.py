"""Certificate events for the delivery log: issued, rotated, revoked, and what a revocation
means for the documents its certificate signed before."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from gateway.exchange.ports import EventRecord, NewEvent
from gateway.pki.inventory import CertRecord, iso


def cert_event(kind: str, record: CertRecord, *, at: datetime, by: str, **extra: Any) -> NewEvent:
    """A certificate event for the delivery log (``document`` is None: it concerns no one document)."""
    detail: dict[str, Any] = {
        "code": record.owner,
        "role": record.role.value,
        "serial": record.serial,
        "fingerprint": record.fingerprint,
        "not_after": iso(record.not_after),
        "by": by,
    }
    detail.update({k: v for k, v in extra.items() if v is not None})
    return NewEvent(kind, at, None, None, record.network.value if record.network else None, detail)


def signer_revoked_events(
    verified: Iterable[EventRecord], record: CertRecord, *, at: datetime, by: str
) -> list[NewEvent]:
    """One trace entry per document signed with ``record`` before its revocation: it stays
    verifiable (it was signed while the certificate was good), and its trace says what happened since."""
    assert record.revocation is not None
    out: list[NewEvent] = []
    for e in verified:
        if e.document is None or e.at >= record.revocation.at:
            continue
        detail = {
            "serial": record.serial,
            "fingerprint": record.fingerprint,
            "revoked_at": iso(record.revocation.at),
            "reason": record.revocation.reason,
            "by": by,
            "signed_before_revocation": True,
        }
        out.append(NewEvent("signer_revoked", at, e.document, None, e.network, detail))
    return out
