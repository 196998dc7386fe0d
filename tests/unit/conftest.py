"""An embedded node's use cases wired by hand, as ``gateway.runtime.node.Node`` wires them, over the
in-memory store and a manual clock: no database, no server, no TLS, no thread, no process.

The keys are real (the session's dev PKI), so every signature and seal is checked for real.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.adapters.network import NetworkAdapter
from gateway.domain.agencies import Registry
from gateway.domain.clock import ManualClock
from gateway.domain.transfer import frame
from gateway.domain.vocabulary import DeliveryState, Network, Priority
from gateway.exchange.courier import Courier, Outcome, carry_batch
from gateway.exchange.intake import Intake
from gateway.exchange.mailbox import Mailbox
from gateway.exchange.memory import MemoryStore
from gateway.exchange.notifications import Notifier
from gateway.exchange.ports import RouteJob
from gateway.infra.files.keys import file_trust, load_seal_key
from gateway.infra.files.registry_csv import load_registry
from gateway.pki.trust import RegistryTrust
from gateway.runtime.config import Config, load_config
from tests.conftest import make_package


class InlineCarrier:
    """Carries on the caller's own thread: the courier's CPU work, with nothing around it."""

    def __init__(self, adapters: dict[Network, NetworkAdapter], clock: ManualClock) -> None:
        self.adapters = adapters
        self._clock = clock
        self.batches: list[list[RouteJob]] = []

    async def carry(self, jobs: list[RouteJob]) -> list[Outcome]:
        self.batches.append(jobs)
        return carry_batch(jobs, self.adapters, self._clock)

    def close(self) -> None:
        pass


@dataclass
class Exchange:
    """One embedded node's core: intake, courier and mailbox over one store, clock and trust."""

    config: Config
    clock: ManualClock
    registry: Registry
    trust: RegistryTrust
    store: MemoryStore
    adapters: dict[Network, NetworkAdapter]
    carrier: InlineCarrier
    intake: Intake
    courier: Courier
    mailbox: Mailbox
    wakes: list[datetime] = field(default_factory=list)  # each on_accepted call: new work for the courier

    def package(
        self,
        sender: str,
        recipients: list[str],
        *,
        document_id: str | None = None,
        content: str = "Nội dung văn bản hành chính",
        priority: Priority = Priority.THUONG,
    ) -> bytes:
        """A package ``sender`` signed with its dev key, written now by the manual clock."""
        return make_package(
            self.config, sender, recipients, document_id=document_id, content=content, priority=priority,
            now=self.clock.now(),
        )  # fmt: skip

    async def carry_all(self) -> int:
        """Run the courier until nothing is left to claim; returns how many batches it carried."""
        batches = 0
        while await self.courier.run_once():
            batches += 1
        return batches

    async def states(self, doc_id: str) -> dict[str, DeliveryState]:
        return {d.recipient: d.state for d in await self.store.deliveries(doc_id)}


@pytest.fixture(scope="session")
def shared_config(template_home: Path) -> Config:
    """The session's home, read only: nothing in a unit test writes to it."""
    return load_config(template_home)


@pytest.fixture
def clock() -> ManualClock:
    # The dev certificates are valid from when the session made them: start the clock there.
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


def build_exchange(
    config: Config, clock: ManualClock, *, max_bytes: int | None = None, store: MemoryStore | None = None
) -> Exchange:
    registry = load_registry(config.registry)
    trust = file_trust(config.certs, registry)
    store = store or MemoryStore()
    adapters = {n: NetworkAdapter(load_seal_key(config.certs, n), trust, clock) for n in Network}
    carrier = InlineCarrier(adapters, clock)
    wakes: list[datetime] = []
    courier = Courier(store, carrier, clock, node="unit", batch=8)

    def woken() -> None:
        wakes.append(clock.now())
        courier.wake()

    intake = Intake(
        registry, store, trust, clock, max_bytes=max_bytes or config.max_package_bytes, on_accepted=woken
    )
    mailbox = Mailbox(registry, store, adapters, trust, clock, on_accepted=woken)
    return Exchange(config, clock, registry, trust, store, adapters, carrier, intake, courier, mailbox, wakes)


@pytest.fixture
def exchange(shared_config: Config, clock: ManualClock) -> Exchange:
    return build_exchange(shared_config, clock)


def framed(sealed: bytes | None, package: bytes | None) -> bytes:
    """A sealed header and its package as ``GET /v1/edocs/{id}`` sends them (what ``open_delivery`` opens)."""
    assert sealed is not None and package is not None
    return b"".join(frame(sealed, package)[1])


async def stops_when_cancelled_as_it_is_woken(worker: Courier | Notifier) -> bool:
    """Cancel an idle worker in the same turn of the loop as its wake-up (Node.stop while work
    arrives): whether its task ends. On Python 3.11 asyncio.wait_for swallowed such a cancel."""
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.05)  # resumed claims, nothing to do: waiting for a wake-up
    worker.wake()
    await asyncio.sleep(0)  # the wake-up is on its way to the worker's wait
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    if not done:
        task.cancel()  # once more, so that the test leaves nothing running
    return bool(done)
