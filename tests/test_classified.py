"""Classified documents: signed level, clearance, encryption only recipients can read, signed receipts."""

from __future__ import annotations

import base64
import os
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from lxml import etree

from gateway.agency_side.packages import arrival_receipt, decryption_keys, open_delivery, sign_package
from gateway.crypto.xmlenc import XENC
from gateway.domain import transfer as tr
from gateway.domain.edxml import NewEdoc, Organ, build_edoc, build_status
from gateway.domain.vocabulary import Classification, Network, StatusCode
from gateway.errors import CryptoError, DecryptionFailed, NotARecipient
from gateway.runtime.config import Config
from gateway.runtime.node import Node
from tests.conftest import A01, COMMUNE, G12, G22, H41, I01, trust_for, wait_delivered

SUBJECT = "Kế hoạch bảo vệ bí mật nhà nước năm 2027"
CONTENT = "Nội dung tối mật: phương án điều động lực lượng"


def classified_package(
    config: Config,
    recipients: list[str],
    level: Classification = Classification.TOI_MAT,
    *,
    number: int = 1,
    sender: str = G22,
) -> bytes:
    doc = NewEdoc(
        sender=Organ(sender),
        recipients=[Organ(r) for r in recipients],
        document_id=f"{sender},2026/11/22,{number}/M",
        subject=SUBJECT,
        content=CONTENT,
        classification=level,
    )
    return sign_package(config.certs, sender, build_edoc(doc, now=datetime.now(UTC)))


async def send_classified(
    agency, package: bytes, level: str | None = "toi-mat"
) -> tuple[int, dict[str, Any]]:
    client = agency(G22)
    headers = {"X-Classification": level} if level else {}
    async with client.session.post(client.base + "/v1/edocs", data=package, headers=headers) as r:
        return r.status, await r.json()


def open_as(config: Config, code: str, network: Network, sealed: bytes, keys_of: str | None = None):
    return open_delivery(
        sealed,
        trust=trust_for(config),
        network=network,
        at=datetime.now(UTC),
        decryption_keys=decryption_keys(config.certs, keys_of or code),
    )


async def test_level_must_match_the_routing_header(node: Node, config: Config, agency) -> None:
    status, body = await send_classified(agency, classified_package(config, [A01]), level=None)
    assert (status, body["error"]) == (400, "classification_mismatch")
    status, body = await send_classified(agency, classified_package(config, [A01]), level="mat")
    assert (status, body["error"]) == (400, "classification_mismatch")
    status, body = await send_classified(agency, classified_package(config, [A01]), level="secret")
    assert (status, body["error"]) == (400, "bad_request")


async def test_clearance_below_level_is_refused_and_audited(node: Node, config: Config, agency) -> None:
    status, body = await send_classified(agency, classified_package(config, [A01, COMMUNE]))
    assert (status, body["error"]) == (403, "clearance_too_low")
    assert COMMUNE in body["message"] and "'mat'" in body["message"]
    # A retired code whose successor (the commune) is cleared too low: forwarding never lowers protection.
    status, body = await send_classified(agency, classified_package(config, ["H41.12.09"], number=2))
    assert (status, body["error"]) == (403, "clearance_too_low")
    assert "forwarded to its successor" in body["message"]
    refused = await node.store.events_of_kind("refused_clearance")
    assert [e.recipient for e in refused] == [COMMUNE, COMMUNE]
    assert all(SUBJECT not in str(e.detail) for e in refused)
    # Mật to the commune is within its clearance.
    status, _ = await send_classified(
        agency, classified_package(config, [COMMUNE], Classification.MAT, number=3), "mat"
    )
    assert status == 202


async def test_each_recipient_decrypts_and_verifies_nobody_else_can(
    node: Node, config: Config, agency
) -> None:
    status, body = await send_classified(agency, classified_package(config, [A01, I01, H41]))
    assert status == 202, body
    doc_id = body["id"]
    await wait_delivered(node, doc_id)
    stored = await node.store.package(doc_id)
    assert stored is not None and etree.fromstring(stored).tag == f"{{{XENC}}}EncryptedData"
    assert SUBJECT.encode() not in stored and CONTENT.encode() not in stored
    # Encrypted once, wrapped once per recipient.
    encrypted = etree.fromstring(stored)
    assert len(encrypted.findall(f"{{{XENC}}}CipherData")) == 1
    assert len(encrypted.findall(f".//{{{XENC}}}EncryptedKey")) == 3
    record = await node.store.document(doc_id)
    assert record is not None and record.subject is None

    for code, network in ((A01, Network.PARTY), (I01, Network.FRONT), (H41, Network.GOVERNMENT)):
        status, sealed = await agency(code).call("GET", f"/v1/edocs/{doc_id}")
        assert status == 200
        assert SUBJECT.encode() not in sealed  # the bridges carried ciphertext only
        opened = open_as(config, code, network, sealed)
        assert opened.signer.code == G22 and opened.content.subject == SUBJECT
        assert opened.content.classification is Classification.TOI_MAT

    _, sealed = await agency(A01).call("GET", f"/v1/edocs/{doc_id}")
    with pytest.raises(NotARecipient):
        open_as(config, A01, Network.PARTY, sealed, keys_of=G12)  # someone else's keys
    status, body = await agency(G12).call("GET", f"/v1/edocs/{doc_id}")
    assert status == 404


async def test_receipt_is_the_recipients_own_and_digest_checked(node: Node, config: Config, agency) -> None:
    status, body = await send_classified(agency, classified_package(config, [A01, I01]))
    doc_id = body["id"]
    await wait_delivered(node, doc_id)
    _, sealed = await agency(A01).call("GET", f"/v1/edocs/{doc_id}")
    _, receipts = await agency(G22).call("GET", f"/v1/edocs/{doc_id}/receipts")
    # The gateway issued no 01 of its own: only the recipient's system may confirm a classified document.
    assert sorted(receipts["unconfirmed"]) == sorted([A01, I01])

    opened = open_as(config, A01, Network.PARTY, sealed)
    now = datetime.now(UTC)
    wrong = arrival_receipt(config.certs, A01, replace(opened, sealed=opened.sealed + b" "), now=now)
    status, err = await agency(A01).call("POST", f"/v1/edocs/{doc_id}/status", wrong)
    assert (status, err["error"]) == (400, "receipt_mismatch")
    no_digest = sign_package(
        config.certs,
        A01,
        build_status(
            sender=Organ(A01),
            about_organ=G22,
            about_document_id=opened.content.document_id,
            code=StatusCode.ARRIVED,
            now=now,
        ),
    )
    status, err = await agency(A01).call("POST", f"/v1/edocs/{doc_id}/status", no_digest)
    assert (status, err["error"]) == (400, "receipt_mismatch")

    status, ok = await agency(A01).call(
        "POST",
        f"/v1/edocs/{doc_id}/status",
        arrival_receipt(config.certs, A01, opened, now=now),
    )
    assert status == 202, ok
    await wait_delivered(node, ok["id"])
    _, receipts = await agency(G22).call("GET", f"/v1/edocs/{doc_id}/receipts")
    a01 = next(r for r in receipts["recipients"] if r["recipient"] == A01)
    assert [(r["code"], r["signed_by"], r["signature_valid"]) for r in a01["receipts"]] == [("01", A01, True)]
    assert receipts["unconfirmed"] == [I01]


def _resealed(node: Node, delivered: bytes, change) -> bytes:
    """What a compromised gateway could hand out: altered content under a perfectly valid seal."""
    sealed, package = tr.unframe(delivered)
    transfer, _ = node.adapters[Network.PARTY].open(sealed, sealed_by=Network.PARTY)
    encrypted = etree.fromstring(package)
    change(encrypted)
    altered = etree.tostring(encrypted)
    resealed = node.adapters[Network.PARTY].seal(transfer.routing, tr.PackageRef.of(altered, encrypted=True))
    return b"".join(tr.frame(resealed, altered)[1])


def _flip(encrypted: etree._Element, path: str, byte: int) -> None:
    node = encrypted.find(path)
    assert node is not None and node.text is not None
    raw = bytearray(base64.b64decode(node.text))
    raw[byte] ^= 0x01
    node.text = base64.b64encode(bytes(raw)).decode()


CIPHER = f"{{{XENC}}}CipherData/{{{XENC}}}CipherValue"
WRAPPED = f".//{{{XENC}}}EncryptedKey[@Recipient='{A01}']/{{{XENC}}}CipherData/{{{XENC}}}CipherValue"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: _flip(e, CIPHER, 3), "altered"),  # the IV
        (lambda e: _flip(e, CIPHER, 40), "altered"),  # the ciphertext
        (lambda e: _flip(e, CIPHER, -1), "altered"),  # the authentication tag
        (lambda e: _flip(e, WRAPPED, 10), "wrapped key"),  # the wrapped content key
    ],
)
async def test_tampered_ciphertext_never_yields_plaintext(
    node: Node, config: Config, agency, change, message
) -> None:
    status, body = await send_classified(agency, classified_package(config, [A01, I01]))
    await wait_delivered(node, body["id"])
    _, sealed = await agency(A01).call("GET", f"/v1/edocs/{body['id']}")
    with pytest.raises(DecryptionFailed, match=message) as caught:
        open_as(config, A01, Network.PARTY, _resealed(node, sealed, change))
    assert SUBJECT not in str(caught.value) and CONTENT not in str(caught.value)


async def test_swapped_encrypted_key_is_refused(node: Node, config: Config, agency) -> None:
    first = await send_classified(agency, classified_package(config, [A01], number=11))
    second = await send_classified(agency, classified_package(config, [A01], number=12))
    for _, body in (first, second):
        await wait_delivered(node, body["id"])
    _, sealed_1 = await agency(A01).call("GET", f"/v1/edocs/{first[1]['id']}")
    _, sealed_2 = await agency(A01).call("GET", f"/v1/edocs/{second[1]['id']}")
    other_key = etree.fromstring(tr.unframe(sealed_2)[1]).find(f".//{{{XENC}}}EncryptedKey")

    def swap(encrypted: etree._Element) -> None:
        mine = encrypted.find(f".//{{{XENC}}}EncryptedKey")
        assert mine is not None and other_key is not None
        parent = mine.getparent()
        assert parent is not None
        parent.replace(mine, etree.fromstring(etree.tostring(other_key)))

    with pytest.raises(DecryptionFailed, match="altered"):
        open_as(config, A01, Network.PARTY, _resealed(node, sealed_1, swap))


async def test_recipient_failure_is_traced(node: Node, config: Config, agency) -> None:
    status, body = await send_classified(agency, classified_package(config, [A01]))
    await wait_delivered(node, body["id"])
    client = agency(A01)
    async with client.session.post(
        f"{client.base}/v1/edocs/{body['id']}/failures", json={"stage": "decrypt", "reason": "tag mismatch"}
    ) as r:
        assert r.status == 202
    events = await node.store.events(body["id"])
    failed = [e for e in events if e.kind == "recipient_failed"]
    assert failed and failed[0].recipient == A01 and failed[0].detail["reason"] == "tag mismatch"


def test_key_readable_by_others_is_refused_at_start(config: Config) -> None:
    key = config.certs / "server" / "tls.key"
    os.chmod(key, 0o644)
    with pytest.raises(CryptoError, match=str(key)):
        Node(config)
