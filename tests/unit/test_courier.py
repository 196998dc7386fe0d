"""The courier built directly: claims, carries and settles routes over the in-memory store."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from gateway.adapters.network import NetworkAdapter, SealKey
from gateway.agency_side.packages import open_delivery
from gateway.crypto.pki import Role
from gateway.domain.transfer import check_carried
from gateway.domain.vocabulary import DeliveryState, Network, Priority
from gateway.errors import DeliveryError, NotFound, PeerUnavailable, StoreError
from gateway.exchange.courier import Courier
from gateway.exchange.ports import StoredPackage
from gateway.infra.files.pki_dir import agency_paths, load_key_pair
from tests.conftest import A01, G22, H41, I01
from tests.unit.conftest import Exchange, InlineCarrier, framed, stops_when_cancelled_as_it_is_woken


class PeerNodes:
    """The nodes of other networks, as the courier sees them: up, down, or refusing."""

    def __init__(self, *networks: Network) -> None:
        self.networks = set(networks)
        self.sent: list[tuple[Network, bytes]] = []
        self.packages: list[bytes] = []  # as streamed to the peer
        self.down = False
        self.refusing = False

    def knows(self, network: Network) -> bool:
        return network in self.networks

    async def send(self, network: Network, sealed: bytes, package: StoredPackage) -> None:
        if self.down:
            raise PeerUnavailable(f"cannot reach the {network} node: connection refused")
        if self.refusing:
            raise DeliveryError(f"the {network} node refused the transfer: seal does not verify")
        self.sent.append((network, sealed))
        self.packages.append(b"".join([piece async for piece in package.pieces()]))
        assert len(self.packages[-1]) == package.size


def government_node(exchange: Exchange, peers: PeerNodes, *, give_up_after: float = 86_400.0) -> Courier:
    """The courier of a node that serves the government network only, over the same store."""
    adapters = {Network.GOVERNMENT: exchange.adapters[Network.GOVERNMENT]}
    carrier = InlineCarrier(adapters, exchange.clock)
    return Courier(
        exchange.store, carrier, exchange.clock, node="gov", peers=peers, give_up_after=give_up_after
    )


async def test_each_network_gets_its_seal_and_each_recipient_the_document_once(exchange: Exchange) -> None:
    accepted = await exchange.intake.submit(G22, exchange.package(G22, [A01, I01, H41]))
    assert await exchange.carry_all() == 1
    assert await exchange.states(accepted.id) == {
        A01: DeliveryState.DELIVERED, I01: DeliveryState.DELIVERED, H41: DeliveryState.DELIVERED,
    }  # fmt: skip
    for network in (Network.PARTY, Network.FRONT, Network.GOVERNMENT):
        sealed = framed(
            await exchange.store.sealed_for(accepted.id, network), await exchange.store.package(accepted.id)
        )
        opened = open_delivery(sealed, trust=exchange.trust, network=network, at=exchange.clock.now())
        assert opened.signer.code == G22  # the sender's own signature, end to end
        hops = [(h.network, h.action) for h in opened.transfer.hops]
        bridged = [] if network is Network.GOVERNMENT else [(network, "bridged")]
        assert hops == [(Network.GOVERNMENT, "sealed"), *bridged]

    trace = await exchange.store.events(accepted.id)
    assert sorted((e.recipient or "") for e in trace if e.kind == "delivered") == sorted([A01, I01, H41])
    assert sorted(e.network or "" for e in trace if e.kind == "sealed") == ["government"] * 3
    assert sorted(e.network or "" for e in trace if e.kind == "bridged") == ["front", "party"]
    assert await exchange.courier.run_once() is False
    replica = Courier(exchange.store, exchange.carrier, exchange.clock, node="replica")
    assert await replica.run_once() is False  # nothing is carried twice


async def test_a_claim_left_by_a_stopped_node_is_carried_once_its_lease_runs_out(exchange: Exchange) -> None:
    accepted = await exchange.intake.submit(G22, exchange.package(G22, [A01]))
    [left] = await exchange.store.claim_routes(
        node="crashed", limit=1, now=exchange.clock.now(), lease_seconds=60
    )
    assert await exchange.courier.run_once() is False  # its lease still holds
    exchange.clock.advance(seconds=61)
    assert await exchange.courier.run_once() is True
    assert exchange.carrier.batches[-1][0].route_id == left.route_id
    assert exchange.carrier.batches[-1][0].attempts == 2
    trace = await exchange.store.events(accepted.id)
    assert [e.kind for e in trace].count("delivered") == 1
    [item] = await exchange.mailbox.inbox(A01)
    assert item.delivery.delivered_at == exchange.clock.now()


async def test_a_bad_seal_is_quarantined_and_never_reaches_an_inbox(exchange: Exchange) -> None:
    # The government adapter's key swapped for an agency's: what it seals no hop may accept.
    cert, key, chain = load_key_pair(*agency_paths(exchange.config.certs, G22, Role.SIGN))
    impostor = NetworkAdapter(
        SealKey(Network.GOVERNMENT, "ADAPTER.GOVERNMENT", key, [cert, *chain]), exchange.trust, exchange.clock
    )
    exchange.carrier.adapters[Network.GOVERNMENT] = impostor
    accepted = await exchange.intake.submit(G22, exchange.package(G22, [A01, H41]))
    assert await exchange.courier.run_once() is True

    assert await exchange.states(accepted.id) == {
        A01: DeliveryState.QUARANTINED,
        H41: DeliveryState.QUARANTINED,
    }
    assert await exchange.store.pending_routes() == 0
    trace = await exchange.store.events(accepted.id)
    reasons = {e.network: e.detail["reason"] for e in trace if e.kind == "quarantined"}
    assert set(reasons) == {"party", "government"} and G22 in reasons["party"]
    assert "delivered" not in [e.kind for e in trace]
    assert await exchange.mailbox.inbox(A01) == [] and await exchange.mailbox.inbox(H41) == []
    with pytest.raises(NotFound):
        await exchange.mailbox.fetch(A01, accepted.id)


async def test_the_most_urgent_document_is_carried_first(exchange: Exchange) -> None:
    backlog = [
        await exchange.intake.submit(G22, exchange.package(G22, [A01], document_id=f"{G22},2026/11/22,{i}/B"))
        for i in range(10)
    ]
    urgent = await exchange.intake.submit(H41, exchange.package(H41, [A01], priority=Priority.HOA_TOC))
    await exchange.carry_all()
    assert exchange.carrier.batches[0][0].document.id == urgent.id
    assert [len(b) for b in exchange.carrier.batches] == [8, 3]
    inbox = await exchange.mailbox.inbox(A01)
    assert [i.document.id for i in inbox] == [urgent.id, *(b.id for b in backlog)]


async def test_a_route_to_a_peer_network_is_held_while_the_link_is_down(exchange: Exchange) -> None:
    peers = PeerNodes(Network.PARTY)
    courier = government_node(exchange, peers)
    accepted = await exchange.intake.submit(G22, exchange.package(G22, [A01, H41]))
    peers.down = True
    assert await courier.run_once() is True
    assert await exchange.states(accepted.id) == {A01: DeliveryState.PENDING, H41: DeliveryState.DELIVERED}
    assert await courier.run_once() is False  # held back, not retried in a tight loop

    exchange.clock.advance(seconds=1)
    assert await courier.run_once() is True  # tried again: still down, and the wait doubles
    peers.down = False
    exchange.clock.advance(seconds=0.5)
    assert await courier.run_once() is False
    exchange.clock.advance(seconds=1)
    assert await courier.run_once() is True

    assert await exchange.states(accepted.id) == {A01: DeliveryState.FORWARDED, H41: DeliveryState.DELIVERED}
    [(network, sealed)] = peers.sent
    assert network is Network.PARTY
    # What crossed is the government seal, which the party node's adapter verifies and bridges.
    bridged = exchange.adapters[Network.PARTY].bridge(sealed, from_network=Network.GOVERNMENT)
    transfer, _ = exchange.adapters[Network.PARTY].open(bridged, sealed_by=Network.PARTY)
    assert transfer.routing.transfer_id == accepted.id
    # The package went beside it, streamed from the store: the bytes the seal names.
    check_carried(transfer, peers.packages[0])  # raises unless they are
    retries = [e for e in await exchange.store.events(accepted.id) if e.kind == "retry"]
    assert [(e.network, e.detail["attempt"]) for e in retries] == [("party", 1), ("party", 2)]


async def test_a_route_whose_peer_stays_away_fails_and_an_operator_redrives_it(exchange: Exchange) -> None:
    peers = PeerNodes(Network.PARTY)
    courier = government_node(exchange, peers, give_up_after=60)
    accepted = await exchange.intake.submit(G22, exchange.package(G22, [A01]))
    peers.down = True
    await courier.run_once()
    exchange.clock.advance(seconds=61)
    await courier.run_once()
    assert await exchange.states(accepted.id) == {A01: DeliveryState.FAILED}
    [failed] = [e for e in await exchange.store.events(accepted.id) if e.kind == "failed"]
    assert failed.detail["reason"].startswith("gave up: ")

    assert await exchange.store.redrive(accepted.id, now=exchange.clock.now(), by="operator") == 1
    peers.down = False
    exchange.clock.advance(seconds=60)
    assert await courier.run_once() is True
    assert await exchange.states(accepted.id) == {A01: DeliveryState.FORWARDED}


async def test_a_transfer_the_peer_refuses_is_quarantined(exchange: Exchange) -> None:
    peers = PeerNodes(Network.PARTY)
    peers.refusing = True
    courier = government_node(exchange, peers)
    accepted = await exchange.intake.submit(G22, exchange.package(G22, [A01]))
    await courier.run_once()
    assert await exchange.states(accepted.id) == {A01: DeliveryState.QUARANTINED}
    assert peers.sent == [] and await courier.run_once() is False


async def test_a_courier_stops_when_cancelled_as_it_is_woken(exchange: Exchange) -> None:
    assert await stops_when_cancelled_as_it_is_woken(exchange.courier)


async def test_a_store_failure_does_not_end_the_courier(
    exchange: Exchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store answers one claim with an error (a database gone for a moment): the courier logs
    # it and carries on, as the notifier does; before, the failure ended its task for good and
    # nothing was delivered again until the node restarted.
    claim = exchange.store.claim_routes
    failures = [StoreError("the database is not answering")]

    async def claim_once_failing(**kwargs: object) -> object:
        if failures:
            raise failures.pop()
        return await claim(**kwargs)  # type: ignore[arg-type]

    async def release_failing(**kwargs: object) -> int:
        raise StoreError("the database is not answering yet")

    monkeypatch.setattr(exchange.store, "claim_routes", claim_once_failing)
    monkeypatch.setattr(exchange.store, "release_claims", release_failing)  # at start, too
    courier = Courier(exchange.store, exchange.carrier, exchange.clock, node="unit", idle_poll_seconds=0.01)
    task = asyncio.create_task(courier.run())
    try:
        accepted = await exchange.intake.submit(G22, exchange.package(G22, [A01]))
        courier.wake()
        for _ in range(200):
            if await exchange.states(accepted.id) == {A01: DeliveryState.DELIVERED}:
                break
            await asyncio.sleep(0.01)
        assert not failures and not task.done()
        assert await exchange.states(accepted.id) == {A01: DeliveryState.DELIVERED}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
