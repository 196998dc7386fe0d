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
import multiprocessing
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from gateway import transfer as tr
from gateway.adapters.network import NetworkAdapter
from gateway.edxml import parse_xml
from gateway.errors import ClientError, DeliveryError
from gateway.levels import Network
from gateway.ports import Carried, Clock, NewEvent, RouteJob, Store, SystemClock

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


class ThreadCarrier:
    """Carries in one worker thread of this process: the simple default, and what tests use."""

    def __init__(self, adapters: Mapping[Network, NetworkAdapter], clock: Clock) -> None:
        self._adapters = adapters
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="carrier")

    async def carry(self, jobs: list[RouteJob]) -> list[Outcome]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, carry_batch, jobs, self._adapters, self._clock)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


_worker_adapters: dict[Network, NetworkAdapter] = {}
_worker_clock = SystemClock()


def _start_worker(certs_dir: str, registry_path: str) -> None:
    # Keys are loaded once per worker process: parsing PEM per document would cost 40x.
    from gateway.adapters.keystore import FileTrust, load_seal_key
    from gateway.agency import load_registry

    trust = FileTrust.from_dir(Path(certs_dir), load_registry(Path(registry_path)))
    for network in Network:
        _worker_adapters[network] = NetworkAdapter(
            load_seal_key(Path(certs_dir), network), trust, _worker_clock
        )


def _carry_in_worker(jobs: list[RouteJob]) -> list[Outcome]:
    return carry_batch(jobs, _worker_adapters, _worker_clock)


class ProcessCarrier:
    """Carries in worker processes, so sealing and verifying use every core, not one GIL."""

    def __init__(self, certs_dir: Path, registry_path: Path, *, workers: int) -> None:
        self._workers = max(1, workers)
        self._executor = ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=multiprocessing.get_context("spawn"),  # never fork a process that runs threads
            initializer=_start_worker,
            initargs=(str(certs_dir), str(registry_path)),
        )

    async def carry(self, jobs: list[RouteJob]) -> list[Outcome]:
        loop = asyncio.get_running_loop()
        size = -(-len(jobs) // self._workers)
        chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
        results = await asyncio.gather(
            *(loop.run_in_executor(self._executor, _carry_in_worker, c) for c in chunks)
        )
        return [outcome for chunk in results for outcome in chunk]

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class Courier:
    """Claims pending routes from the store, carries them, and delivers them into inboxes.

    ``lanes`` loops run at once so that the store's work for one batch overlaps the
    carrying of the next; claims never overlap (each is one transaction).
    """

    def __init__(
        self,
        store: Store,
        carrier: Carrier,
        clock: Clock,
        *,
        node: str,
        batch: int = 32,
        lanes: int = 1,
        lease_seconds: float = 60.0,
        idle_poll_seconds: float = 1.0,
    ) -> None:
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
        released = await self._store.release_claims(node=self._node)
        if released:
            log.info("resuming %d routes left unfinished by the previous run", released)
        await asyncio.gather(*(self._lane() for _ in range(self._lanes)))

    async def _lane(self) -> None:
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
        outcomes = await self._carrier.carry(jobs)
        done = [(job, result) for job, result in outcomes if isinstance(result, Carried)]
        if done:
            await self._store.complete_routes(done, now=self._clock.now())
        for job, result in outcomes:
            if isinstance(result, DeliveryError):
                log.warning("route %s of %s quarantined: %s", job.target, job.document.id, result.message)
                await self._store.quarantine_route(job, reason=result.message, now=self._clock.now())
        return True

    def close(self) -> None:
        self._carrier.close()
