"""Each hop refuses what was altered after the previous seal; a bad route is quarantined, never delivered."""

from __future__ import annotations

import base64
import sqlite3
from datetime import UTC, datetime

import pytest

from gateway.adapters.network import NetworkAdapter, SealKey
from gateway.agency_side.packages import open_delivery
from gateway.crypto.pki import Role
from gateway.domain import transfer as tr
from gateway.domain.clock import SystemClock
from gateway.domain.vocabulary import Classification, DeliveryState, Network, Priority
from gateway.domain.xmlsafe import parse_xml
from gateway.errors import CryptoError, DeliveryError
from gateway.infra.files.keys import load_seal_key
from gateway.infra.files.pki_dir import agency_paths, load_key_pair
from gateway.runtime.config import Config
from gateway.runtime.node import Node
from tests.conftest import A01, G22, I01, make_package, trust_for, wait_delivered
from tests.test_large_packages import large_package


@pytest.fixture
def adapters(config: Config) -> dict[Network, NetworkAdapter]:
    trust = trust_for(config)
    return {n: NetworkAdapter(load_seal_key(config.certs, n), trust, SystemClock()) for n in Network}


def sealed_by_government(config: Config, adapters: dict[Network, NetworkAdapter]) -> bytes:
    package = make_package(config, G22, [A01], subject="Chuyen giao qua cau noi")
    routing = tr.Routing(
        transfer_id="0123456789abcdef0123456789abcdef",
        kind="edoc",
        sender=G22,
        source=Network.GOVERNMENT,
        target=Network.PARTY,
        recipients=(tr.RecipientRef(A01, A01),),
        classification=Classification.NONE,
        priority=Priority.THUONG,
        package_digest=base64.b64encode(b"\0" * 32).decode(),
    )
    return adapters[Network.GOVERNMENT].seal(routing, tr.PackageRef.of(package, encrypted=False))


def test_bridge_verifies_then_reseals(config: Config, adapters) -> None:
    sealed = sealed_by_government(config, adapters)
    bridged = adapters[Network.PARTY].bridge(sealed, from_network=Network.GOVERNMENT)
    transfer, _ = adapters[Network.PARTY].open(bridged, sealed_by=Network.PARTY)
    assert [(h.network, h.action) for h in transfer.hops] == [
        (Network.GOVERNMENT, "sealed"),
        (Network.PARTY, "bridged"),
    ]
    assert transfer.hops[1].previous_seal == tr.seal_digest(parse_xml(sealed))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (A01.encode(), I01.encode()),  # re-routed to someone else
        (b"<gw:Size>", b"<gw:Size>1"),  # the carried package named with another size
        (b'action="sealed"', b'action="bridged"'),  # hop rewritten
    ],
)
def test_bridge_refuses_a_transfer_altered_after_its_seal(
    config: Config, adapters, old: bytes, new: bytes
) -> None:
    sealed = sealed_by_government(config, adapters)
    assert old in sealed
    with pytest.raises(DeliveryError, match="does not verify"):
        adapters[Network.PARTY].bridge(sealed.replace(old, new), from_network=Network.GOVERNMENT)


def test_recipient_side_refuses_an_altered_bridged_transfer(config: Config, adapters) -> None:
    bridged = adapters[Network.PARTY].bridge(
        sealed_by_government(config, adapters), from_network=Network.GOVERNMENT
    )
    tampered = bridged.replace(b"<gw:Form>signed", b"<gw:Form>encrypted")
    assert tampered != bridged
    with pytest.raises(DeliveryError, match="does not verify"):
        adapters[Network.PARTY].open(tampered, sealed_by=Network.PARTY)


def test_seal_of_another_network_is_refused(config: Config, adapters) -> None:
    sealed = sealed_by_government(config, adapters)
    # The government seal presented as if the front adapter had made it.
    with pytest.raises(DeliveryError, match="not by the adapter of the front network"):
        adapters[Network.PARTY].bridge(sealed, from_network=Network.FRONT)


def test_agency_key_cannot_seal(config: Config, adapters) -> None:
    cert, key, chain = load_key_pair(*agency_paths(config.certs, G22, Role.SIGN))
    impostor = NetworkAdapter(
        SealKey(Network.GOVERNMENT, "ADAPTER.GOVERNMENT", key, [cert, *chain]),
        trust_for(config),
        SystemClock(),
    )
    sealed = sealed_by_government(config, {**adapters, Network.GOVERNMENT: impostor})
    with pytest.raises(DeliveryError, match=f"sealed by {G22}"):
        adapters[Network.PARTY].bridge(sealed, from_network=Network.GOVERNMENT)


async def test_recipient_refuses_a_package_swapped_under_a_valid_seal(
    node: Node, config: Config, agency
) -> None:
    """An adapter (or its database) that swaps in another validly signed package is caught: beside
    the seal, by the digest the seal names; under a new seal, by the sender's signed digest."""
    status, body = await agency(G22).send(make_package(config, G22, [A01], subject="Thật"))
    await wait_delivered(node, body["id"])
    _, delivered = await agency(A01).call("GET", f"/v1/edocs/{body['id']}")
    sealed, _ = tr.unframe(delivered)
    transfer, _ = node.adapters[Network.PARTY].open(sealed, sealed_by=Network.PARTY)
    other = make_package(config, G22, [A01], subject="Giả", document_id=f"{G22},2026/11/22,9/X")
    beside = b"".join(tr.frame(sealed, other)[1])
    with pytest.raises(CryptoError, match=r"SHA-256 differs|bytes; the seal names"):
        open_delivery(beside, trust=trust_for(config), network=Network.PARTY, at=datetime.now(UTC))
    resealed = node.adapters[Network.PARTY].seal(transfer.routing, tr.PackageRef.of(other, encrypted=False))
    swapped = b"".join(tr.frame(resealed, other)[1])
    with pytest.raises(CryptoError, match="digest differs"):
        open_delivery(swapped, trust=trust_for(config), network=Network.PARTY, at=datetime.now(UTC))


@pytest.mark.parametrize("corrupt", ["broken", "flipped", "second part"])
async def test_corrupted_stored_package_is_quarantined_not_delivered(
    config: Config, home, corrupt: str
) -> None:
    node = Node(config)
    try:
        # Corrupt the stored package before the courier runs (a disk or an insider, say): replaced
        # outright, or one byte flipped (still well-formed XML: the courier never parses it again).
        # It is stored in parts (package_parts): a small package fits in its first; in a package
        # of two parts, a byte of the second is flipped.
        two_parts = corrupt == "second part"
        raw = (
            large_package(config, scan=bytes(range(256)) * 5000)
            if two_parts
            else make_package(config, G22, [A01])
        )
        accepted = await node.intake.submit(G22, raw)
        with sqlite3.connect(home / "gateway.db") as conn:
            query = "select data from package_parts where document = ? order by seq"
            parts = [data for (data,) in conn.execute(query, (accepted.id,))]
            assert len(parts) == (2 if two_parts else 1)
            stored = parts[-1]
            at = 100 if two_parts else stored.index(b"Subject>") + len(b"Subject>")
            bad = (
                b"<broken"
                if corrupt == "broken"
                else stored[:at] + bytes([stored[at] ^ 1]) + stored[at + 1 :]
            )
            update = "update package_parts set data = ? where document = ? and seq = ?"
            conn.execute(update, (bad, accepted.id, len(parts) - 1))
        await node.courier.run_once()
        [delivery] = await node.store.deliveries(accepted.id)
        assert delivery.state is DeliveryState.QUARANTINED
        assert await node.mailbox.inbox(A01) == []
        events = await node.store.events(accepted.id)
        quarantined = [e for e in events if e.kind == "quarantined"]
        assert quarantined and "changed since it was accepted" in quarantined[0].detail["reason"]
    finally:
        await node.stop()  # an unstarted node too: courier, checker processes, store
