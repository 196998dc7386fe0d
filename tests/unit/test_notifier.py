"""The notifier's logic with a manual clock: bounded exponential back-off, giving up, and what
goes in the body. The agency's system is a stand-in that checks each signature for real; the
HTTPS sending itself is tested end to end in tests/test_push.py."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from gateway.agency_side.notifications import verify_notification
from gateway.domain.vocabulary import Network
from gateway.errors import InvalidEndpoint, PushFailed
from gateway.exchange.notifications import Endpoints, Notifier, check_endpoint_url
from gateway.infra.files.pki_dir import load_trust_anchors
from tests.conftest import A01, G22
from tests.unit.conftest import Exchange, stops_when_cancelled_as_it_is_woken

URL = "https://docs.a01.example/hook"


class AgencySystem:
    """Answers like an agency's endpoint: down (``PushFailed``) or up, checking what it gets."""

    def __init__(self, exchange: Exchange) -> None:
        self.up = False
        self.anchors = load_trust_anchors(exchange.config.certs)
        self.clock = exchange.clock
        self.received: list[dict[str, object]] = []
        self.tries: list[datetime] = []

    async def push(self, network: Network, url: str, body: bytes, signature: str) -> int:
        self.tries.append(self.clock.now())
        if not self.up:
            raise PushFailed("unreachable: ClientConnectorError")
        addressed = json.loads(body)["recipient"]
        self.received.append(
            verify_notification(body, signature, self.anchors, agency=addressed, at=self.clock.now())
        )
        return 204


def notifier(
    exchange: Exchange, system: AgencySystem, *, max_backoff: float = 300.0, give_up_after: float = 86_400.0
) -> Notifier:
    return Notifier(
        exchange.store, system, exchange.adapters, exchange.clock, node="unit",
        max_backoff=max_backoff, give_up_after=give_up_after,
    )  # fmt: skip


async def delivered_to_a01(exchange: Exchange) -> str:
    accepted = await exchange.intake.submit(G22, exchange.package(G22, [A01]))
    await exchange.carry_all()
    return accepted.id


async def test_a_down_endpoint_is_tried_after_1_2_4_s_and_never_more_than_the_bound(
    exchange: Exchange,
) -> None:
    await Endpoints(exchange.store, exchange.clock).register(A01, URL)
    system = AgencySystem(exchange)
    sender = notifier(exchange, system, max_backoff=5.0)
    doc_id = await delivered_to_a01(exchange)
    start = exchange.clock.now()
    for _ in range(6):
        assert await sender.run_once() is True
        assert await sender.run_once() is False  # left alone until its back-off has passed
        exchange.clock.advance(seconds=sender.backoff(len(system.tries)))
    gaps = [(b - a).total_seconds() for a, b in zip(system.tries, system.tries[1:], strict=False)]
    assert gaps == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert system.tries[0] == start

    system.up = True
    assert await sender.run_once() is True
    [notification] = system.received
    assert (notification["id"], notification["kind"], notification["sender"]) == (doc_id, "document", G22)
    trace = [e for e in await exchange.store.events(doc_id) if e.kind.startswith("notif")]
    assert [e.kind for e in trace] == ["notify_failed"] * 6 + ["notified"]
    assert [e.detail["attempt"] for e in trace] == [1, 2, 3, 4, 5, 6, 7]
    assert await exchange.store.queued_notifications() == 0


async def test_a_notification_undelivered_for_too_long_is_dropped_and_the_document_stays(
    exchange: Exchange,
) -> None:
    await Endpoints(exchange.store, exchange.clock).register(A01, URL)
    system = AgencySystem(exchange)
    sender = notifier(exchange, system, max_backoff=60.0, give_up_after=600.0)
    doc_id = await delivered_to_a01(exchange)
    while await exchange.store.queued_notifications():
        await sender.run_once()
        exchange.clock.advance(seconds=60)
    last = [e for e in await exchange.store.events(doc_id) if e.kind == "notify_failed"][-1]
    assert last.detail["gave_up"] is True and "next_attempt_at" not in last.detail
    assert exchange.clock.now() - timedelta(seconds=660) <= system.tries[0]
    [item] = await exchange.mailbox.inbox(A01)  # pull: the document was never lost
    assert item.document.id == doc_id


async def test_the_sender_hears_of_its_receipt_and_the_recipient_of_its_document(exchange: Exchange) -> None:
    endpoints = Endpoints(exchange.store, exchange.clock)
    await endpoints.register(A01, URL)
    await endpoints.register(G22, URL + "/g22")
    system = AgencySystem(exchange)
    system.up = True
    sender = notifier(exchange, system)
    doc_id = await delivered_to_a01(exchange)
    await sender.run_once()
    await exchange.mailbox.fetch(A01, doc_id)  # the first fetch issues the 01 receipt to G22
    await exchange.carry_all()
    await sender.run_once()
    seen = [(n["recipient"], n["kind"], n["status"], n["about"], n["sender"]) for n in system.received]
    assert seen[0] == (A01, "document", None, None, G22)
    assert seen[1][:4] == (G22, "receipt", "01", doc_id) and seen[1][4] == A01
    assert json.dumps(system.received).isascii()  # no Vietnamese text at all: no subject slipped in


def test_only_https_urls_without_credentials_are_endpoints() -> None:
    assert check_endpoint_url("https://10.1.2.3:8444/hook?t=1") == "https://10.1.2.3:8444/hook?t=1"
    for wrong in ("http://a/b", "https://", "https://u:p@a/", "https://a/#x", "https://a:0/", "https://a:99999/",
                  "https://a/ b", "https://ả.vn/", None, "x" * 3000):  # fmt: skip
        try:
            check_endpoint_url(wrong)
        except InvalidEndpoint:
            continue
        raise AssertionError(f"{wrong!r} was accepted")


async def test_a_notifier_stops_when_cancelled_as_it_is_woken(exchange: Exchange) -> None:
    assert await stops_when_cancelled_as_it_is_woken(notifier(exchange, AgencySystem(exchange)))
