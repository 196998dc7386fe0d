"""Real-world edXML (issue 11, items 1–7 and 9; issue 12 item 5), through the real API.

The packages come from the corpus in ``tests/data/edxml/`` (shapes as the axis's SDKs write them:
the ``edXML`` root, children out of the textbook order, the SDK's extra elements and legacy
signature, zip attachments), filled in and signed with real keys made at test time. What the
gateway emits is read back with the same rules it accepts with.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import secrets
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from lxml import etree

from gateway.agency_side.packages import open_delivery, sign_package
from gateway.crypto.xmldsig import verify_enveloped
from gateway.domain.edxml import (
    DS,
    NS,
    Attachment,
    Edoc,
    NewEdoc,
    Organ,
    Status,
    attachments_of,
    build_edoc,
    build_status,
    check_attachment_name,
    envelope_rooted,
    header_of,
    q,
    read_package,
    signature_location,
    validate_package,
)
from gateway.domain.vocabulary import Network, StatusCode
from gateway.domain.xmlsafe import parse_xml
from gateway.errors import InvalidAttachmentName
from gateway.runtime.config import Config
from gateway.runtime.node import Node
from tests.conftest import A01, G22, H41, trust_for, wait_delivered

DATA = Path(__file__).parent / "data" / "edxml"
VIETNAM = ZoneInfo("Asia/Ho_Chi_Minh")
_MARKER = re.compile(r"@[A-Z_]+@")


def zipped_pdf() -> bytes:
    """An attachment as the SDK sends one: a zip holding one ``<uuid>.pdf`` (made now, random)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{secrets.token_hex(16)}.pdf", b"%PDF-1.7\n" + secrets.token_bytes(3000))
    return buffer.getvalue()


def to(*codes: str) -> str:
    return "".join(f"<edXML:To><edXML:OrganId>{code}</edXML:OrganId></edXML:To>" for code in codes)


def fill(template: str, **values: str) -> bytes:
    text = (DATA / template).read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    left = _MARKER.findall(text)
    assert not left, f"test bug: {template} still has {left}"
    return text.encode("utf-8")


def edoc_values(sender: str, recipients: list[str], zipped: bytes, **overrides: str) -> dict[str, str]:
    values = {
        "FROM": sender,
        "TO": to(*recipients),
        "DOCUMENT_ID": f"{sender},2026/03/02,{secrets.randbelow(10**6)}/VPCP-HC",
        "DUE": "2026/03/20",
        "PRIORITY": "1",
        "CLASSIFICATION": "",
        "CID": secrets.token_hex(8),
        "ATTACHMENT_NAME": "415-VPCP-HC.zip",
        # Wrapped at 76 columns, as MIME encoders (and the SDKs) write base64.
        "ZIP_BASE64": base64.encodebytes(zipped).decode("ascii"),
        "MORE_REFERENCES": "",
        "MORE_ATTACHMENTS": "",
        # A reply to a document this gateway never saw: informational, carried as written.
        "RESPONSE_FOR_DOCUMENT": "000.00.00.H41,2026/02/20,88/UBND-VX",
        "RESPONSE_FOR_ORGAN": "000.00.00.H41",
        "DOC_TYPE": "0",
        "DOC_REASON": "",
        "REPLACEMENTS": "",
    }
    values.update(overrides)
    return values


def signed(config: Config, signer: str, raw: bytes) -> bytes:
    return sign_package(config.certs, signer, parse_xml(raw))


def sdk_edoc(config: Config, sender: str, recipients: list[str], **overrides: str) -> bytes:
    values = edoc_values(sender, recipients, zipped_pdf(), **overrides)
    return signed(config, sender, fill("sdk_edoc.xml", **values))


async def inbox_of(agency, code: str) -> list[dict[str, Any]]:
    status, body = await agency(code).call("GET", "/v1/inbox")
    assert status == 200
    return list(body["documents"])


# --- both roots, delivered as sent ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "due", "due_at", "declared_type"),
    [
        pytest.param(
            "sdk_edoc.xml",
            "2026/03/20",
            datetime(2026, 3, 20, 23, 59, 59, tzinfo=VIETNAM),
            "application/zip",  # the manifest says pdf; the attachment's own ContentType wins
            id="edXML-root",
        ),
        pytest.param(
            "envelope_edoc.xml",
            "20/03/2026 17:00:00",
            datetime(2026, 3, 20, 17, 0, 0, tzinfo=VIETNAM),
            "application/zip",
            id="edXMLEnvelope-root",
        ),
    ],
)
async def test_sdk_shaped_packages_on_both_roots_are_accepted_and_delivered_byte_for_byte(
    node: Node, config: Config, agency, template: str, due: str, due_at: datetime, declared_type: str
) -> None:
    zipped = zipped_pdf()
    values = edoc_values(G22, [A01], zipped, DUE=due)
    package = signed(config, G22, fill(template, **values))
    status, body = await agency(G22).send(package)
    assert status == 202, body
    assert [r["code"] for r in body["recipients"]] == [A01]
    doc_id = body["id"]
    stored = await node.store.document(doc_id)
    assert stored is not None and stored.due_at == due_at
    await wait_delivered(node, doc_id)

    status, sealed = await agency(A01).call("GET", f"/v1/edocs/{doc_id}")
    assert status == 200
    opened = open_delivery(sealed, trust=trust_for(config), network=Network.PARTY, at=datetime.now(UTC))
    assert opened.package == package  # the sender's bytes, signature and all
    assert isinstance(opened.content, Edoc)
    assert (opened.content.sender, opened.content.document_id) == (G22, values["DOCUMENT_ID"])
    [attachment] = attachments_of(parse_xml(opened.package))
    assert attachment.data == zipped
    assert attachment.content_type == declared_type
    assert zipfile.ZipFile(io.BytesIO(attachment.data)).testzip() is None


async def test_legacy_signature_beside_a_real_one_is_carried_inert(
    node: Node, config: Config, agency
) -> None:
    package = sdk_edoc(config, G22, [A01])
    status, body = await agency(G22).send(package)
    assert status == 202, body
    await wait_delivered(node, body["id"])
    _, sealed = await agency(A01).call("GET", f"/v1/edocs/{body['id']}")
    opened = open_delivery(sealed, trust=trust_for(config), network=Network.PARTY, at=datetime.now(UTC))
    header = header_of(parse_xml(opened.package))
    children = [child.tag for child in header]
    # Carried where the SDK put it, and the real signature is last, where it was verified.
    assert children[-2:] == [q("Signature"), q("Signature", DS)]
    assert opened.signer.code == G22


async def test_a_package_signed_only_with_the_sdk_legacy_signature_is_refused_saying_how_to_sign(
    node: Node, agency
) -> None:
    raw = fill("legacy_signature_only.xml", FROM=G22, TO=to(A01), DOCUMENT_ID=f"{G22},2026/03/02,1/GW")
    status, body = await agency(G22).send(raw)
    assert (status, body["error"]) == (400, "signature_invalid")
    for advice in ("XMLDSig", "RSA-SHA256", "last child of edXMLHeader"):
        assert advice in body["message"]
    assert await inbox_of(agency, A01) == []


async def test_an_empty_due_date_means_none(node: Node, config: Config, agency) -> None:
    status, body = await agency(G22).send(sdk_edoc(config, G22, [A01], DUE=""))
    assert status == 202, body
    stored = await node.store.document(body["id"])
    assert stored is not None and stored.due_at is None


# --- refusals, each with its own code, nothing stored ----------------------------------------


TWO_CLASSIFICATIONS = (
    "<gw:Classification>none</gw:Classification><gw:Classification>toi-mat</gw:Classification>"
)
SECOND_REFERENCE = """<edXML:Reference><edXML:ContentId>cid:phu-luc</edXML:ContentId>
  <edXML:ContentType>application/pdf</edXML:ContentType><edXML:AttachmentName>phu-luc.pdf</edXML:AttachmentName>
</edXML:Reference>"""
SECOND_ATTACHMENT = """<Attachment><ContentId>phu-luc</ContentId><AttachmentName>phu-luc.pdf</AttachmentName>
  <ContentType>application/pdf</ContentType><ContentTransferEncoded>JVBERi0xLjcK</ContentTransferEncoded>
</Attachment>"""


@pytest.mark.parametrize(
    ("overrides", "code", "named"),
    [
        pytest.param({"DUE": "2026/02/30"}, "invalid_date", "DueDate (2026/02/30)", id="impossible-DueDate"),
        pytest.param(
            {"DUE": "30/02/2026 10:00:00"}, "invalid_date", "DueDate", id="impossible-DueDate-dd/MM"
        ),
        pytest.param({"DUE": "sáng thứ Hai"}, "invalid_date", "DueDate", id="DueDate-not-a-date"),
        pytest.param(
            {"CLASSIFICATION": TWO_CLASSIFICATIONS},
            "duplicate_field",
            "gw:Classification",
            id="two-Classifications",
        ),
        pytest.param(
            {"TO": to(A01) + "<edXML:From><edXML:OrganId>000.00.00.H41</edXML:OrganId></edXML:From>"},
            "duplicate_field",
            "edXML:From",
            id="two-Froms",
        ),
        pytest.param(
            {"TO": to(A01) + f"<edXML:DocumentId>{G22},2026/03/02,1/GW</edXML:DocumentId>"},
            "duplicate_field",
            "edXML:DocumentId",
            id="two-DocumentIds",
        ),
        pytest.param(
            {"PRIORITY": "0</edXML:Priority><edXML:Priority>3"},
            "duplicate_field",
            "Priority",
            id="two-Priorities",
        ),
        pytest.param(
            {"DUE": "2026/03/20</edXML:DueDate><edXML:DueDate>2026/04/20"},
            "duplicate_field",
            "DueDate",
            id="two-DueDates",
        ),
        pytest.param({"TO": to("vxp.saas.03")}, "invalid_agency_code", "To[1]", id="test-tenant-recipient"),
        pytest.param({"TO": to(A01, "null")}, "invalid_agency_code", "To[2]", id="null-recipient"),
        pytest.param(
            {"MORE_REFERENCES": SECOND_REFERENCE},
            "attachment_mismatch",
            "Reference 2",
            id="missing-attachment",
        ),
        pytest.param(
            {"MORE_ATTACHMENTS": SECOND_ATTACHMENT},
            "attachment_mismatch",
            "Attachment 2",
            id="unlisted-attachment",
        ),
        *(
            pytest.param({"ATTACHMENT_NAME": name}, "invalid_attachment_name", "Attachment 1", id=why)
            for name, why in [
                ("../../../../etc/cron.d/x", "dot-dot-path"),
                ("thu-muc/van-ban.zip", "slash"),
                ("thu-muc\\van-ban.zip", "backslash"),
                ("..", "dot-dot"),
                ("van ban&#9;.zip", "tab"),
                ("van ban&#x85;.zip", "C1-control"),
                ("van ban&#x202e;piz.exe", "bidi-override"),
                ("ệ" * 86, "over-255-bytes"),
            ]
        ),
    ],
)
async def test_refused_with_its_own_code_and_nothing_stored(
    node: Node, config: Config, agency, overrides: dict[str, str], code: str, named: str
) -> None:
    status, body = await agency(G22).send(sdk_edoc(config, G22, [A01], **overrides))
    assert (status, body["error"]) == (400, code), body
    assert named in body["message"], body["message"]
    assert await node.store.pending_routes() == 0
    assert await inbox_of(agency, A01) == []


async def test_a_sender_code_that_is_not_an_agency_code_is_refused(
    node: Node, config: Config, agency
) -> None:
    raw = fill("sdk_edoc.xml", **edoc_values("null", [A01], zipped_pdf()))
    status, body = await agency(G22).send(signed(config, G22, raw))
    assert (status, body["error"]) == (400, "invalid_agency_code")
    assert "From/edXML:OrganId" in body["message"]


def test_a_nul_in_an_attachment_name_is_refused() -> None:
    # XML 1.0 cannot carry a NUL at all (the parser refuses it first); the rule holds on its own too.
    with pytest.raises(InvalidAttachmentName):
        check_attachment_name("van-ban\x00.pdf", "Attachment 1")
    check_attachment_name("Quyết định số 12.pdf", "Attachment 1")


# --- statuses in the axis's shape, both ways -----------------------------------------------------


def status_package(
    config: Config,
    sender: str,
    addressee: str,
    document_id: str,
    code: str,
    *,
    timestamp: str = "2026/03/02 10:00:00",
) -> bytes:
    raw = fill(
        "status.xml",
        FROM=sender,
        ADDRESSEE=addressee,
        DOCUMENT_ID=document_id,
        CODE_NOTATION=document_id.rsplit(",", 1)[-1],
        STATUS=code,
        DESCRIPTION="Cập nhật trạng thái xử lý",
        TIMESTAMP=timestamp,
    )
    return signed(config, sender, raw)


async def _delivered_edoc(node: Node, config: Config, agency) -> tuple[str, str]:
    values = edoc_values(G22, [A01], zipped_pdf())
    status, body = await agency(G22).send(signed(config, G22, fill("sdk_edoc.xml", **values)))
    assert status == 202, body
    await wait_delivered(node, body["id"])
    return body["id"], values["DOCUMENT_ID"]


TIMESTAMPS = ["2026/03/02 10:00:00", "02/03/2026 10:01:00", "2026-03-02 10:02:00", "2026/03/02"]


async def test_all_nine_status_codes_in_the_axis_shape_are_accepted(
    node: Node, config: Config, agency
) -> None:
    doc_id, document_id = await _delivered_edoc(node, config, agency)
    recipient_codes = [c for c in StatusCode if not c.from_sender]
    for n, code in enumerate(recipient_codes):
        package = status_package(config, A01, G22, document_id, code.value, timestamp=TIMESTAMPS[n % 4])
        status, body = await agency(A01).call("POST", f"/v1/edocs/{doc_id}/status", package)
        assert status == 202, (code, body)
        assert [r["code"] for r in body["recipients"]] == [G22]
    # A recall (13) comes from the sender, addressed as the axis's clients address it: to the recipient.
    recall = status_package(config, G22, A01, document_id, "13")
    status, body = await agency(G22).call("POST", f"/v1/edocs/{doc_id}/status", recall)
    assert status == 202, body
    assert [r["code"] for r in body["recipients"]] == [A01]

    status, receipts = await agency(G22).call("GET", f"/v1/edocs/{doc_id}/receipts")
    assert status == 200
    row = receipts["recipients"][0]
    assert [(r["code"], r["signature_valid"]) for r in row["receipts"]] == [
        (c.value, True) for c in recipient_codes
    ]
    assert [(s["code"], s["signature_valid"]) for s in receipts["sender_statuses"]] == [("13", True)]


@pytest.mark.parametrize(
    ("sender", "addressee", "code", "timestamp", "error", "named"),
    [
        pytest.param(
            A01, G22, "03", "2026/02/29 10:00:00", "invalid_date", "Timestamp", id="impossible-Timestamp"
        ),
        pytest.param(
            A01, H41, "03", "2026/03/02 10:00:00", "bad_request", "ResponseFor/OrganId", id="wrong-addressee"
        ),
        pytest.param(
            G22,
            H41,
            "13",
            "2026/03/02 10:00:00",
            "bad_request",
            "ResponseFor/OrganId",
            id="recall-a-stranger",
        ),
        pytest.param(
            A01,
            "vxp.saas.03",
            "03",
            "2026/03/02 10:00:00",
            "invalid_agency_code",
            "ResponseFor",
            id="bad-code",
        ),
        pytest.param(
            A01,
            G22,
            "03</edXML:StatusCode><edXML:StatusCode>06",
            "2026/03/02",
            "duplicate_field",
            "StatusCode",
            id="two-StatusCodes",
        ),
    ],
)
async def test_status_refusals(
    node: Node,
    config: Config,
    agency,
    sender: str,
    addressee: str,
    code: str,
    timestamp: str,
    error: str,
    named: str,
) -> None:
    doc_id, document_id = await _delivered_edoc(node, config, agency)
    package = status_package(config, sender, addressee, document_id, code, timestamp=timestamp)
    status, body = await agency(sender).call("POST", f"/v1/edocs/{doc_id}/status", package)
    assert (status, body["error"]) == (400, error), body
    assert named in body["message"], body["message"]


async def test_a_status_with_a_to_is_refused(node: Node, config: Config, agency) -> None:
    doc_id, document_id = await _delivered_edoc(node, config, agency)
    raw = fill(
        "status.xml", FROM=A01, ADDRESSEE=G22, DOCUMENT_ID=document_id, CODE_NOTATION="415/VPCP-HC",
        STATUS="03", DESCRIPTION="", TIMESTAMP="2026/03/02 10:00:00",
    )  # fmt: skip
    raw = raw.replace(b"<edXML:ResponseFor>", to(H41).encode() + b"<edXML:ResponseFor>")
    status, body = await agency(A01).call("POST", f"/v1/edocs/{doc_id}/status", signed(config, A01, raw))
    assert (status, body["error"]) == (400, "schema_invalid")
    assert "ResponseFor/OrganId" in body["message"]


def _assert_axis_status(package: bytes, *, sender: str, addressee: str, code: str) -> Status:
    root = parse_xml(package)
    assert root.tag == q("edXML")
    validate_package(root)  # the rules the gateway accepts with
    read = read_package(root)
    assert isinstance(read, Status)
    assert (read.sender, read.about_organ, read.code.value) == (sender, addressee, code)
    message = header_of(root).find(q("MessageHeader"))
    assert message is not None
    names = [etree.QName(child).localname for child in message]
    assert "To" not in names
    assert {"From", "ResponseFor", "StaffInfo", "StatusCode", "Description", "Timestamp"} <= set(names)
    assert header_of(root)[-1].tag == q("Signature", DS)  # XMLDSig, last child of edXMLHeader
    return read


async def test_the_01_made_on_fetch_is_in_the_axis_shape_and_signed(
    node: Node, config: Config, agency
) -> None:
    doc_id, _ = await _delivered_edoc(node, config, agency)
    status, _ = await agency(A01).call("GET", f"/v1/edocs/{doc_id}")
    assert status == 200
    for _ in range(500):  # the 01 travels back to the sender's network first
        found = [d for d in await inbox_of(agency, G22) if d["response_for"] == doc_id]
        if found:
            break
        await asyncio.sleep(0.02)
    [item] = found
    status, sealed = await agency(G22).call("GET", f"/v1/edocs/{item['id']}")
    assert status == 200
    opened = open_delivery(sealed, trust=trust_for(config), network=Network.GOVERNMENT, at=datetime.now(UTC))
    read = _assert_axis_status(opened.package, sender=A01, addressee=G22, code="01")
    assert read.delivered_digest is not None
    assert opened.signer.code == "ADAPTER.PARTY"


# --- round trip: what the gateway builds, it accepts ---------------------------------------------


@pytest.mark.parametrize("code", list(StatusCode))
def test_every_status_the_cli_builds_reads_back_with_the_intake_rules(
    config: Config, code: StatusCode
) -> None:
    sender, addressee = (G22, A01) if code.from_sender else (A01, G22)
    root = build_status(
        sender=Organ(sender),
        about_organ=addressee,
        about_document_id=f"{G22},2026/03/02,415/VPCP-HC",
        code=code,
        now=datetime(2026, 3, 2, 10, 0, tzinfo=VIETNAM),
        description="Ghi chú",
    )
    package = sign_package(config.certs, sender, root)
    read = _assert_axis_status(package, sender=sender, addressee=addressee, code=code.value)
    assert read.timestamp == "2026/03/02 10:00:00"
    parsed = parse_xml(package)
    verify_enveloped(parsed, location=signature_location(parsed), check_certificate=lambda cert: cert)


@pytest.mark.parametrize("shape", ["edXML", "edXMLEnvelope"])
def test_a_built_edoc_reads_back_on_both_roots(config: Config, shape: str) -> None:
    zipped = zipped_pdf()
    doc = NewEdoc(
        sender=Organ(G22, "Văn phòng Chính phủ"),
        recipients=[Organ(A01), Organ("28.22.H17")],
        document_id=f"{G22},2026/03/02,415/VPCP-HC",
        subject="Về việc rà soát",
        due="2026/03/20 17:00:00",
        attachments=[Attachment("415-VPCP-HC.zip", "application/zip", zipped)],
    )
    built = build_edoc(doc, now=datetime(2026, 3, 2, 8, 0, tzinfo=VIETNAM))
    root = parse_xml(
        sign_package(config.certs, G22, envelope_rooted(built) if shape == "edXMLEnvelope" else built)
    )
    assert root.tag == q(shape)
    validate_package(root)
    read = read_package(root)
    assert isinstance(read, Edoc)
    assert read.recipients == (A01, "28.22.H17")
    assert read.due == "2026/03/20 17:00:00"
    assert [a.data for a in attachments_of(root)] == [zipped]
    if shape == "edXML":
        # The SDKs' look: default namespace on the root, AttachmentEncoded beside the envelope, unprefixed.
        assert root.nsmap.get(None) == NS
        assert [etree.QName(c).localname for c in root] == ["edXMLEnvelope", "AttachmentEncoded"]
        assert root[1].prefix is None and root[0].prefix == "edXML"
        assert root.find(f".//{q('Bussiness')}") is not None


async def _sent_as_sdk(node: Node, config: Config, agency, recipients: list[str]) -> tuple[str, str]:
    """An original in the SDK shape, delivered; returns its id and DocumentId."""
    values = edoc_values(G22, recipients, zipped_pdf())
    status, body = await agency(G22).send(signed(config, G22, fill("sdk_edoc.xml", **values)))
    assert status == 202, body
    await wait_delivered(node, body["id"])
    return body["id"], values["DOCUMENT_ID"]


def _change(config: Config, recipients: list[str], original: str, doc_type: str, **more: str) -> bytes:
    """A recall (1), update (2) or replacement (3) in the SDK shape, naming ``original`` in
    ResponseFor as the axis's clients write it."""
    values = edoc_values(
        G22,
        recipients,
        zipped_pdf(),
        RESPONSE_FOR_DOCUMENT=original,
        RESPONSE_FOR_ORGAN=G22,
        DOC_TYPE=doc_type,
        DOC_REASON="Sai sót về số liệu",
        **more,
    )
    return signed(config, G22, fill("sdk_edoc.xml", **values))


async def test_sdk_shaped_recall_update_and_replace_are_linked_to_their_original(
    node: Node, config: Config, agency
) -> None:
    # Recall (BussinessDocType 1): it reaches every recipient of the original, which is asked.
    recalled_id, recalled = await _sent_as_sdk(node, config, agency, [A01, H41])
    status, body = await agency(G22).send(_change(config, [A01], recalled, "1"))
    assert status == 202, body
    assert sorted(r["code"] for r in body["recipients"]) == sorted([A01, H41])
    await wait_delivered(node, body["id"])
    status, receipts = await agency(G22).call("GET", f"/v1/edocs/{recalled_id}/receipts")
    assert status == 200
    assert {r["recipient"]: r["recall"] for r in receipts["recipients"]} == {A01: "asked", H41: "asked"}

    # Update (2): linked, supersedes nothing.
    updated_id, updated = await _sent_as_sdk(node, config, agency, [A01])
    status, body = await agency(G22).send(_change(config, [A01], updated, "2"))
    assert status == 202, body
    await wait_delivered(node, body["id"])
    # Replace (3), with its ReplacementInfoList: the original shows as superseded by it.
    replaced_id, replaced = await _sent_as_sdk(node, config, agency, [A01])
    replacements = (
        "<edXML:ReplacementInfoList><edXML:ReplacementInfo>"
        f"<edXML:DocumentId>{replaced}</edXML:DocumentId>"
        f"<edXML:OrganIdList><edXML:OrganId>{A01}</edXML:OrganId></edXML:OrganIdList>"
        "</edXML:ReplacementInfo></edXML:ReplacementInfoList>"
    )
    status, body = await agency(G22).send(_change(config, [A01], replaced, "3", REPLACEMENTS=replacements))
    assert status == 202, body
    replacement_id = body["id"]
    await wait_delivered(node, replacement_id)

    status, inbox = await agency(A01).call("GET", "/v1/inbox?all=1")
    assert status == 200
    by_id = {d["id"]: d for d in inbox["documents"]}
    assert by_id[replaced_id]["superseded_by"] == replacement_id
    assert by_id[updated_id]["superseded_by"] is None  # an update supersedes nothing


async def test_a_change_of_an_unknown_or_anothers_document_is_refused_in_the_sdk_shape(
    node: Node, config: Config, agency
) -> None:
    status, body = await agency(G22).send(_change(config, [A01], f"{G22},2026/01/01,1/KHONG-CO", "3"))
    assert (status, body["error"]) == (422, "unknown_document"), body
    # H41's document, "replaced" by G22: only an original's sender may change it.
    values = edoc_values(H41, [A01], zipped_pdf())
    status, body = await agency(H41).send(signed(config, H41, fill("sdk_edoc.xml", **values)))
    assert status == 202, body
    status, body = await agency(G22).send(_change(config, [A01], values["DOCUMENT_ID"], "2"))
    assert status == 403, body
