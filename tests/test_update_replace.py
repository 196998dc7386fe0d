"""Update (BussinessDocType 2) and replace (3), issue 11 item 8, through the real API: linked to the
original by its DocumentId, delivered to the original's recipients, a replaced original shown as
superseded in inbox, fetch, receipts and trace; only the original's sender may change it, never into
something less protected."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.agency_side.packages import sign_package
from gateway.domain.edxml import (
    Business,
    BusinessDocType,
    DocumentRef,
    NewEdoc,
    Organ,
    Replacement,
    build_edoc,
)
from gateway.domain.vocabulary import Classification, StatusCode
from gateway.runtime.config import Config
from gateway.runtime.node import Node
from tests.conftest import A01, G22, H41, set_setting, wait_delivered
from tests.test_classified import classified_package, send_classified
from tests.test_cli import gateway
from tests.test_recall import post_status, sent_to, status


def changing_package(
    config: Config,
    sender: str,
    recipients: list[str],
    original_document_id: str,
    kind: BusinessDocType,
    *,
    in_response_for: bool = True,
    level: Classification = Classification.NONE,
) -> bytes:
    """An update or replacement naming the original: in ResponseFor, or (a replacement) only in
    ReplacementInfoList, both as the axis's clients write them."""
    replacements = (
        (Replacement(original_document_id, tuple(recipients)),) if kind is BusinessDocType.REPLACE else ()
    )
    doc = NewEdoc(
        sender=Organ(sender),
        recipients=[Organ(r) for r in recipients],
        document_id=f"{sender},2026/12/01,{secrets.randbelow(10**6)}/VPCP-TH",
        subject="Về việc triển khai (văn bản thay thế)",
        content="Nội dung mới, thay cho văn bản đã gửi",
        classification=level,
        response_for=DocumentRef(organ=G22, document_id=original_document_id) if in_response_for else None,
        business=Business(doc_type=kind, reason="Sai sót về số liệu", replacements=replacements),
    )
    return sign_package(config.certs, sender, build_edoc(doc, now=datetime.now(UTC)))


async def inbox_of(agency: Any, who: str) -> dict[str, dict[str, Any]]:
    code, body = await agency(who).call("GET", "/v1/inbox?all=1")
    assert code == 200, body
    return {d["id"]: d for d in body["documents"] if d["kind"] == "edoc"}


async def test_a_replacement_reaches_the_originals_recipients_and_supersedes_it(
    node: Node, config: Config, agency: Any
) -> None:
    original, document_id = await sent_to(node, config, agency, [A01, H41], "Về việc thay thế thử")
    # Named only in ReplacementInfoList and addressed to one recipient: it still reaches both.
    package = changing_package(
        config, G22, [A01], document_id, BusinessDocType.REPLACE, in_response_for=False
    )
    code, body = await agency(G22).send(package)
    assert code == 202, body
    new = body["id"]
    assert sorted(r["code"] for r in body["recipients"]) == sorted([A01, H41])
    await wait_delivered(node, new)

    for who in (A01, H41):
        inbox = await inbox_of(agency, who)
        assert inbox[original]["superseded_by"] == new, who
        assert (inbox[new]["replaces"], inbox[new]["updates"], inbox[new]["superseded_by"]) == (
            original,
            None,
            None,
        )

    async with agency(A01).session.get(f"{agency(A01).base}/v1/edocs/{original}") as resp:
        assert resp.status == 200 and resp.headers.get("X-Superseded-By") == new
    async with agency(A01).session.get(f"{agency(A01).base}/v1/edocs/{new}") as resp:
        assert resp.status == 200 and "X-Superseded-By" not in resp.headers

    code, receipts = await agency(G22).call("GET", f"/v1/edocs/{original}/receipts")
    assert code == 200 and receipts["superseded_by"] == new
    code, receipts = await agency(G22).call("GET", f"/v1/edocs/{new}/receipts")
    assert (receipts["replaces"], receipts["superseded_by"]) == (original, None)

    code, trace = await agency(G22).call("GET", f"/v1/edocs/{original}/trace")
    marks = [(e["recipient"], e["detail"]["by"]) for e in trace["events"] if e["event"] == "superseded"]
    assert marks == [(None, new)]
    code, theirs = await agency(H41).call("GET", f"/v1/edocs/{original}/trace")
    assert [e["detail"]["by"] for e in theirs["events"] if e["event"] == "superseded"] == [new]

    # Each recipient answers the replacement, as a status to it: 15 agrees, 16 refuses.
    new_document_id = receipts["document_id"]
    await post_status(
        node, agency, A01, new, status(config, A01, G22, new_document_id, StatusCode.RECALL_AGREED)
    )
    await post_status(
        node, agency, H41, new, status(config, H41, G22, new_document_id, StatusCode.RECALL_REFUSED)
    )
    code, receipts = await agency(G22).call("GET", f"/v1/edocs/{new}/receipts")
    said = {r["recipient"]: [s["code"] for s in r["receipts"]] for r in receipts["recipients"]}
    assert said[A01][-1] == "15" and said[H41][-1] == "16", said
    assert {r["recipient"]: r["change"] for r in receipts["recipients"]} == {A01: "agreed", H41: "refused"}
    code, receipts = await agency(G22).call("GET", f"/v1/edocs/{original}/receipts")
    assert {r["recipient"]: r["change"] for r in receipts["recipients"]} == {A01: None, H41: None}


async def test_an_update_is_linked_but_supersedes_nothing(node: Node, config: Config, agency: Any) -> None:
    original, document_id = await sent_to(node, config, agency, [A01], "Về việc cập nhật thử")
    code, body = await agency(G22).send(
        changing_package(config, G22, [A01], document_id, BusinessDocType.UPDATE)
    )
    assert code == 202, body
    await wait_delivered(node, body["id"])
    inbox = await inbox_of(agency, A01)
    assert inbox[original]["superseded_by"] is None
    assert (inbox[body["id"]]["updates"], inbox[body["id"]]["replaces"]) == (original, None)
    code, trace = await agency(A01).call("GET", f"/v1/edocs/{original}/trace")
    assert [(e["event"], e["detail"]["by"]) for e in trace["events"] if e["event"] == "updated"] == [
        ("updated", body["id"])
    ]


async def test_only_the_sender_may_change_a_known_document(node: Node, config: Config, agency: Any) -> None:
    _, document_id = await sent_to(node, config, agency, [A01], "Về việc thay thế sai")
    for kind in (BusinessDocType.UPDATE, BusinessDocType.REPLACE):
        unknown = changing_package(config, G22, [A01], f"{G22},2026/11/30,1/KHONG-CO", kind)
        code, body = await agency(G22).send(unknown)
        assert (code, body["error"]) == (422, "unknown_document"), body
        code, body = await agency(H41).send(changing_package(config, H41, [A01], document_id, kind))
        assert (code, body["error"]) == (403, "forbidden"), body


async def test_a_change_is_classified_at_least_as_high_as_the_original(
    node: Node, config: Config, agency: Any
) -> None:
    code, body = await send_classified(agency, classified_package(config, [A01], number=81))
    assert code == 202, body
    original_document_id = f"{G22},2026/11/22,81/M"
    lower = changing_package(
        config, G22, [A01], original_document_id, BusinessDocType.REPLACE, level=Classification.MAT
    )
    code, body = await send_classified(agency, lower, level="mat")
    assert (code, body["error"]) == (400, "classification_below_original"), body
    same = changing_package(
        config, G22, [A01], original_document_id, BusinessDocType.REPLACE, level=Classification.TOI_MAT
    )
    code, body = await send_classified(agency, same, level="toi-mat")
    assert code == 202, body
    await wait_delivered(node, body["id"])
    code, receipts = await agency(G22).call("GET", f"/v1/edocs/{body['id']}/receipts")
    assert receipts["replaces"] is not None


async def test_update_and_replace_from_the_cli(node: Node, config: Config, home: Path, agency: Any) -> None:
    set_setting(home, "port", str(node.port))
    original, _ = await sent_to(node, config, agency, [A01, H41], "Về việc thay thế qua dòng lệnh")

    updated = await gateway(
        home,
        "send",
        "--as",
        G22,
        "--updates",
        original,
        "--subject",
        "Bổ sung số liệu",
        "--reason",
        "Thiếu phụ lục",
    )
    assert updated.returncode == 0, updated.stderr
    update_id = updated.stdout.split()[0]
    assert A01 in updated.stdout and H41 in updated.stdout  # --to defaults to the original's recipients
    await wait_delivered(node, update_id)

    replaced = await gateway(
        home,
        "send",
        "--as",
        G22,
        "--replaces",
        original,
        "--subject",
        "Văn bản thay thế",
        "--reason",
        "Sai số",
    )
    assert replaced.returncode == 0, replaced.stderr
    new = replaced.stdout.split()[0]
    await wait_delivered(node, new)

    stranger = await gateway(
        home, "send", "--as", H41, "--replaces", original, "--subject", "Không phải của tôi"
    )
    assert stranger.returncode == 1 and "HTTP 403" in stranger.stderr, stranger.stderr

    inbox = await gateway(home, "inbox", "--as", A01)
    lines = {x.split()[0]: x for x in inbox.stdout.splitlines() if x.strip()}
    assert lines[original].endswith(f"[superseded by {new}]"), inbox.stdout
    assert lines[update_id].endswith(f"[updates {original}]") and lines[new].endswith(
        f"[replaces {original}]"
    )

    receipts = await gateway(home, "receipts", "--as", G22, original)
    assert receipts.returncode == 0 and f"[superseded by {new}]" in receipts.stdout.splitlines()[0]
    trace = json.loads((await gateway(home, "trace", original, "--json")).stdout)
    assert [
        (e["event"], e["detail"]["by"]) for e in trace["events"] if e["event"] in ("updated", "superseded")
    ] == [
        ("updated", update_id),
        ("superseded", new),
    ]

    receipts = await gateway(home, "receipts", "--as", G22, new)
    assert f"{A01} [party] delivered  change asked" in receipts.stdout, receipts.stdout
    answered = await gateway(home, "status", "--as", A01, new, "15", "--note", "Đồng ý thay thế")
    assert answered.returncode == 0 and G22 in answered.stdout, answered.stderr
    await wait_delivered(node, answered.stdout.split()[0])
    receipts = await gateway(home, "receipts", "--as", G22, new)
    assert f"{A01} [party] delivered  change agreed" in receipts.stdout, receipts.stdout
