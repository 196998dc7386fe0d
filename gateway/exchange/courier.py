"""Carrying accepted documents to their recipients' networks, as an asyncio worker over the store.

For each (document, target network) route: the sender network's adapter
seals a transfer header naming the stored package by digest; if the target is
another network, that network's adapter bridges it in (verify, hop, re-seal);
the target adapter verifies the final seal, and the stored package is checked
against the digest it names; only then are the route's deliveries put in the inboxes — in the same
transaction that stores the sealed transfer, so a crash delivers nothing
twice and loses nothing (an unfinished route is simply carried again).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol

from gateway.adapters.network import NetworkAdapter
from gateway.domain import transfer as tr
from gateway.domain.clock import Clock
from gateway.domain.vocabulary import Classification, Network
from gateway.errors import DeliveryError, PeerUnavailable
from gateway.exchange.ports import (
    Carried,
    CourierStore,
    DocumentRecord,
    NewEvent,
    PackageChunks,
    Peers,
    RouteJob,
    StoredPackage,
)

log = logging.getLogger(__name__)


_HASH_IN_THREAD = 64 * 1024  # pieces from this size are hashed off the loop (hashlib lets go of the GIL)


async def package_ref(store: PackageChunks, doc: DocumentRecord, read: bytes | None = None) -> tr.PackageRef:
    """The stored package as a seal names it: by digest, never parsed again (the intake checked
    it, and every side that receives the bytes checks them against this digest before acting on
    them). Read in parts, one at a time: a 50 MB package is never in the node whole. Bytes
    changed at rest since acceptance (any part) are refused here, before anything is sealed."""
    digest, size = hashlib.sha256(), 0
    pieces = _given(read) if read is not None else store.package_chunks(doc.id)
    async for piece in pieces:
        if len(piece) >= _HASH_IN_THREAD:
            await asyncio.to_thread(digest.update, piece)
        else:
            digest.update(piece)
        size += len(piece)
    if doc.package_sha256 is not None and digest.hexdigest() != doc.package_sha256:
        raise DeliveryError("the stored package changed since it was accepted (its SHA-256 differs)")
    if size != doc.size:
        raise DeliveryError(f"the stored package is {size} bytes, not the {doc.size} accepted")
    return tr.PackageRef(
        base64.b64encode(digest.digest()).decode("ascii"),
        size,
        encrypted=doc.classification is not Classification.NONE,
    )


async def _given(data: bytes) -> AsyncIterator[bytes]:
    yield data  # a package of one part, read with the claim (``RouteJob.package``)


def carry(job: RouteJob, adapters: Mapping[Network, NetworkAdapter], clock: Clock) -> Carried:
    """Seal, bridge and verify one route. Pure CPU work: safe to run in a worker thread."""
    doc = job.document
    source = adapters[doc.sender_network]
    remote = job.target not in adapters  # that network runs its own node: we only seal for the crossing
    routing = tr.Routing(
        transfer_id=doc.id,
        kind=doc.kind,
        sender=doc.sender,
        source=source.network,
        target=job.target,
        recipients=tuple(tr.RecipientRef(code, addressed) for code, addressed in job.recipients),
        classification=doc.classification,
        priority=doc.priority,
        package_digest=base64.b64encode(bytes.fromhex(doc.signed_digest)).decode("ascii"),
        response_for=doc.response_for,
        document_id=doc.document_id,
        status_code=doc.status_code,
        due_at=doc.due_at,
        business_doc_type=doc.business_doc_type,
    )
    package = job.package_ref
    if package is None:  # a bug, not the package's fault: the claim is kept and retried
        raise RuntimeError("a route reached its carrier before the courier named its package")
    sealed = source.seal(routing, package)
    events = [NewEvent("sealed", clock.now(), doc.id, None, source.network.value, {"adapter": source.name})]
    if remote:
        return Carried(sealed=sealed, events=tuple(events), forward_to=job.target)
    target = adapters[job.target]
    if target is not source:
        sealed = target.bridge(sealed, from_network=source.network)
        events.append(
            NewEvent(
                "bridged",
                clock.now(),
                doc.id,
                None,
                target.network.value,
                {"from": source.network.value, "to": target.network.value, "adapter": target.name},
            )
        )
    opened, _ = target.open(sealed, sealed_by=target.network)
    if opened.routing.transfer_id != doc.id or opened.routing.recipients != routing.recipients:
        raise DeliveryError("the sealed transfer does not match the route it was made for")
    if opened.package != package:  # what goes into the inboxes is what the seal names
        raise DeliveryError("the sealed transfer names another package than the one it was made for")
    events.append(
        NewEvent(
            "seal_verified",
            clock.now(),
            doc.id,
            None,
            target.network.value,
            {"adapter": target.name, "hops": len(opened.hops)},
        )
    )
    return Carried(sealed=sealed, events=tuple(events))


Outcome = tuple[RouteJob, Carried | Exception]


def carry_batch(
    jobs: list[RouteJob], adapters: Mapping[Network, NetworkAdapter], clock: Clock
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for job in jobs:
        try:
            outcomes.append((job, carry(job, adapters, clock)))
        except DeliveryError as exc:
            outcomes.append((job, exc))
        except Exception as exc:
            # Not the package's fault (a bug, a key file gone): keep the claim, retry after the lease.
            log.exception("carrying %s to %s failed; will retry", job.document.id, job.target)
            outcomes.append((job, exc))
    return outcomes


class Carrier(Protocol):
    """Where the CPU work of carrying runs."""

    async def carry(self, jobs: list[RouteJob]) -> list[Outcome]: ...

    def close(self) -> None: ...


class Courier:
    """Claims pending routes from the store, carries them, and delivers them into inboxes.

    ``lanes`` loops run at once so that the store's work for one batch overlaps the
    carrying of the next; claims never overlap (each is one transaction).
    """

    def __init__(
        self,
        store: CourierStore,
        carrier: Carrier,
        clock: Clock,
        *,
        node: str,
        batch: int = 32,
        lanes: int = 1,
        lease_seconds: float = 60.0,
        idle_poll_seconds: float = 1.0,
        peers: Peers | None = None,
        give_up_after: float = 86_400.0,
        max_backoff: float = 60.0,
        on_delivered: Callable[[], None] = lambda: None,
    ) -> None:
        self._on_delivered = on_delivered  # the notifier: deliveries landed, maybe notifications too
        self._peers = peers
        self._give_up_after = timedelta(seconds=give_up_after)
        self._max_backoff = max_backoff
        self._down_until: dict[Network, datetime] = {}  # link state per peer network
        self._failures: dict[Network, int] = {}
        self._store = store
        self._carrier = carrier
        self._clock = clock
        self._node = node
        self._batch = batch
        self._lanes = lanes
        self._lease = lease_seconds
        self._idle = idle_poll_seconds
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Called when work was added, so the courier does not wait for its next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Carry routes until cancelled. Claims this node left behind (a crash) are taken back first."""
        try:
            released = await self._store.release_claims(node=self._node)
        except Exception:  # the database not answering yet: they come back after their lease
            log.exception("could not take back the routes this node left claimed; carrying on")
            released = 0
        if released:
            log.info("resuming %d routes left unfinished by the previous run", released)
        await asyncio.gather(*(self._lane() for _ in range(self._lanes)))

    async def _lane(self) -> None:
        while True:
            try:
                carried_any = await self.run_once()
            except Exception:
                # A store or carrier failure (a database gone for a moment, a carrier process
                # killed) must not end the lane: it ended the courier's task, and nothing was
                # delivered again until a restart. What it claimed comes back after the lease.
                log.exception("carrying failed; trying again")
                carried_any = False
            if not carried_any:
                with contextlib.suppress(TimeoutError):
                    # Not asyncio.wait_for: on Python 3.11 a cancel that arrives as the wake
                    # does is swallowed (wait_for returns the result), and this loop, cancelled
                    # by Node.stop, ran on: `gateway serve` ignored SIGTERM (seen under load).
                    async with asyncio.timeout(self._idle):
                        await self._wake.wait()
                self._wake.clear()

    async def run_once(self) -> bool:
        """Claim and carry one batch; returns whether there was anything to carry."""
        now = self._clock.now()
        down = [network for network, until in self._down_until.items() if until > now]
        jobs = await self._store.claim_routes(
            node=self._node, limit=self._batch, now=now, lease_seconds=self._lease, exclude=down
        )
        if not jobs:
            return False
        # Each package is named by its digest here, its parts read and hashed one at a time;
        # carriers (threads or processes) get the 32-byte digest, never the bytes.
        refs = await asyncio.gather(*(self._named(job) for job in jobs))
        for job, ref in zip(jobs, refs, strict=True):
            if isinstance(ref, DeliveryError):
                log.warning("route %s of %s quarantined: %s", job.target, job.document.id, ref.message)
                await self._store.quarantine_route(job, reason=ref.message, now=self._clock.now())
        jobs = [ref for ref in refs if isinstance(ref, RouteJob)]
        if not jobs:
            return True
        outcomes = await self._carrier.carry(jobs)
        done = [(job, c) for job, c in outcomes if isinstance(c, Carried) and c.forward_to is None]
        if done:
            await self._store.complete_routes(done, now=self._clock.now())
            self._on_delivered()
        forwards = [(job, c) for job, c in outcomes if isinstance(c, Carried) and c.forward_to is not None]
        if forwards:
            await self._forward(forwards)
        for job, result in outcomes:
            if isinstance(result, DeliveryError):
                log.warning("route %s of %s quarantined: %s", job.target, job.document.id, result.message)
                await self._store.quarantine_route(job, reason=result.message, now=self._clock.now())
        return True

    async def _named(self, job: RouteJob) -> RouteJob | DeliveryError:
        try:
            ref = await package_ref(self._store, job.document, job.package)
            return replace(job, package_ref=ref, package=None)  # carriers get the digest only
        except DeliveryError as exc:
            return exc

    async def _forward(self, items: list[tuple[RouteJob, Carried]]) -> None:
        """Hand sealed transfers to the peer nodes, in claim order; a route is done only when the
        peer confirmed it stored the transfer. An unreachable peer holds its routes back with
        bounded exponential back-off, so they go out in order when it returns."""
        done = []
        for job, carried in items:
            network = carried.forward_to
            assert network is not None and self._peers is not None
            now = self._clock.now()
            if self._down_until.get(network, now) > now:
                await self._hold(job, f"the link to the {network} node is down", self._down_until[network])
                continue
            try:
                await self._peers.send(network, carried.sealed, self._stored(job.document))
            except PeerUnavailable as exc:
                failures = self._failures[network] = self._failures.get(network, 0) + 1
                wait = min(self._max_backoff, 0.5 * 2 ** (failures - 1))
                self._down_until[network] = now + timedelta(seconds=wait)
                log.warning("link to the %s node down (%s); retrying in %.1f s", network, exc.message, wait)
                await self._hold(job, exc.message, self._down_until[network])
                continue
            except DeliveryError as exc:
                await self._store.quarantine_route(job, reason=exc.message, now=now)
                continue
            self._failures.pop(network, None)
            self._down_until.pop(network, None)
            done.append((job, carried))
        if done:
            await self._store.complete_routes(done, now=self._clock.now())

    def _stored(self, doc: DocumentRecord) -> StoredPackage:
        store = self._store
        return StoredPackage(doc.size, lambda: store.package_chunks(doc.id))

    async def _hold(self, job: RouteJob, reason: str, until: datetime) -> None:
        now = self._clock.now()
        if now - job.document.accepted_at > self._give_up_after:
            log.error("route %s of %s failed: %s", job.target, job.document.id, reason)
            await self._store.fail_route(job, reason=f"gave up: {reason}", now=now)
        else:
            await self._store.defer_route(job, reason=reason, not_before=until, now=now)

    def close(self) -> None:
        self._carrier.close()
