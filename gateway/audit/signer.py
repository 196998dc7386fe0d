"""The node's signer: a new signed head over the log while records arrive, never over a broken chain."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from cryptography import x509

from gateway.audit.heads import SignedHead, sign_head
from gateway.audit.log import GENESIS, AuditRecord
from gateway.audit.verify import verify_log
from gateway.crypto.pki import PrivateKey, TrustAnchors
from gateway.domain.clock import Clock

log = logging.getLogger(__name__)


class AuditLog(Protocol):
    """What signing heads needs from the store (``SqlOversight`` implements it)."""

    async def last_audit_head(self) -> SignedHead | None: ...

    async def audit_records(self, *, after: int, limit: int) -> list[AuditRecord]: ...

    async def add_audit_head(self, head: SignedHead) -> None: ...


class HeadSigner:
    """Signs the head of the log while new records arrive: the node calls ``sign_once`` every
    ``interval`` seconds, and at stop.

    It signs only what it has just re-checked: the records since the last head must link to
    it, so tampering in between is reported, never laundered into a valid head."""

    def __init__(
        self,
        audit_log: AuditLog,
        signing_key: Callable[[], tuple[PrivateKey, x509.Certificate]],
        anchors: TrustAnchors,
        clock: Clock,
        *,
        node: str,
        interval: float = 60.0,
        batch: int = 5000,
    ) -> None:
        self._log = audit_log
        self._signing_key = signing_key  # asked each time: a rotated adapter key is used at once
        self._anchors = anchors
        self._clock = clock
        self._node = node
        self.interval = interval  # seconds between heads, as the node runs them
        self._batch = batch

    async def sign_once(self) -> SignedHead | None:
        """Sign the newest record if there is one since the last head; ``None`` if not (or broken)."""
        last = await self._log.last_audit_head()
        after, previous = (last.seq, last.hash) if last else (0, GENESIS)
        newest: AuditRecord | None = None
        while True:
            batch = await self._log.audit_records(after=after, limit=self._batch)
            if not batch:
                break
            report = await asyncio.to_thread(
                verify_log, batch, [], self._anchors, previous=previous, first_seq=after + 1
            )
            if report.finding is not None:
                log.error("audit log broken, not signing over it: %s", report.finding.message)
                return None
            newest = batch[-1]
            after, previous = newest.seq, newest.hash
        if newest is None:
            return None
        key, certificate = await asyncio.to_thread(self._signing_key)
        head = sign_head(
            seq=newest.seq,
            hash_=newest.hash,
            at=self._clock.now(),
            node=self._node,
            key=key,
            certificate=certificate,
        )
        await self._log.add_audit_head(head)
        log.info("audit head signed", extra={"seq": head.seq, "detail": {"hash": head.hash}})
        return head
