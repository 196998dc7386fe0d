"""The mailbox built directly: inboxes, the first fetch and its 01 receipt, receipts and traces."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pytest

from gateway.agency_side.packages import open_delivery, sign_package
from gateway.domain.clock import ManualClock
from gateway.domain.edxml import Organ, build_status
from gateway.domain.vocabulary import DeliveryState, Network, Priority, StatusCode
from gateway.errors import Forbidden, NotFound
from gateway.exchange.memory import MemoryStore
from gateway.exchange.ports import NewDocument, NewEvent
from gateway.runtime.config import Config
from tests.conftest import A01, G22, H41, I01
from tests.unit.conftest import Exchange, build_exchange, framed


class CountingStore(MemoryStore):
    """Counts the writes a use case makes: each is one transaction."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    async def add_events(self, events: Sequence[NewEvent]) -> None:
        self.writes.append("add_events")
        await super().add_events(events)

    async def mark_fetched(
        self,
        doc_id: str,
        agency: str,
        *,
        now: datetime,
        receipt: NewDocument | None,
        events: Sequence[NewEvent] = (),
    ) -> bool:
        self.writes.append("mark_fetched")
        return await super().mark_fetched(doc_id, agency, now=now, receipt=receipt, events=events)


async def sent_and_carried(
    exchange: Exchange,
    sender: str,
    recipients: list[str],
    *,
    document_id: str | None = None,
    priority: Priority = Priority.THUONG,
) -> str:
    raw = exchange.package(sender, recipients, document_id=document_id, priority=priority)
    accepted = await exchange.intake.submit(sender, raw)
    await exchange.carry_all()
    return accepted.id


async def test_an_inbox_holds_what_was_delivered_most_urgent_first(exchange: Exchange) -> None:
    first = await sent_and_carried(exchange, G22, [A01], document_id=f"{G22},2026/11/22,1/I")
    urgent = await sent_and_carried(exchange, H41, [A01], priority=Priority.THUONG_KHAN)
    await exchange.intake.submit(G22, exchange.package(G22, [A01], document_id=f"{G22},2026/11/22,2/I"))
    inbox = await exchange.mailbox.inbox(A01)
    assert [(i.document.id, i.document.sender) for i in inbox] == [(urgent, H41), (first, G22)]
    assert all(i.delivery.state is DeliveryState.DELIVERED for i in inbox)
    assert await exchange.mailbox.inbox(I01) == []
    assert [i.document.id for i in await exchange.mailbox.inbox(A01, limit=1)] == [urgent]


async def test_the_first_fetch_issues_a_01_and_records_it_in_one_transaction(
    shared_config: Config, clock: ManualClock
) -> None:
    store = CountingStore()
    exchange = build_exchange(shared_config, clock, store=store)
    doc_id = await sent_and_carried(exchange, G22, [A01, I01])
    wakes = len(exchange.wakes)
    exchange.clock.advance(minutes=3)
    store.writes.clear()

    fetched = await exchange.mailbox.fetch(A01, doc_id)
    sealed = framed(*fetched)
    assert store.writes == ["mark_fetched"]  # the fetch, its 01 and its `fetched` record together
    opened = open_delivery(sealed, trust=exchange.trust, network=Network.PARTY, at=exchange.clock.now())
    assert opened.content.sender == G22 and opened.transfer.routing.transfer_id == doc_id
    states = {d.recipient: (d.state, d.fetched_at) for d in await store.deliveries(doc_id)}
    assert states == {
        A01: (DeliveryState.FETCHED, exchange.clock.now()),
        I01: (DeliveryState.DELIVERED, None),
    }
    [(receipt, _)] = await store.statuses_for(doc_id)
    assert (receipt.sender, receipt.status_code, receipt.signer) == (A01, "01", "adapter:ADAPTER.PARTY")
    trace = [(e.kind, e.recipient) for e in await store.events(doc_id)]
    assert trace[-2:] == [("status", A01), ("fetched", A01)]
    assert [e.detail for e in await store.events(doc_id) if e.kind == "fetched"] == [{"receipt_issued": True}]
    assert len(exchange.wakes) == wakes + 1  # the receipt is new work: it goes back to the sender

    # A second fetch hands out the same transfer and issues, records and wakes nothing.
    exchange.clock.advance(minutes=1)
    assert await exchange.mailbox.fetch(A01, doc_id) == fetched
    assert len(await store.statuses_for(doc_id)) == 1 and len(await store.events(doc_id)) == len(trace)
    assert len(exchange.wakes) == wakes + 1
    assert [i.document.id for i in await exchange.mailbox.inbox(A01)] == []
    assert [i.document.id for i in await exchange.mailbox.inbox(A01, include_fetched=True)] == [doc_id]


async def test_only_a_recipient_may_fetch_and_only_what_reached_its_inbox(exchange: Exchange) -> None:
    doc_id = await sent_and_carried(exchange, G22, [A01])
    with pytest.raises(NotFound):
        await exchange.mailbox.fetch(I01, doc_id)  # a stranger is not told the document exists
    with pytest.raises(Forbidden):
        await exchange.mailbox.fetch(G22, doc_id)  # the sender sees receipts, not the delivery
    waiting = await exchange.intake.submit(
        G22, exchange.package(G22, [H41], document_id=f"{G22},2026/11/22,W")
    )
    with pytest.raises(NotFound, match="not in the inbox"):
        await exchange.mailbox.fetch(H41, waiting.id)
    with pytest.raises(NotFound):
        await exchange.mailbox.receipts(I01, doc_id)
    with pytest.raises(NotFound):
        await exchange.mailbox.trace(I01, doc_id)
    assert [d.state for d in await exchange.store.deliveries(doc_id)] == [DeliveryState.DELIVERED]


async def test_receipts_follow_a_document_from_01_to_03(exchange: Exchange) -> None:
    key = f"{G22},2026/11/22,7/VPCP"
    doc_id = await sent_and_carried(exchange, G22, [A01, I01], document_id=key)
    await exchange.mailbox.fetch(A01, doc_id)
    await exchange.carry_all()  # the 01 goes back to G22
    exchange.clock.advance(minutes=10)
    accepted = build_status(
        sender=Organ(A01),
        about_organ=G22,
        about_document_id=key,
        code=StatusCode.ACCEPTED,
        now=exchange.clock.now(),
    )
    answer = await exchange.intake.submit(
        A01, sign_package(exchange.config.certs, A01, accepted), about=doc_id
    )
    await exchange.carry_all()

    view = await exchange.mailbox.receipts(G22, doc_id)
    rows = {r["recipient"]: r for r in view["recipients"]}
    codes = [(r["code"], r["signed_by"], r["signature_valid"]) for r in rows[A01]["receipts"]]
    assert codes == [("01", "ADAPTER.PARTY", True), ("03", A01, True)]
    assert (rows[A01]["state"], rows[A01]["confirmed"]) == ("fetched", True)
    assert (rows[I01]["state"], rows[I01]["receipts"], rows[I01]["confirmed"]) == ("delivered", [], False)
    assert view["unconfirmed"] == [I01]
    statuses = [i.document for i in await exchange.mailbox.inbox(G22) if i.document.response_for == doc_id]
    assert sorted((s.status_code or "") for s in statuses) == ["01", "03"]
    assert answer.id in {s.id for s in statuses}

    # A recipient sees its own part only; the sender sees everyone's.
    mine = await exchange.mailbox.receipts(I01, doc_id)
    assert [r["recipient"] for r in mine["recipients"]] == [I01]
    own_trace = await exchange.mailbox.trace(I01, doc_id)
    assert {e.recipient for e in own_trace} <= {None, I01}
    assert {e.recipient for e in await exchange.mailbox.trace(G22, doc_id)} >= {A01, I01}
    assert await exchange.mailbox.trace(None, doc_id) == await exchange.store.events(doc_id)


async def test_a_recipients_failure_to_open_is_traced_without_what_it_could_not_read(
    exchange: Exchange,
) -> None:
    doc_id = await sent_and_carried(exchange, G22, [A01])
    await exchange.mailbox.report_failure(
        A01, doc_id, stage="decrypt; DROP", reason="bad key\x00\n" + "x" * 400
    )
    [failed] = [e for e in await exchange.store.events(doc_id) if e.kind == "recipient_failed"]
    assert (failed.recipient, failed.network) == (A01, "party")
    assert failed.detail["stage"] == "decryptDROP"
    assert failed.detail["reason"].startswith("bad key") and len(failed.detail["reason"]) == 300
    with pytest.raises(Forbidden):
        await exchange.mailbox.report_failure(G22, doc_id, stage="open", reason="not mine")
