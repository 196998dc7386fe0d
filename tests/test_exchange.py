"""End to end over the real API: real TLS on loopback, real signatures, a real SQLite file."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.agency_side.packages import open_delivery, sign_package
from gateway.domain.edxml import Organ, build_status
from gateway.domain.vocabulary import DeliveryState, Network, StatusCode
from gateway.runtime.config import Config
from gateway.runtime.node import Node
from tests.conftest import A01, COMMUNE, G12, G16, G22, H41, I01, make_package, trust_for, wait_delivered

PAIRS = [
    (G22, A01, Network.PARTY),  # government → party
    (A01, G22, Network.GOVERNMENT),  # party → government
    (A01, I01, Network.FRONT),  # party → front
    (I01, A01, Network.PARTY),  # front → party
    (G22, I01, Network.FRONT),  # government → front
    (I01, G22, Network.GOVERNMENT),  # front → government
    (G22, H41, Network.GOVERNMENT),  # within one network: no bridge
]


@pytest.mark.parametrize(("sender", "recipient", "network"), PAIRS)
async def test_round_trip_between_networks(
    node: Node, config: Config, agency, sender, recipient, network
) -> None:
    subject = f"Công văn từ {sender} gửi {recipient}: triển khai chính quyền hai cấp"
    status, body = await agency(sender).send(make_package(config, sender, [recipient], subject=subject))
    assert status == 202, body
    doc_id = body["id"]
    assert [r["code"] for r in body["recipients"]] == [recipient]
    assert body["recipients"][0]["network"] == network.value

    deliveries = await wait_delivered(node, doc_id)
    assert [(d.recipient, d.state) for d in deliveries] == [(recipient, DeliveryState.DELIVERED)]

    reader = agency(recipient)
    status, inbox = await reader.call("GET", "/v1/inbox")
    assert status == 200
    assert [(d["id"], d["subject"]) for d in inbox["documents"]] == [(doc_id, subject)]

    status, sealed = await reader.call("GET", f"/v1/edocs/{doc_id}")
    assert status == 200
    opened = open_delivery(sealed, trust=trust_for(config), network=network, at=datetime.now(UTC))
    assert opened.signer.code == sender  # the sender's own signature, end to end
    assert opened.content.sender == sender
    actions = [(h.network, h.action) for h in opened.transfer.hops]
    sending = node.registry.get(sender)
    assert sending is not None
    sender_network = sending.network
    if sender_network is network:
        assert actions == [(network, "sealed")]
    else:
        assert actions == [(sender_network, "sealed"), (network, "bridged")]
        assert opened.transfer.hops[1].previous_seal  # the bridge chained to the seal it verified

    # The fetch issued a 01 receipt, signed on the recipient's side, that travels back to the sender.
    status, receipts = await agency(sender).call("GET", f"/v1/edocs/{doc_id}/receipts")
    assert status == 200
    row = receipts["recipients"][0]
    assert row["state"] == "fetched"
    assert [(r["code"], r["signature_valid"]) for r in row["receipts"]] == [("01", True)]
    assert receipts["unconfirmed"] == []

    # A later business status (03 accepted) signed by the recipient agency itself.
    status_pkg = sign_package(
        config.certs,
        recipient,
        build_status(
            sender=Organ(recipient),
            about_organ=sender,
            about_document_id=receipts["document_id"],
            code=StatusCode.ACCEPTED,
            now=datetime.now(UTC),
            description="Đã vào sổ văn bản đến",
        ),
    )
    status, accepted = await reader.call("POST", f"/v1/edocs/{doc_id}/status", status_pkg)
    assert status == 202, accepted
    await wait_delivered(node, accepted["id"])
    status, receipts = await agency(sender).call("GET", f"/v1/edocs/{doc_id}/receipts")
    codes = [(r["code"], r["signed_by"], r["signature_valid"]) for r in receipts["recipients"][0]["receipts"]]
    assert codes == [("01", f"ADAPTER.{network.value.upper()}", True), ("03", recipient, True)]

    # The statuses reached the sender's inbox as status packages.
    status, sender_inbox = await agency(sender).call("GET", "/v1/inbox")
    assert sorted(d["status_code"] for d in sender_inbox["documents"] if d["response_for"] == doc_id) == [
        "01",
        "03",
    ]

    status, trace = await agency(sender).call("GET", f"/v1/edocs/{doc_id}/trace")
    kinds = [e["event"] for e in trace["events"]]
    expected = [
        "accepted",
        "verified",
        "routed",
        "sealed",
        *(["bridged"] if sender_network is not network else []),
    ]
    assert kinds[: len(expected)] == expected
    assert {"seal_verified", "delivered", "fetched", "status"} <= set(kinds)


async def test_one_directive_fans_out_to_every_network_once(node: Node, config: Config, agency) -> None:
    recipients = [A01, I01, H41, COMMUNE, G12]
    status, body = await agency(G22).send(make_package(config, G22, recipients, subject="Chỉ thị"))
    assert status == 202
    deliveries = await wait_delivered(node, body["id"])
    assert sorted(d.recipient for d in deliveries) == sorted(recipients)
    assert {d.state for d in deliveries} == {DeliveryState.DELIVERED}
    events = await node.store.events(body["id"])
    # One seal per target network, not per recipient; the package is stored once.
    # key=str only types the sort: a None network would fail the comparison all the same.
    assert sorted((e.network for e in events if e.kind == "sealed"), key=str) == ["government"] * 3
    assert sorted((e.network for e in events if e.kind == "bridged"), key=str) == ["front", "party"]


async def test_resend_is_idempotent_and_a_changed_resend_conflicts(
    node: Node, config: Config, agency
) -> None:
    client = agency(G22)
    written = datetime.now(UTC)  # the package's times are part of its content: keep them the same
    package = make_package(config, G22, [A01], document_id=f"{G22},2026/11/22,77/VPCP", now=written)
    first = await client.send(package)
    again = await client.send(package)
    assert first[0] == again[0] == 202
    assert again[1]["id"] == first[1]["id"] and again[1]["duplicate"] is True
    # Re-signing the same content is still the same document.
    resigned = make_package(config, G22, [A01], document_id=f"{G22},2026/11/22,77/VPCP", now=written)
    assert (await client.send(resigned))[1]["id"] == first[1]["id"]
    changed = make_package(
        config, G22, [A01], document_id=f"{G22},2026/11/22,77/VPCP", content="khác", now=written
    )
    status, body = await client.send(changed)
    assert (status, body["error"]) == (409, "document_conflict")
    assert first[1]["id"] in body["message"]


async def test_forged_sender_is_refused(node: Node, config: Config, agency) -> None:
    # Connected as G22, but the package says it is from H41 (and is signed by H41).
    status, body = await agency(G22).send(make_package(config, H41, [A01]))
    assert (status, body["error"]) == (403, "sender_mismatch")
    # From G22, but signed with H41's key.
    forged = make_package(config, G22, [A01])
    from gateway.domain.xmlsafe import parse_xml

    root = parse_xml(forged)
    sig = root.find(".//{http://www.w3.org/2000/09/xmldsig#}Signature")
    assert sig is not None
    parent = sig.getparent()
    assert parent is not None
    parent.remove(sig)
    resigned = sign_package(config.certs, H41, root)
    status, body = await agency(G22).send(resigned)
    assert (status, body["error"]) == (403, "signer_not_trusted")


async def test_agency_cannot_read_another_agencys_document(node: Node, config: Config, agency) -> None:
    status, body = await agency(G22).send(make_package(config, G22, [A01]))
    await wait_delivered(node, body["id"])
    for path in (
        f"/v1/edocs/{body['id']}",
        f"/v1/edocs/{body['id']}/receipts",
        f"/v1/edocs/{body['id']}/trace",
    ):
        status, err = await agency(I01).call("GET", path)
        assert (status, err["error"]) == (404, "not_found"), path
    # The sender may see receipts but is not a recipient of its own document.
    status, err = await agency(G22).call("GET", f"/v1/edocs/{body['id']}")
    assert (status, err["error"]) == (403, "forbidden")


async def test_retired_code_is_forwarded_to_successor(node: Node, config: Config, agency) -> None:
    status, body = await agency(A01).send(make_package(config, A01, [G16]))
    assert status == 202
    [recipient] = body["recipients"]
    assert (recipient["code"], recipient["addressed"], recipient["forwarded_via"]) == (G12, G16, [G16, G12])
    await wait_delivered(node, body["id"])
    status, inbox = await agency(G12).call("GET", "/v1/inbox")
    assert [d["addressed"] for d in inbox["documents"]] == [G16]
    status, receipts = await agency(A01).call("GET", f"/v1/edocs/{body['id']}/receipts")
    row = receipts["recipients"][0]
    assert (row["recipient"], row["addressed"], row["forwarded_via"]) == (G12, G16, [G16, G12])
    status, trace = await agency(A01).call("GET", f"/v1/edocs/{body['id']}/trace")
    redirected = [e for e in trace["events"] if e["event"] == "redirected"]
    assert redirected and redirected[0]["detail"]["addressed"] == G16


async def test_chain_of_retired_codes_is_followed(node: Node, config: Config, agency) -> None:
    status, body = await agency(G22).send(make_package(config, G22, ["H41.12.09"]))
    assert status == 202
    assert body["recipients"][0]["forwarded_via"] == ["H41.12.09", "H41.12.07", COMMUNE]


async def test_unknown_recipient_is_422(node: Node, config: Config, agency) -> None:
    status, body = await agency(G22).send(make_package(config, G22, ["000.00.00.G99"]))
    assert (status, body["error"]) == (422, "unknown_recipient")
    assert "000.00.00.G99" in body["message"]


async def test_no_client_certificate_is_401(node: Node, config: Config, agency) -> None:
    status, body = await agency(None).send(make_package(config, G22, [A01]))
    assert (status, body["error"]) == (401, "unauthenticated")
    status, body = await agency(None).call("GET", "/healthz")
    assert status == 200 and body["status"] == "ok"


async def test_status_from_a_non_recipient_is_refused(node: Node, config: Config, agency) -> None:
    status, body = await agency(G22).send(make_package(config, G22, [A01]))
    await wait_delivered(node, body["id"])
    record = await node.store.document(body["id"])
    assert record is not None and record.document_id is not None
    pkg = sign_package(
        config.certs,
        I01,
        build_status(
            sender=Organ(I01),
            about_organ=G22,
            about_document_id=record.document_id,
            code=StatusCode.ACCEPTED,
            now=datetime.now(UTC),
        ),
    )
    status, err = await agency(I01).call("POST", f"/v1/edocs/{body['id']}/status", pkg)
    assert (status, err["error"]) == (403, "forbidden")


async def test_agencies_endpoint_lists_the_registry(node: Node, agency) -> None:
    status, body = await agency(I01).call("GET", "/v1/agencies?network=front")
    assert status == 200
    assert [a["code"] for a in body["agencies"]] == [I01]
    status, body = await agency(I01).call("GET", "/v1/agencies?limit=abc")
    assert (status, body["error"]) == (400, "bad_request")
