"""Intake built directly: the checks a submission passes, and what it leaves in the store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.agency_side.packages import sign_package
from gateway.domain.clock import ManualClock
from gateway.domain.edxml import Organ, build_status
from gateway.domain.vocabulary import DeliveryState, Network, StatusCode
from gateway.domain.xmlsafe import parse_xml
from gateway.errors import (
    BadRequest,
    DocumentConflict,
    Forbidden,
    MalformedXml,
    NotFound,
    PackageTooLarge,
    SenderMismatch,
    SignerNotTrusted,
    UnknownRecipient,
)
from gateway.runtime.config import Config
from tests.conftest import A01, COMMUNE, G12, G16, G22, H41, I01
from tests.unit.conftest import Exchange, build_exchange

XMLDSIG = "{http://www.w3.org/2000/09/xmldsig#}Signature"


def status_package(ex: Exchange, sender: str, about_sender: str, document_id: str, code: StatusCode) -> bytes:
    root = build_status(
        sender=Organ(sender),
        about_organ=about_sender,
        about_document_id=document_id,
        code=code,
        now=ex.clock.now(),
    )
    return sign_package(ex.config.certs, sender, root)


async def test_an_accepted_document_is_stored_with_its_delivery_and_trace(exchange: Exchange) -> None:
    raw = exchange.package(G22, [A01], document_id=f"{G22},2026/11/22,1/VPCP")
    accepted = await exchange.intake.submit(G22, raw)

    assert accepted.created and accepted.networks == {A01: "party"}
    assert [(d.recipient, d.addressed, d.chain) for d in accepted.recipients] == [(A01, A01, ())]
    doc = await exchange.store.document(accepted.id)
    assert doc is not None
    assert (doc.kind, doc.sender, doc.sender_network, doc.document_id) == (
        "edoc", G22, Network.GOVERNMENT, f"{G22},2026/11/22,1/VPCP",
    )  # fmt: skip
    assert doc.signer == f"agency:{G22}" and doc.accepted_at == exchange.clock.now() and doc.size == len(raw)
    assert doc.subject == "Về việc triển khai chính quyền địa phương hai cấp"
    assert await exchange.store.package(accepted.id) == raw  # unclassified: stored as the sender signed it
    assert await exchange.states(accepted.id) == {A01: DeliveryState.PENDING}
    trace = await exchange.store.events(accepted.id)
    assert [e.kind for e in trace] == ["accepted", "verified", "routed"]
    assert trace[0].detail["from"] == G22 and trace[0].detail["size"] == len(raw)
    assert trace[1].detail["signer"] == G22 and trace[2].detail == {"recipients": [A01]}
    assert exchange.wakes == [exchange.clock.now()]  # the courier is told at once


async def test_a_resend_is_idempotent_and_a_changed_one_conflicts(exchange: Exchange) -> None:
    key = f"{G22},2026/11/22,2/VPCP"
    raw = exchange.package(G22, [A01], document_id=key)
    first = await exchange.intake.submit(G22, raw)
    exchange.clock.advance(seconds=30)
    again = await exchange.intake.submit(G22, raw)
    assert (again.id, again.created) == (first.id, False)
    assert exchange.wakes == [exchange.clock.now() - timedelta(seconds=30)]  # nothing new to carry

    changed = exchange.package(G22, [A01], document_id=key, content="Nội dung đã sửa")
    with pytest.raises(DocumentConflict, match=first.id):
        await exchange.intake.submit(G22, changed)
    assert await exchange.store.pending_routes() == 1
    other = await exchange.intake.submit(H41, exchange.package(H41, [A01], document_id=key))
    assert other.created and other.id != first.id  # a DocumentId is unique per sender only


async def test_a_document_goes_once_into_each_network_of_its_recipients(exchange: Exchange) -> None:
    raw = exchange.package(G22, [A01, I01, H41, COMMUNE, G16, G12])
    accepted = await exchange.intake.submit(G22, raw)

    assert accepted.networks == {A01: "party", I01: "front", H41: "government", COMMUNE: "government",
                                 G12: "government"}  # fmt: skip
    deliveries = {d.recipient: d for d in await exchange.store.deliveries(accepted.id)}
    # G16 retired into G12: addressed both ways, G12 gets the document once, as addressed first.
    assert (deliveries[G12].addressed, deliveries[G12].chain) == (G16, (G16, G12))
    assert {r: d.network for r, d in deliveries.items()} == {
        A01: Network.PARTY, I01: Network.FRONT, H41: Network.GOVERNMENT, COMMUNE: Network.GOVERNMENT,
        G12: Network.GOVERNMENT,
    }  # fmt: skip
    trace = await exchange.store.events(accepted.id)
    routed = {e.network: e.detail["recipients"] for e in trace if e.kind == "routed"}
    assert routed == {"party": [A01], "front": [I01], "government": [H41, COMMUNE, G12]}
    [redirected] = [e for e in trace if e.kind == "redirected"]
    assert (redirected.recipient, redirected.detail["addressed"]) == (G12, G16)
    jobs = await exchange.store.claim_routes(node="t", limit=10, now=exchange.clock.now(), lease_seconds=60)
    assert sorted(j.target for j in jobs) == sorted(Network)  # one route per network, not per recipient


async def test_refusals_store_nothing(exchange: Exchange) -> None:
    with pytest.raises(UnknownRecipient, match=r"000\.00\.00\.X99"):
        await exchange.intake.submit(G22, exchange.package(G22, [A01, "000.00.00.X99"]))
    # Connected as G22, but the package says it is from H41 (and H41 signed it).
    with pytest.raises(SenderMismatch):
        await exchange.intake.submit(G22, exchange.package(H41, [A01]))
    # From G22, but signed with H41's key.
    root = parse_xml(exchange.package(G22, [A01]))
    signature = root.find(f".//{XMLDSIG}")
    parent = signature.getparent() if signature is not None else None
    assert signature is not None and parent is not None
    parent.remove(signature)
    with pytest.raises(SignerNotTrusted):
        await exchange.intake.submit(G22, sign_package(exchange.config.certs, H41, root))
    with pytest.raises(MalformedXml):
        await exchange.intake.submit(G22, b"<edXMLEnvelope")
    assert await exchange.store.pending_routes() == 0 and exchange.wakes == []


async def test_a_package_over_the_limit_is_refused_before_it_is_read(
    shared_config: Config, clock: ManualClock
) -> None:
    small = build_exchange(shared_config, clock, max_bytes=2_000)
    raw = small.package(G22, [A01], content="Nội dung rất dài " * 200)
    with pytest.raises(PackageTooLarge, match="2000"):
        await small.intake.submit(G22, raw)


async def test_certificates_are_judged_at_the_clocks_time(exchange: Exchange) -> None:
    raw = exchange.package(G22, [A01])
    exchange.clock.set(datetime.now(UTC) + timedelta(days=365 * 30))  # long after the dev certificates expire
    with pytest.raises(SignerNotTrusted):
        await exchange.intake.submit(G22, raw)
    assert await exchange.store.pending_routes() == 0


async def test_a_status_answers_a_document_and_goes_back_to_its_sender(exchange: Exchange) -> None:
    key = f"{G22},2026/11/22,3/VPCP"
    doc = await exchange.intake.submit(G22, exchange.package(G22, [A01, I01], document_id=key))
    exchange.clock.advance(minutes=5)
    accepted = status_package(exchange, A01, G22, key, StatusCode.ACCEPTED)
    answer = await exchange.intake.submit(A01, accepted, about=doc.id)

    assert answer.networks == {G22: "government"}
    [(status, package)] = await exchange.store.statuses_for(doc.id)
    assert (status.id, status.kind, status.sender, status.status_code) == (answer.id, "status", A01, "03")
    assert package == accepted and status.response_for == doc.id
    original_trace = await exchange.store.events(doc.id)
    assert [(e.kind, e.recipient, e.detail["status"]) for e in original_trace if e.kind == "status"] == [
        ("status", A01, "03")
    ]
    assert await exchange.states(answer.id) == {G22: DeliveryState.PENDING}

    # A status may only come from a recipient (or, to recall, the sender), about that very document.
    with pytest.raises(Forbidden):
        await exchange.intake.submit(
            H41, status_package(exchange, H41, G22, key, StatusCode.ACCEPTED), about=doc.id
        )
    other = status_package(exchange, I01, G22, f"{G22},2026/11/22,4/VPCP", StatusCode.ACCEPTED)
    with pytest.raises(BadRequest, match="DocumentId"):
        await exchange.intake.submit(I01, other, about=doc.id)
    with pytest.raises(NotFound):
        await exchange.intake.submit(
            I01, status_package(exchange, I01, G22, key, StatusCode.DONE), about="0" * 32
        )
    with pytest.raises(BadRequest):
        await exchange.intake.submit(I01, status_package(exchange, I01, G22, key, StatusCode.DONE))
    with pytest.raises(BadRequest):
        await exchange.intake.submit(G22, exchange.package(G22, [A01]), about=doc.id)
    assert len(await exchange.store.statuses_for(doc.id)) == 1
