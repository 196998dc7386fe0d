"""Carrying accepted documents to their recipients' networks, as an asyncio worker over the store.

For each (document, target network) route: the sender network's adapter
seals a transfer; if the target is another network, that network's adapter
bridges it in (verify, hop, re-seal); the target adapter verifies the final
seal; only then are the route's deliveries put in the inboxes — in the same
transaction that stores the sealed transfer, so a crash delivers nothing
twice and loses nothing (an unfinished route is simply carried again).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Mapping
from concurrent.futures import Executor, ThreadPoolExecutor

from gateway import transfer as tr
from gateway.adapters.network import NetworkAdapter
from gateway.edxml import parse_xml
from gateway.errors import ClientError, DeliveryError
from gateway.levels import Network
from gateway.ports import Carried, Clock, NewEvent, RouteJob, Store

log = logging.getLogger(__name__)


def carry(job: RouteJob, adapters: Mapping[Network, NetworkAdapter], clock: Clock) -> Carried:
    """Seal, bridge and verify one route. Pure CPU work: safe to run in a worker thread."""
    doc = job.document
    source = adapters[doc.sender_network]
    target = adapters[job.target]
    routing = tr.Routing(
        transfer_id=doc.id,
        kind=doc.kind,
        sender=doc.sender,
        source=source.network,
        target=target.network,
        recipients=tuple(tr.RecipientRef(code, addressed) for code, addressed in job.recipients),
        classification=doc.classification,
        priority=doc.priority,
        package_digest=base64.b64encode(bytes.fromhex(doc.signed_digest)).decode("ascii"),
        response_for=doc.response_for,
    )
    try:
        package = parse_xml(job.package)
    except ClientError as exc:
        raise DeliveryError(f"stored package no longer parses: {exc.message}") from exc
    sealed = source.seal(routing, package)
    events = [NewEvent("sealed", clock.now(), doc.id, None, source.network.value, {"adapter": source.name})]
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


class Courier:
    """Claims pending routes from the store, carries them, and delivers them into inboxes."""

    def __init__(
        self,
        store: Store,
        adapters: Mapping[Network, NetworkAdapter],
        clock: Clock,
        *,
        node: str,
        batch: int = 32,
        lease_seconds: float = 60.0,
        idle_poll_seconds: float = 1.0,
        executor: Executor | None = None,
    ) -> None:
        self._store = store
        self._adapters = adapters
        self._clock = clock
        self._node = node
        self._batch = batch
        self._lease = lease_seconds
        self._idle = idle_poll_seconds
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="courier")
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Called when work was added, so the courier does not wait for its next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Carry routes until cancelled. Claims this node left behind (a crash) are taken back first."""
        released = await self._store.release_claims(node=self._node)
        if released:
            log.info("resuming %d routes left unfinished by the previous run", released)
        while True:
            carried_any = await self.run_once()
            if not carried_any:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._idle)
                self._wake.clear()

    async def run_once(self) -> bool:
        """Claim and carry one batch; returns whether there was anything to carry."""
        jobs = await self._store.claim_routes(
            node=self._node, limit=self._batch, now=self._clock.now(), lease_seconds=self._lease
        )
        if not jobs:
            return False
        loop = asyncio.get_running_loop()
        outcomes = await loop.run_in_executor(self._executor, self._carry_batch, jobs)
        done = [(job, result) for job, result in outcomes if isinstance(result, Carried)]
        if done:
            await self._store.complete_routes(done, now=self._clock.now())
        for job, result in outcomes:
            if isinstance(result, DeliveryError):
                log.warning("route %s of %s quarantined: %s", job.target, job.document.id, result.message)
                await self._store.quarantine_route(job, reason=result.message, now=self._clock.now())
        return True

    def _carry_batch(self, jobs: list[RouteJob]) -> list[tuple[RouteJob, Carried | Exception]]:
        outcomes: list[tuple[RouteJob, Carried | Exception]] = []
        for job in jobs:
            try:
                outcomes.append((job, carry(job, self._adapters, self._clock)))
            except DeliveryError as exc:
                outcomes.append((job, exc))
            except Exception as exc:
                # Not the package's fault (a bug, a key file gone): keep the claim, retry after the lease.
                log.exception("carrying %s to %s failed; will retry", job.document.id, job.target)
                outcomes.append((job, exc))
        return outcomes

    def close(self) -> None:
        self._executor.shutdown(wait=True)
