"""The storage port's contract, run against every ``Store``: in memory, SQLite and PostgreSQL.

Records are built directly (no package, no signature): what is tested is what the store keeps,
in which order it hands work out, and that each method is one transaction.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, update

from gateway.domain.body import PART_BYTES, Body, Spooled, body_size
from gateway.domain.vocabulary import Classification, DeliveryState, Network, Priority
from gateway.errors import DocumentConflict, StoreError
from gateway.exchange.deadlines import VIETNAM
from gateway.exchange.memory import MemoryStore
from gateway.exchange.ports import (
    Carried,
    NewDelivery,
    NewDocument,
    NewEvent,
    NewRoute,
    RouteJob,
    Store,
)
from gateway.infra.sql.engine import sqlite_url
from gateway.infra.sql.rows import PP, D
from gateway.infra.sql.store import SqlStore
from tests.conftest import A01, G12, G16, G22, H41, I01

T0 = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)
LEASE = 60.0
_serial = itertools.count(1)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    made: Store
    if request.param == "memory":
        made = MemoryStore()
    elif request.param == "sqlite":
        made = SqlStore(sqlite_url(tmp_path / "contract.db"))
    else:
        made = SqlStore(request.getfixturevalue("pg_database"))
    try:
        yield made
    finally:
        await made.close()


def new_id(at: datetime = T0) -> str:
    """32 hex digits ordered by creation, as ``gateway.exchange.intake.new_id`` makes them."""
    return f"{int(at.timestamp() * 1000):012x}{next(_serial):020x}"


def route(network: Network, *recipients: str | tuple[str, str, tuple[str, ...]]) -> NewRoute:
    deliveries = tuple(
        NewDelivery(r, r) if isinstance(r, str) else NewDelivery(r[0], r[1], r[2]) for r in recipients
    )
    return NewRoute(network, deliveries)


def document(
    sender: str = G22,
    routes: tuple[NewRoute, ...] = (),
    *,
    key: str | None = None,
    digest: str | None = None,
    priority: Priority = Priority.THUONG,
    at: datetime = T0,
    due_at: datetime | None = None,
    kind: str = "edoc",
    response_for: str | None = None,
    status_code: str | None = None,
    package: Body | None = None,
    doc_id: str | None = None,
    events: tuple[NewEvent, ...] | None = None,
    business_doc_type: int | None = None,
) -> NewDocument:
    doc_id = doc_id or new_id(at)
    key = key or f"{sender},2026/11/22,{doc_id[-6:]}/VP"
    return NewDocument(
        id=doc_id,
        kind=kind,
        sender=sender,
        sender_network=Network.GOVERNMENT if sender != A01 else Network.PARTY,
        doc_key=key,
        document_id=key if kind == "edoc" else None,
        response_for=response_for,
        status_code=status_code,
        signed_digest=digest or f"{next(_serial):064x}",
        signer=f"agency:{sender}",
        subject=f"Subject of {doc_id}" if kind == "edoc" else None,
        priority=priority,
        classification=Classification.NONE,
        accepted_at=at,
        package=package if package is not None else f"<edXML id='{doc_id}'/>".encode(),
        routes=routes or (route(Network.PARTY, A01),),
        events=events if events is not None else (NewEvent("accepted", at, doc_id, None, "government"),),
        due_at=due_at,
        business_doc_type=business_doc_type,
    )


def carried(
    job: RouteJob, tag: bytes | None = None, *, forward_to: Network | None = None, at: datetime = T0
) -> Carried:
    """What carrying ``job`` produced: sealed bytes (its own unless ``tag``) and a ``sealed`` record."""
    ev = NewEvent("sealed", at, job.document.id, None, "government", {"adapter": "gov"})
    return Carried(tag or b"sealed:" + job.document.id.encode(), (ev,), forward_to)


async def claim(
    store: Store, *, node: str = "n1", limit: int = 50, now: datetime = T0, **kw: Any
) -> list[RouteJob]:
    return await store.claim_routes(node=node, limit=limit, now=now, lease_seconds=LEASE, **kw)


async def deliver(store: Store, doc: NewDocument, *, now: datetime = T0) -> None:
    """Accept ``doc`` and carry all its routes into the inboxes."""
    await store.accept(doc)
    jobs = [j for j in await claim(store, now=now, limit=1000) if j.document.id == doc.id]
    await store.complete_routes([(j, carried(j, at=now)) for j in jobs], now=now)


def kinds(events: list[Any]) -> list[str]:
    return [e.kind for e in events]


async def pieces(store: Store, doc_id: str, start: int = 0, end: int | None = None) -> list[bytes]:
    return [piece async for piece in store.package_chunks(doc_id, start, end)]


async def whole(store: Store, doc_id: str) -> bytes:
    return b"".join(await pieces(store, doc_id))


# --- packages in parts --------------------------------------------------------------------------


async def test_a_package_is_read_back_in_pieces_of_at_most_a_part(store: Store) -> None:
    data = os.urandom(2 * PART_BYTES + 12_345)  # three parts, the last one short
    doc = document(package=data)
    await store.accept(doc)
    assert await store.package(doc.id) == data
    got = await pieces(store, doc.id)
    assert [len(p) for p in got] == [PART_BYTES, PART_BYTES, 12_345] and b"".join(got) == data
    record = await store.document(doc.id)
    assert record is not None and record.size == len(data)
    assert record.package_sha256 == hashlib.sha256(data).hexdigest()
    # Ranges: inside one part, across a boundary, to the end, past the end, empty, unknown.
    ranges = [(5, 90), (PART_BYTES - 7, PART_BYTES + 9), (PART_BYTES + 1, None), (0, PART_BYTES)]
    ranges += [(2 * PART_BYTES, 10 * PART_BYTES), (77, 77), (len(data), None)]
    for start, end in ranges:
        got = await pieces(store, doc.id, start, end)
        assert b"".join(got) == data[start:end], (start, end)
        assert all(0 < len(p) <= PART_BYTES for p in got)
    assert await pieces(store, "0" * 32) == []
    [job] = await claim(store)
    assert job.package is None  # more than one part: the courier reads them one at a time


async def test_a_spooled_package_is_stored_in_parts_from_its_file(store: Store, tmp_path: Path) -> None:
    data = os.urandom(PART_BYTES + 1)
    path = tmp_path / "up-1"
    path.write_bytes(data)
    doc = document(package=Spooled(str(path), len(data), hashlib.sha256(data).hexdigest()))
    await store.accept(doc)
    path.unlink()  # the request's spool file goes when the request ends: the store keeps its own copy
    assert await whole(store, doc.id) == data and await store.package(doc.id) == data

    # A spool file that is not what was counted as it arrived is refused, and nothing is stored.
    path.write_bytes(data[:-1] + b"!")
    changed = document(package=Spooled(str(path), len(data), hashlib.sha256(data).hexdigest()))
    with pytest.raises(StoreError):
        await store.accept(changed)
    path.write_bytes(data[:-1])
    short = document(package=Spooled(str(path), len(data), hashlib.sha256(data).hexdigest()))
    with pytest.raises(StoreError):
        await store.accept(short)
    assert await store.document(changed.id) is None and await store.document(short.id) is None
    assert await pieces(store, changed.id) == [] and await pieces(store, short.id) == []


async def test_a_package_stored_before_parts_is_read_from_its_column(store: Store) -> None:
    if not isinstance(store, SqlStore):
        pytest.skip("documents stored before migration 0007 exist in SQL stores only")
    data = os.urandom(PART_BYTES + 500)
    doc = document(package=data)
    await store.accept(doc)

    def as_before_0007(conn: Any) -> None:  # how 0006 stored it: the blob in documents.package
        conn.execute(delete(PP).where(PP.c.document == doc.id))
        conn.execute(update(D).where(D.c.id == doc.id).values(package=data, parts=None))

    await store.database.write(as_before_0007)
    assert await store.package(doc.id) == data
    got = await pieces(store, doc.id)
    assert [len(p) for p in got] == [PART_BYTES, 500] and b"".join(got) == data
    assert b"".join(await pieces(store, doc.id, PART_BYTES - 3, PART_BYTES + 3)) == data[PART_BYTES - 3 :][:6]
    [job] = await claim(store)  # claimed as any other; its package is read from the column
    assert job.document.size == len(data)


# --- accepting --------------------------------------------------------------------------------------


async def test_accept_keeps_the_document_its_routes_and_deliveries(store: Store) -> None:
    due = datetime(2026, 11, 25, 17, 0, tzinfo=VIETNAM)
    doc = document(
        G22,
        (route(Network.PARTY, A01), route(Network.GOVERNMENT, H41, (G12, G16, (G16, G12)))),
        priority=Priority.KHAN,
        due_at=due,
        events=(
            NewEvent("accepted", T0, None, None, "government", {"kind": "edoc", "size": 3}),
            NewEvent("routed", T0, None, None, "party", {"recipients": [A01]}),
        ),
    )
    assert await store.accept(doc) == (doc.id, True)

    record = await store.document(doc.id)
    assert record is not None
    assert (record.id, record.kind, record.sender, record.sender_network) == (
        doc.id, "edoc", G22, Network.GOVERNMENT,
    )  # fmt: skip
    assert (record.document_id, record.signed_digest, record.subject, record.signer) == (
        doc.document_id, doc.signed_digest, doc.subject, f"agency:{G22}",
    )  # fmt: skip
    assert (record.priority, record.classification, record.size) == (Priority.KHAN, Classification.NONE,
                                                                      body_size(doc.package))  # fmt: skip
    assert record.accepted_at == T0 and record.due_at == due and record.due_at.utcoffset() == timedelta(0)
    assert await store.package(doc.id) == doc.package
    deliveries = await store.deliveries(doc.id)
    assert [(d.recipient, d.addressed, d.chain, d.network, d.state) for d in deliveries] == [
        (A01, A01, (), Network.PARTY, DeliveryState.PENDING),
        (H41, H41, (), Network.GOVERNMENT, DeliveryState.PENDING),
        (G12, G16, (G16, G12), Network.GOVERNMENT, DeliveryState.PENDING),
    ]
    assert all(d.delivered_at is None and d.fetched_at is None for d in deliveries)
    assert await store.pending_routes() == 2
    assert await store.sealed_for(doc.id, Network.PARTY) is None
    assert await store.document("0" * 32) is None and await store.package("0" * 32) is None
    assert await store.deliveries("0" * 32) == []


async def test_accept_is_idempotent_and_a_changed_resend_conflicts(store: Store) -> None:
    first = document(G22, key="G22,2026/11/22,1/VP", digest="ab" * 32)
    assert await store.accept(first) == (first.id, True)
    again = document(G22, key="G22,2026/11/22,1/VP", digest="ab" * 32)  # a new id, the same signed content
    assert await store.accept(again) == (first.id, False)
    assert await store.document(again.id) is None
    assert len(await store.deliveries(first.id)) == 1 and await store.pending_routes() == 1

    changed = document(G22, key="G22,2026/11/22,1/VP", digest="cd" * 32)
    with pytest.raises(DocumentConflict, match="G22,2026/11/22,1/VP"):
        await store.accept(changed)
    assert await store.document(changed.id) is None

    other_sender = document(H41, key="G22,2026/11/22,1/VP", digest="cd" * 32)  # keys are per sender
    assert await store.accept(other_sender) == (other_sender.id, True)
    assert await store.pending_routes() == 2


async def test_an_accept_that_breaks_a_constraint_stores_nothing(store: Store) -> None:
    first = document(G22)
    await store.accept(first)
    before = await store.events(first.id)
    same_id = document(H41, doc_id=first.id, events=(NewEvent("accepted", T0, first.id),))
    with pytest.raises(StoreError):
        await store.accept(same_id)
    twice = document(H41, (route(Network.PARTY, A01), route(Network.PARTY, I01)))  # one route per network
    with pytest.raises(StoreError):
        await store.accept(twice)
    assert await store.document(twice.id) is None and await store.deliveries(twice.id) == []
    assert await store.events(first.id) == before and await store.events(twice.id) == []
    assert await store.pending_routes() == 1
    with pytest.raises(StoreError):
        await store.accept(document(H41, at=datetime(2026, 11, 22, 8, 0)))  # naive: whose 8 o'clock?


# --- claiming ---------------------------------------------------------------------------------------


async def test_claims_go_most_urgent_first_then_fairly_between_senders_then_oldest(store: Store) -> None:
    batch = [document(G22, at=T0 + timedelta(seconds=i)) for i in range(3)]
    for doc in batch:
        await store.accept(doc)
    single = document(H41, at=T0 + timedelta(seconds=5))
    urgent = document(I01, priority=Priority.HOA_TOC, at=T0 + timedelta(seconds=6))
    await store.accept(single)
    await store.accept(urgent)

    jobs = await claim(store, limit=10, now=T0 + timedelta(minutes=1))
    # The single document of H41 goes right after the head of G22's batch, not after all of it.
    assert [j.document.id for j in jobs] == [urgent.id, batch[0].id, single.id, batch[1].id, batch[2].id]
    assert all(j.attempts == 1 and j.target is Network.PARTY for j in jobs)
    assert jobs[0].recipients == ((A01, A01),) and await whole(store, urgent.id) == urgent.package
    assert jobs[0].package == urgent.package  # one part: read with the claim, not again to hash it
    assert jobs[0].document.priority is Priority.HOA_TOC and jobs[0].document.size == len(urgent.package)


async def test_a_claim_takes_at_most_limit_in_order_and_holds_them_for_the_lease(store: Store) -> None:
    docs = [document(G22, at=T0 + timedelta(seconds=i)) for i in range(3)]
    for doc in docs:
        await store.accept(doc)
    [first] = await claim(store, node="n1", limit=1)
    assert first.document.id == docs[0].id
    later = await claim(store, node="n2", limit=5, now=T0 + timedelta(seconds=LEASE))
    assert [j.document.id for j in later] == [docs[1].id, docs[2].id]  # n1's lease ends after, not at, T0+60
    assert await claim(store, node="n2", now=T0 + timedelta(seconds=LEASE)) == []
    again = await claim(store, node="n2", limit=1, now=T0 + timedelta(seconds=LEASE, microseconds=1))
    assert [(j.route_id, j.attempts) for j in again] == [(first.route_id, 2)]  # n1 stopped: taken back
    assert await claim(store, node="n3", limit=0, now=T0 + timedelta(hours=1)) == []


async def test_routes_into_an_excluded_network_stay_where_they_are(store: Store) -> None:
    doc = document(
        G22, (route(Network.PARTY, A01), route(Network.FRONT, I01), route(Network.GOVERNMENT, H41))
    )
    await store.accept(doc)
    jobs = await claim(store, exclude=[Network.PARTY, Network.FRONT])
    assert [j.target for j in jobs] == [Network.GOVERNMENT] and jobs[0].recipients == ((H41, H41),)
    assert {j.target for j in await claim(store, node="n2")} == {Network.PARTY, Network.FRONT}


async def test_release_claims_gives_back_only_that_nodes_pending_routes(store: Store) -> None:
    a, b, c = (document(G22, at=T0 + timedelta(seconds=i)) for i in range(3))
    for doc in (a, b, c):
        await store.accept(doc)
    mine = await claim(store, node="n1", limit=2)
    theirs = await claim(store, node="n2", limit=1)
    await store.complete_routes([(mine[0], carried(mine[0]))], now=T0)
    assert await store.release_claims(node="n1") == 1  # the done one is not held any more
    assert await store.release_claims(node="n1") == 0
    back = await claim(store, node="n3")
    assert [j.document.id for j in back] == [b.id]  # n2's claim on c still holds
    assert theirs[0].document.id == c.id


# --- settling routes --------------------------------------------------------------------------------


async def test_complete_routes_delivers_exactly_once(store: Store) -> None:
    doc = document(G22, (route(Network.PARTY, A01), route(Network.GOVERNMENT, H41, G12)))
    await store.accept(doc)
    jobs = await claim(store)
    later = T0 + timedelta(seconds=3)
    party = next(j for j in jobs if j.target is Network.PARTY)
    await store.complete_routes([(party, carried(party, b"party-seal", at=later))], now=later)

    deliveries = {d.recipient: d for d in await store.deliveries(doc.id)}
    assert deliveries[A01].state is DeliveryState.DELIVERED and deliveries[A01].delivered_at == later
    assert deliveries[H41].state is DeliveryState.PENDING and deliveries[G12].delivered_at is None
    assert await store.sealed_for(doc.id, Network.PARTY) == b"party-seal"
    assert await store.sealed_for(doc.id, Network.GOVERNMENT) is None
    assert await store.pending_routes() == 1
    trace = await store.events(doc.id)
    assert [(e.recipient, e.network) for e in trace if e.kind == "delivered"] == [(A01, "party")]
    assert [e.detail for e in trace if e.kind == "sealed"] == [{"adapter": "gov"}]

    # A second completion of the same route (another replica, a retry) changes and records nothing.
    count = len(await store.events(doc.id))
    await store.complete_routes(
        [(party, carried(party, b"other-seal", at=later))], now=later + timedelta(seconds=1)
    )
    assert await store.sealed_for(doc.id, Network.PARTY) == b"party-seal"
    assert len(await store.events(doc.id)) == count
    assert (await store.deliveries(doc.id))[0].delivered_at == later

    gov = next(j for j in jobs if j.target is Network.GOVERNMENT)
    await store.complete_routes(
        [(gov, carried(gov, b"gov-seal")), (gov, carried(gov, b"gov-seal"))], now=later
    )
    delivered = [e.recipient for e in await store.events(doc.id) if e.kind == "delivered"]
    assert delivered == [A01, H41, G12]
    assert await store.pending_routes() == 0 and await claim(store, now=T0 + timedelta(hours=1)) == []


async def test_two_nodes_that_carried_one_route_deliver_it_once(store: Store) -> None:
    doc = document(G22)
    await store.accept(doc)
    [slow] = await claim(store, node="n1")
    [fast] = await claim(store, node="n2", now=T0 + timedelta(seconds=LEASE + 1))  # n1's lease ran out
    assert fast.route_id == slow.route_id and fast.attempts == 2
    await store.complete_routes([(fast, carried(fast, b"n2"))], now=T0 + timedelta(seconds=62))
    await store.complete_routes([(slow, carried(slow, b"n1"))], now=T0 + timedelta(seconds=63))
    assert await store.sealed_for(doc.id, Network.PARTY) == b"n2"
    assert [e.kind for e in await store.events(doc.id)].count("delivered") == 1


async def test_a_route_carried_to_a_peer_node_is_forwarded_not_delivered(store: Store) -> None:
    doc = document(G22)
    await store.accept(doc)
    [job] = await claim(store)
    await store.complete_routes([(job, carried(job, b"for-the-crossing", forward_to=Network.PARTY))], now=T0)
    [d] = await store.deliveries(doc.id)
    assert d.state is DeliveryState.FORWARDED and d.delivered_at == T0
    assert [(e.kind, e.recipient) for e in await store.events(doc.id)][-1] == ("forwarded", A01)
    assert await store.inbox(A01, include_fetched=True, limit=10) == []


async def test_a_deferred_route_waits_until_not_before(store: Store) -> None:
    doc = document(G22)
    await store.accept(doc)
    [job] = await claim(store)
    not_before = T0 + timedelta(seconds=30)
    await store.defer_route(job, reason="the link to the party node is down", not_before=not_before, now=T0)
    assert await claim(store, now=T0 + timedelta(seconds=29)) == []
    [retry] = await claim(store, now=T0 + timedelta(seconds=31))
    assert retry.route_id == job.route_id and retry.attempts == 2
    [ev] = [e for e in await store.events(doc.id) if e.kind == "retry"]
    assert ev.network == "party" and ev.detail == {
        "reason": "the link to the party node is down",
        "attempt": 1,
        "next_attempt_at": not_before.isoformat(),
    }
    assert [d.state for d in await store.deliveries(doc.id)] == [DeliveryState.PENDING]


async def test_a_failed_route_waits_for_a_redrive(store: Store) -> None:
    doc = document(G22, (route(Network.PARTY, A01), route(Network.FRONT, I01)))
    await store.accept(doc)
    jobs = {j.target: j for j in await claim(store)}
    await store.fail_route(jobs[Network.PARTY], reason="gave up: link down", now=T0)
    states = {d.recipient: d.state for d in await store.deliveries(doc.id)}
    assert states == {A01: DeliveryState.FAILED, I01: DeliveryState.PENDING}
    assert await store.pending_routes() == 1
    assert [j.target for j in await claim(store, now=T0 + timedelta(hours=1))] == [Network.FRONT]
    [failed] = [e for e in await store.events(doc.id) if e.kind == "failed"]
    assert (failed.network, failed.detail) == ("party", {"reason": "gave up: link down"})

    assert await store.redrive(doc.id, now=T0, by="operator") == 1
    [redriven] = [e for e in await store.events(doc.id) if e.kind == "redriven"]
    assert redriven.detail == {"routes": 1, "by": "operator"}
    assert {d.recipient: d.state for d in await store.deliveries(doc.id)}[A01] is DeliveryState.PENDING
    [again] = await claim(store, node="n2", now=T0 + timedelta(hours=2), exclude=[Network.FRONT])
    assert (again.target, again.attempts) == (Network.PARTY, 1)  # a re-drive starts the count again
    assert await store.redrive(doc.id, now=T0, by="operator") == 0
    assert kinds(await store.events(doc.id)).count("redriven") == 1


async def test_a_quarantined_route_never_reaches_an_inbox(store: Store) -> None:
    doc = document(G22, (route(Network.PARTY, A01), route(Network.GOVERNMENT, H41)))
    await store.accept(doc)
    jobs = {j.target: j for j in await claim(store)}
    await store.quarantine_route(jobs[Network.PARTY], reason="seal does not verify", now=T0)
    await store.complete_routes(
        [(jobs[Network.PARTY], carried(jobs[Network.PARTY]))], now=T0
    )  # a late success changes nothing
    states = {d.recipient: d.state for d in await store.deliveries(doc.id)}
    assert states == {A01: DeliveryState.QUARANTINED, H41: DeliveryState.PENDING}
    assert await store.sealed_for(doc.id, Network.PARTY) is None
    assert await store.redrive(doc.id, now=T0, by="operator") == 0  # quarantine is not a failure to retry
    [q] = [e for e in await store.events(doc.id) if e.kind == "quarantined"]
    assert (q.network, q.detail) == ("party", {"reason": "seal does not verify"})
    assert "delivered" not in kinds(await store.events(doc.id))

    # Giving up on a route another node has finished meanwhile leaves it done and delivered.
    await store.complete_routes(
        [(jobs[Network.GOVERNMENT], carried(jobs[Network.GOVERNMENT], b"gov"))], now=T0
    )
    await store.fail_route(jobs[Network.GOVERNMENT], reason="late", now=T0)
    assert {d.recipient: d.state for d in await store.deliveries(doc.id)}[H41] is DeliveryState.DELIVERED
    assert await store.redrive(doc.id, now=T0, by="operator") == 0


# --- inbound federation -----------------------------------------------------------------------------


async def test_a_transfer_taken_over_from_a_peer_is_stored_once_and_in_the_inbox(store: Store) -> None:
    doc = document(G22, (route(Network.PARTY, A01, I01),))
    later = T0 + timedelta(seconds=2)
    assert await store.accept_forwarded(doc, b"bridged-seal", now=later) is True
    deliveries = await store.deliveries(doc.id)
    assert [(d.recipient, d.state, d.delivered_at) for d in deliveries] == [
        (A01, DeliveryState.DELIVERED, later),
        (I01, DeliveryState.DELIVERED, later),
    ]
    assert await store.sealed_for(doc.id, Network.PARTY) == b"bridged-seal"
    assert await store.pending_routes() == 0 and await claim(store) == []
    trace = await store.events(doc.id)
    assert [(e.kind, e.recipient) for e in trace] == [
        ("accepted", None),
        ("delivered", A01),
        ("delivered", I01),
    ]

    assert await store.accept_forwarded(doc, b"bridged-seal", now=later) is False
    assert len(await store.events(doc.id)) == 3
    [item] = await store.inbox(A01, include_fetched=False, limit=10)
    assert item.document.id == doc.id and item.delivery.state is DeliveryState.DELIVERED


# --- the mailbox ------------------------------------------------------------------------------------


async def test_an_inbox_lists_what_waits_most_urgent_first_then_oldest(store: Store) -> None:
    old = document(G22, at=T0)
    urgent = document(H41, priority=Priority.THUONG_KHAN, at=T0 + timedelta(seconds=1))
    new = document(G12, at=T0 + timedelta(seconds=2))
    for doc in (new, urgent, old):
        await deliver(store, doc)
    not_yet = document(G22, at=T0 + timedelta(seconds=3))
    await store.accept(not_yet)
    elsewhere = document(G22, (route(Network.FRONT, I01),), at=T0 + timedelta(seconds=4))
    await deliver(store, elsewhere)

    inbox = await store.inbox(A01, include_fetched=False, limit=10)
    assert [i.document.id for i in inbox] == [urgent.id, old.id, new.id]
    assert all(i.delivery.recipient == A01 and i.delivery.state is DeliveryState.DELIVERED for i in inbox)
    assert inbox[0].document.sender == H41 and inbox[0].document.subject == urgent.subject
    assert [i.document.id for i in await store.inbox(A01, include_fetched=False, limit=2)] == [
        urgent.id,
        old.id,
    ]

    assert await store.mark_fetched(old.id, A01, now=T0, receipt=None) is True
    assert [i.document.id for i in await store.inbox(A01, include_fetched=False, limit=10)] == [
        urgent.id,
        new.id,
    ]
    with_fetched = await store.inbox(A01, include_fetched=True, limit=10)
    assert [(i.document.id, i.delivery.state) for i in with_fetched] == [
        (urgent.id, DeliveryState.DELIVERED),
        (old.id, DeliveryState.FETCHED),
        (new.id, DeliveryState.DELIVERED),
    ]


async def test_the_first_fetch_stores_its_receipt_and_records_in_one_go(store: Store) -> None:
    doc = document(G22, (route(Network.PARTY, A01, I01),))
    await deliver(store, doc)
    fetched_at = T0 + timedelta(minutes=5)
    receipt = document(
        A01,
        (route(Network.GOVERNMENT, G22),),
        kind="status",
        response_for=doc.id,
        status_code="01",
        at=fetched_at,
        events=(NewEvent("status", fetched_at, doc.id, A01, "party", {"status": "01"}),),
    )
    fetched = NewEvent("fetched", fetched_at, doc.id, A01, "party", {"receipt_issued": True})
    assert await store.mark_fetched(doc.id, A01, now=fetched_at, receipt=receipt, events=[fetched]) is True

    mine = {d.recipient: d for d in await store.deliveries(doc.id)}
    assert mine[A01].state is DeliveryState.FETCHED and mine[A01].fetched_at == fetched_at
    assert mine[I01].state is DeliveryState.DELIVERED and mine[I01].fetched_at is None
    [(status, package)] = await store.statuses_for(doc.id)
    assert (status.id, status.status_code, status.sender, package) == (receipt.id, "01", A01, receipt.package)
    assert [i.document.id for i in await store.inbox(G22, include_fetched=False, limit=10)] == []
    assert await store.pending_routes() == 1  # the receipt goes back to the sender like any document
    trace = [(e.kind, e.recipient, e.detail) for e in await store.events(doc.id)]
    assert trace[-2:] == [("status", A01, {"status": "01"}), ("fetched", A01, {"receipt_issued": True})]

    # Later fetches change nothing and record nothing; so do fetches of what is not in the inbox.
    again = document(
        A01, (route(Network.GOVERNMENT, G22),), kind="status", response_for=doc.id, status_code="01"
    )
    assert (
        await store.mark_fetched(doc.id, A01, now=fetched_at + timedelta(1), receipt=again, events=[fetched])
        is False
    )
    assert await store.mark_fetched(doc.id, H41, now=fetched_at, receipt=None, events=[fetched]) is False
    assert len(await store.events(doc.id)) == len(trace) and len(await store.statuses_for(doc.id)) == 1
    assert await store.document(again.id) is None
    assert {d.recipient: d.fetched_at for d in await store.deliveries(doc.id)}[A01] == fetched_at


async def test_a_fetch_whose_receipt_cannot_be_stored_leaves_the_delivery_unfetched(store: Store) -> None:
    doc = document(G22)
    await deliver(store, doc)
    pending = document(H41)
    await store.accept(pending)
    assert await store.mark_fetched(pending.id, A01, now=T0, receipt=None) is False  # not delivered yet

    clash = document(A01, (route(Network.GOVERNMENT, G22),), kind="status", response_for=doc.id,
                     status_code="01", doc_id=pending.id)  # fmt: skip
    fetched = NewEvent("fetched", T0, doc.id, A01, "party", {"receipt_issued": True})
    before = await store.events(doc.id)
    with pytest.raises(StoreError):
        await store.mark_fetched(doc.id, A01, now=T0, receipt=clash, events=[fetched])
    [d] = await store.deliveries(doc.id)
    assert d.state is DeliveryState.DELIVERED and d.fetched_at is None
    assert await store.events(doc.id) == before and await store.statuses_for(doc.id) == []
    assert await store.mark_fetched(doc.id, A01, now=T0, receipt=None, events=[fetched]) is True


async def test_statuses_answering_a_document_come_oldest_first(store: Store) -> None:
    doc = document(G22, (route(Network.PARTY, A01, I01),))
    await store.accept(doc)
    back = (route(Network.GOVERNMENT, G22),)
    answers = [
        document(
            I01, back, kind="status", response_for=doc.id, status_code="03", at=T0 + timedelta(seconds=9)
        ),
        document(
            A01, back, kind="status", response_for=doc.id, status_code="01", at=T0 + timedelta(seconds=5)
        ),
        document(
            A01, back, kind="status", response_for=doc.id, status_code="05", at=T0 + timedelta(seconds=7)
        ),
    ]
    for answer in answers:
        await store.accept(answer)
    unrelated = document(A01, back, kind="status", response_for="f" * 32, status_code="01")
    await store.accept(unrelated)
    statuses = await store.statuses_for(doc.id)
    assert [(s.sender, s.status_code) for s, _ in statuses] == [(A01, "01"), (A01, "05"), (I01, "03")]
    assert [pkg for _, pkg in statuses] == [answers[1].package, answers[2].package, answers[0].package]
    assert await store.statuses_for(answers[0].id) == []


async def test_edocs_are_found_by_document_id_across_senders_oldest_first(store: Store) -> None:
    shared = f"{G22},2026/11/30,15/VPCP-TH"
    first = document(G22, key=shared, at=T0 + timedelta(seconds=1))
    other = document(H41, key=shared, at=T0)  # another sender wrote the same DocumentId
    for doc in (first, other, document(G22)):
        await store.accept(doc)
    answer = document(A01, kind="status", key=shared, response_for=first.id, status_code="13")
    await store.accept(answer)
    assert [(d.id, d.sender) for d in await store.edocs_with_document_id(shared)] == [
        (other.id, H41),
        (first.id, G22),
    ]
    assert await store.edocs_with_document_id(f"{G22},2026/11/30,16/VPCP-TH") == []


async def test_recall_statuses_are_read_for_many_documents_at_once(store: Store) -> None:
    first, second, quiet = (document(G22, (route(Network.PARTY, A01, I01),)) for _ in range(3))
    for doc in (first, second, quiet):
        await store.accept(doc)
    back = (route(Network.GOVERNMENT, G22),)
    to_all = (route(Network.PARTY, A01, I01),)

    def answer(sender: str, doc: NewDocument, code: str, seconds: int) -> NewDocument:
        routes = to_all if sender == G22 else back
        at = T0 + timedelta(seconds=seconds)
        return document(sender, routes, kind="status", response_for=doc.id, status_code=code, at=at)

    answers = [
        answer(A01, first, "15", 8),
        answer(G22, first, "13", 4),
        answer(A01, first, "03", 6),  # not a recall status: left out
        answer(I01, second, "16", 3),
    ]
    for a in answers:
        await store.accept(a)
    found = await store.recall_statuses([first.id, second.id, quiet.id, "f" * 32])
    assert {k: [(s.sender, s.status_code) for s in v] for k, v in found.items()} == {
        first.id: [(G22, "13"), (A01, "15")],
        second.id: [(I01, "16")],
    }
    assert await store.recall_statuses([]) == {}


async def test_the_newest_replacement_supersedes_and_an_update_does_not(store: Store) -> None:
    first, second, updated = (document(G22) for _ in range(3))
    for doc in (first, second, updated):
        await store.accept(doc)

    def changing(doc: NewDocument, kind: int, seconds: int) -> NewDocument:
        at = T0 + timedelta(seconds=seconds)
        return document(G22, response_for=doc.id, business_doc_type=kind, at=at)

    older, newer = changing(first, 3, 5), changing(first, 3, 9)
    changes = [newer, older, changing(second, 3, 2), changing(updated, 2, 4)]
    for c in changes:
        await store.accept(c)
    # A status answering a document (response_for set, no business type) supersedes nothing.
    await store.accept(
        document(
            A01, (route(Network.GOVERNMENT, G22),), kind="status", response_for=updated.id, status_code="15"
        )
    )
    found = await store.superseded_by([first.id, second.id, updated.id, "f" * 32])
    assert found == {first.id: newer.id, second.id: changes[2].id}
    assert await store.superseded_by([]) == {}
    kept = await store.document(older.id)
    assert kept is not None and (kept.business_doc_type, kept.response_for) == (3, first.id)


# --- the delivery log -------------------------------------------------------------------------------


async def test_a_trace_is_in_time_order_and_holds_only_its_documents_records(store: Store) -> None:
    doc_id = new_id()
    doc = document(G22, doc_id=doc_id, events=(NewEvent("accepted", T0 + timedelta(seconds=2), doc_id),))
    await store.accept(doc)
    other = document(H41)
    await store.accept(other)
    await store.add_events(
        [
            NewEvent("recipient_failed", T0 + timedelta(seconds=1), doc.id, A01, "party",
                     {"stage": "decrypt", "reason": "Khóa không khớp", "nested": {"n": [1, 2]}}),
            NewEvent("refused_clearance", T0, None, A01, "party", {"level": "mat"}),
            NewEvent("fetched", T0 + timedelta(seconds=2), doc.id, A01, "party"),
        ]
    )  # fmt: skip
    await store.add_events([])
    trace = await store.events(doc.id)
    assert [e.kind for e in trace] == ["recipient_failed", "accepted", "fetched"]  # by time, then as written
    assert trace[0].detail == {"stage": "decrypt", "reason": "Khóa không khớp", "nested": {"n": [1, 2]}}
    assert (
        trace[0].at == T0 + timedelta(seconds=1) and trace[0].recipient == A01 and trace[0].network == "party"
    )
    assert trace[1].seq < trace[2].seq and trace[1].document == doc.id
    assert kinds(await store.events(other.id)) == ["accepted"]
    assert await store.events("0" * 32) == []


# --- deadlines --------------------------------------------------------------------------------------


async def test_deliveries_at_risk_are_those_due_and_unanswered(store: Store) -> None:
    soon = datetime(2026, 11, 22, 10, 0, tzinfo=VIETNAM)  # 03:00 UTC
    doc = document(G22, (route(Network.PARTY, A01, I01), route(Network.GOVERNMENT, H41)), due_at=soon)
    earlier = document(G12, due_at=soon - timedelta(hours=1))
    later = document(G12, due_at=soon + timedelta(days=2))
    no_deadline = document(G12)
    for d in (doc, earlier, later, no_deadline):
        await store.accept(d)
    jobs = {(j.document.id, j.target): j for j in await claim(store)}
    await store.complete_routes(
        [(jobs[(doc.id, Network.PARTY)], carried(jobs[(doc.id, Network.PARTY)]))], now=T0
    )
    await store.quarantine_route(jobs[(doc.id, Network.GOVERNMENT)], reason="bad seal", now=T0)
    await store.mark_fetched(doc.id, I01, now=T0 + timedelta(minutes=1), receipt=None)

    until = soon + timedelta(hours=1)
    risks = await store.deadlines_at_risk(until=until)
    assert (risks[0].document, risks[0].recipient) == (earlier.id, A01)  # soonest first
    assert sorted((r.document, r.recipient) for r in risks[1:]) == sorted([(doc.id, A01), (doc.id, I01)])
    by_recipient = {r.recipient: r for r in risks if r.document == doc.id}
    assert by_recipient[I01].fetched_at == T0 + timedelta(minutes=1) and by_recipient[A01].fetched_at is None
    assert by_recipient[A01].due_at == soon and by_recipient[A01].network is Network.PARTY
    assert all(r.flagged == frozenset() for r in risks)

    back = (route(Network.GOVERNMENT, G22),)
    await store.accept(
        document(A01, back, kind="status", response_for=doc.id, status_code="01")
    )  # not an answer
    await store.accept(document(I01, back, kind="status", response_for=doc.id, status_code="03"))  # answered
    await store.add_events([NewEvent("deadline_near", T0, doc.id, A01, "party", {"minutes_left": 60})])
    await store.add_events([NewEvent("overdue", T0, earlier.id, H41, "party", {"minutes_left": 0})])
    risks = await store.deadlines_at_risk(until=until)
    assert [(r.document, r.recipient, r.flagged) for r in risks] == [
        (earlier.id, A01, frozenset()),
        (doc.id, A01, frozenset({"deadline_near"})),
    ]
    assert [r.document for r in await store.deadlines_at_risk(until=soon - timedelta(minutes=61))] == []
