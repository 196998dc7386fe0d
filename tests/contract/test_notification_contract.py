"""The push-notification part of the storage port, run against every ``Store`` (memory, SQLite,
PostgreSQL): endpoints, and the queue that delivering fills in the same transaction."""

from __future__ import annotations

from datetime import timedelta

from gateway.domain.vocabulary import Network, Priority
from gateway.exchange.ports import NewEvent, Store
from tests.conftest import A01, G22, H41, I01
from tests.contract import test_store_contract as contract
from tests.contract.test_store_contract import LEASE, T0, carried, claim, deliver, document, route

store = contract.store  # the same fixture: memory, SQLite and PostgreSQL

URL = "https://docs.a01.example:8444/gateway/inbox-hook"


async def claim_notices(s: Store, *, now=T0, limit=50, node="n1", exclude=()):
    return await s.claim_notifications(node=node, limit=limit, now=now, lease_seconds=LEASE, exclude=exclude)


async def test_an_endpoint_is_set_replaced_read_and_removed(store: Store) -> None:
    assert await store.endpoint(A01) is None
    first = await store.set_endpoint(A01, URL, now=T0)
    assert (first.agency, first.url, first.registered_at) == (A01, URL, T0)
    later = T0 + timedelta(minutes=5)
    await store.set_endpoint(A01, URL + "2", now=later)
    again = await store.endpoint(A01)
    assert again is not None and (again.url, again.registered_at) == (URL + "2", later)
    assert again.registered_at.utcoffset() == timedelta(0)
    assert await store.endpoint(I01) is None
    assert await store.remove_endpoint(A01) == 0
    assert await store.remove_endpoint(A01) is None and await store.endpoint(A01) is None


async def test_a_delivery_queues_one_notification_per_recipient_with_an_endpoint(store: Store) -> None:
    await store.set_endpoint(A01, URL, now=T0)
    doc = document(
        G22, (route(Network.PARTY, A01, I01), route(Network.GOVERNMENT, H41)), priority=Priority.KHAN
    )
    await store.accept(doc)
    assert await store.queued_notifications() == 0  # accepted is not delivered
    later = T0 + timedelta(seconds=3)
    await deliver(store, doc, now=later)
    assert await store.queued_notifications() == 1
    [job] = await claim_notices(store, now=later)
    assert (job.document, job.recipient, job.network, job.kind, job.sender) == (
        doc.id, A01, Network.PARTY, "edoc", G22,
    )  # fmt: skip
    assert (job.priority, job.created_at, job.attempts, job.url) == (Priority.KHAN, later, 0, URL)
    assert (job.status_code, job.response_for) == (None, None)


async def test_a_status_delivered_to_its_sender_is_queued_with_its_code(store: Store) -> None:
    await store.set_endpoint(G22, URL, now=T0)
    doc = document(G22, (route(Network.PARTY, A01),))
    await deliver(store, doc)
    answer = document(
        A01, (route(Network.GOVERNMENT, G22),), kind="status", response_for=doc.id, status_code="03"
    )
    await deliver(store, answer)
    [job] = await claim_notices(store)
    assert (job.document, job.recipient, job.kind, job.status_code, job.response_for, job.sender) == (
        answer.id, G22, "status", "03", doc.id, A01,
    )  # fmt: skip


async def test_a_forwarded_route_queues_nothing_and_a_taken_over_one_does(store: Store) -> None:
    await store.set_endpoint(A01, URL, now=T0)
    doc = document(G22)
    await store.accept(doc)
    [job] = await claim(store)
    await store.complete_routes([(job, carried(job, forward_to=Network.PARTY))], now=T0)
    assert await store.queued_notifications() == 0  # the party node notifies, where it lands

    taken = document(G22, (route(Network.PARTY, A01, I01),))
    assert await store.accept_forwarded(taken, b"bridged", now=T0) is True
    assert [(j.document, j.recipient) for j in await claim_notices(store)] == [(taken.id, A01)]


async def test_notifications_go_most_urgent_first_then_oldest_each_held_for_its_lease(store: Store) -> None:
    await store.set_endpoint(A01, URL, now=T0)
    await store.set_endpoint(I01, URL, now=T0)
    docs = [
        document(G22, (route(Network.PARTY, A01),), priority=Priority.THUONG, at=T0),
        document(G22, (route(Network.FRONT, I01),), priority=Priority.HOA_TOC, at=T0 + timedelta(seconds=1)),
        document(G22, (route(Network.PARTY, A01),), priority=Priority.KHAN, at=T0 + timedelta(seconds=2)),
        document(G22, (route(Network.PARTY, A01),), priority=Priority.HOA_TOC, at=T0 + timedelta(seconds=3)),
    ]
    for doc in docs:
        await deliver(store, doc)
    first = await claim_notices(store, limit=3)
    assert [j.document for j in first] == [docs[1].id, docs[3].id, docs[2].id]
    assert [j.document for j in await claim_notices(store, node="n2")] == [docs[0].id]
    assert await claim_notices(store, node="n2") == []  # all held
    after = T0 + timedelta(seconds=LEASE + 1)  # a node that died holding them: taken over
    assert len(await claim_notices(store, now=after, node="n2")) == 4
    assert [j.recipient for j in await claim_notices(store, now=after + timedelta(seconds=LEASE + 1),
                                                     exclude={A01})] == [I01]  # fmt: skip


async def test_a_retried_notification_waits_and_counts_only_real_tries(store: Store) -> None:
    await store.set_endpoint(A01, URL, now=T0)
    doc = document(G22, (route(Network.PARTY, A01),))
    await deliver(store, doc)
    [job] = await claim_notices(store)
    later = T0 + timedelta(seconds=30)
    failed = NewEvent("notify_failed", T0, doc.id, A01, "party", {"attempt": 1, "reason": "down"})
    await store.retry_notification(job, not_before=later, reason="down", attempted=True, events=[failed])
    assert await claim_notices(store, now=later - timedelta(seconds=1)) == []
    [again] = await claim_notices(store, now=later)
    assert again.attempts == 1
    await store.retry_notification(again, not_before=later, reason="the endpoint is down", attempted=False)
    [third] = await claim_notices(store, now=later)
    assert third.attempts == 1 and await store.queued_notifications() == 1
    assert [e.kind for e in await store.events(doc.id)][-1] == "notify_failed"


async def test_a_finished_notification_leaves_the_queue_with_its_record(store: Store) -> None:
    await store.set_endpoint(A01, URL, now=T0)
    doc = document(G22, (route(Network.PARTY, A01),))
    await deliver(store, doc)
    [job] = await claim_notices(store)
    sent = NewEvent("notified", T0, doc.id, A01, "party", {"attempt": 1, "status": 204})
    await store.finish_notification(job, events=[sent])
    assert await store.queued_notifications() == 0
    assert await claim_notices(store, now=T0 + timedelta(days=1)) == []
    last = (await store.events(doc.id))[-1]
    assert (last.kind, last.recipient, last.detail) == ("notified", A01, {"attempt": 1, "status": 204})


async def test_removing_an_endpoint_drops_its_queued_notifications_only(store: Store) -> None:
    await store.set_endpoint(A01, URL, now=T0)
    await store.set_endpoint(I01, URL, now=T0)
    await deliver(store, document(G22, (route(Network.PARTY, A01),)))
    await deliver(store, document(G22, (route(Network.PARTY, A01),)))
    await deliver(store, document(G22, (route(Network.FRONT, I01),)))
    assert await store.remove_endpoint(A01) == 2
    assert [j.recipient for j in await claim_notices(store)] == [I01]
    await deliver(store, document(G22, (route(Network.PARTY, A01),)))  # no endpoint: nothing queued
    assert await store.queued_notifications() == 1


async def test_a_restarted_node_takes_back_the_notifications_it_held(store: Store) -> None:
    await store.set_endpoint(A01, URL, now=T0)
    await deliver(store, document(G22, (route(Network.PARTY, A01),)))
    await deliver(store, document(G22, (route(Network.PARTY, A01),)))
    [mine] = await claim_notices(store, limit=1, node="n1")
    [theirs] = await claim_notices(store, limit=1, node="n2")
    assert await store.release_notifications(node="n1") == 1
    assert [j.id for j in await claim_notices(store)] == [mine.id]
    assert theirs.id != mine.id
