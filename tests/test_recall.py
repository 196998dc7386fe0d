"""Recall (issue 11 item 8), through the real API and the CLI: the original's sender asks with a
13, every recipient of the original gets it, each answers 15 (agrees) or 16 (refuses); an agreed
recall shows in that recipient's inbox and, per recipient, in the sender's receipts."""

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
    build_edoc,
    build_status,
)
from gateway.domain.vocabulary import StatusCode
from gateway.runtime.config import Config
from gateway.runtime.node import Node
from tests.conftest import A01, G22, H41, make_package, set_setting, wait_delivered
from tests.test_cli import gateway


def status(config: Config, sender: str, addressee: str, document_id: str, code: StatusCode) -> bytes:
    root = build_status(
        sender=Organ(sender),
        about_organ=addressee,
        about_document_id=document_id,
        code=code,
        now=datetime.now(UTC),
        description="Văn bản ban hành nhầm, đề nghị trả lại",
    )
    return sign_package(config.certs, sender, root)


async def sent_to(
    node: Node, config: Config, agency: Any, recipients: list[str], subject: str
) -> tuple[str, str]:
    document_id = f"{G22},2026/11/30,{abs(hash(subject)) % 10**6}/VPCP-TH"
    code, body = await agency(G22).send(
        make_package(config, G22, recipients, subject=subject, document_id=document_id)
    )
    assert code == 202, body
    await wait_delivered(node, body["id"])
    return body["id"], document_id


async def post_status(node: Node, agency: Any, who: str, doc_id: str, package: bytes) -> dict[str, Any]:
    code, body = await agency(who).call("POST", f"/v1/edocs/{doc_id}/status", package)
    assert code == 202, body
    await wait_delivered(node, body["id"])
    return body  # type: ignore[no-any-return]


def recall_column(receipts: dict[str, Any]) -> dict[str, Any]:
    return {r["recipient"]: r["recall"] for r in receipts["recipients"]}


async def inbox_recalled(agency: Any, who: str) -> dict[str, bool]:
    code, body = await agency(who).call("GET", "/v1/inbox?all=1")
    assert code == 200, body
    return {d["id"]: d["recalled"] for d in body["documents"] if d["kind"] == "edoc"}


async def test_a_recall_reaches_every_recipient_and_each_answer_is_shown(
    node: Node, config: Config, agency: Any
) -> None:
    doc_id, document_id = await sent_to(node, config, agency, [A01, H41], "Về việc thu hồi thử")
    code, receipts = await agency(G22).call("GET", f"/v1/edocs/{doc_id}/receipts")
    assert code == 200 and recall_column(receipts) == {A01: None, H41: None}

    # As the axis's clients write it, the 13 names one recipient; it still asks them all.
    asked = await post_status(
        node, agency, G22, doc_id, status(config, G22, A01, document_id, StatusCode.RECALL_REQUESTED)
    )
    assert sorted(r["code"] for r in asked["recipients"]) == sorted([A01, H41])
    for who in (A01, H41):
        code, inbox = await agency(who).call("GET", "/v1/inbox")
        assert any(d["status_code"] == "13" and d["response_for"] == doc_id for d in inbox["documents"]), who
    code, receipts = await agency(G22).call("GET", f"/v1/edocs/{doc_id}/receipts")
    assert recall_column(receipts) == {A01: "asked", H41: "asked"}
    assert [s["code"] for s in receipts["sender_statuses"]] == ["13"]

    agreed = await post_status(
        node, agency, A01, doc_id, status(config, A01, G22, document_id, StatusCode.RECALL_AGREED)
    )
    assert [r["code"] for r in agreed["recipients"]] == [G22]
    await post_status(
        node, agency, H41, doc_id, status(config, H41, G22, document_id, StatusCode.RECALL_REFUSED)
    )

    code, receipts = await agency(G22).call("GET", f"/v1/edocs/{doc_id}/receipts")
    assert recall_column(receipts) == {A01: "agreed", H41: "refused"}
    assert (await inbox_recalled(agency, A01))[doc_id] is True
    assert (await inbox_recalled(agency, H41))[doc_id] is False
    # A recipient sees its own part only.
    code, mine = await agency(H41).call("GET", f"/v1/edocs/{doc_id}/receipts")
    assert recall_column(mine) == {H41: "refused"}

    # Asked again, the one who refused is asked anew; the one who agreed stays recalled.
    await post_status(
        node, agency, G22, doc_id, status(config, G22, G22, document_id, StatusCode.RECALL_REQUESTED)
    )
    code, receipts = await agency(G22).call("GET", f"/v1/edocs/{doc_id}/receipts")
    assert recall_column(receipts) == {A01: "agreed", H41: "asked"}

    code, trace = await agency(G22).call("GET", f"/v1/edocs/{doc_id}/trace")
    assert code == 200, trace
    said = [e["detail"]["status"] for e in trace["events"] if e["event"] == "status"]
    assert said == ["13", "15", "16", "13"]
    asked_of = [e["recipient"] for e in trace["events"] if e["event"] == "recall_asked"]
    assert sorted(asked_of) == sorted([A01, H41, A01, H41])
    # A recipient's own part of the trace shows the recall asked of it, and its answer.
    code, theirs = await agency(H41).call("GET", f"/v1/edocs/{doc_id}/trace")
    mine = [
        (e["event"], e["recipient"]) for e in theirs["events"] if e["event"] in ("recall_asked", "status")
    ]
    assert mine == [("recall_asked", H41), ("status", H41), ("recall_asked", H41)]


async def test_only_the_sender_may_recall_and_an_unasked_answer_recalls_nothing(
    node: Node, config: Config, agency: Any
) -> None:
    doc_id, document_id = await sent_to(node, config, agency, [A01], "Về việc thu hồi không hợp lệ")
    code, body = await agency(A01).call(
        "POST",
        f"/v1/edocs/{doc_id}/status",
        status(config, A01, G22, document_id, StatusCode.RECALL_REQUESTED),
    )
    assert (code, body["error"]) == (403, "forbidden"), body

    # A 15 with no recall asked (the same code answers an update) is carried but recalls nothing.
    await post_status(
        node, agency, A01, doc_id, status(config, A01, G22, document_id, StatusCode.RECALL_AGREED)
    )
    code, receipts = await agency(G22).call("GET", f"/v1/edocs/{doc_id}/receipts")
    assert recall_column(receipts) == {A01: None}
    assert (await inbox_recalled(agency, A01))[doc_id] is False


async def test_recall_and_answer_from_the_cli(node: Node, config: Config, home: Path, agency: Any) -> None:
    set_setting(home, "port", str(node.port))
    doc_id, _ = await sent_to(node, config, agency, [A01], "Về việc thu hồi qua dòng lệnh")

    asked = await gateway(home, "recall", "--as", G22, doc_id, "--reason", "Ban hành nhầm số")
    assert asked.returncode == 0, asked.stderr
    assert "status 13" in asked.stdout and A01 in asked.stdout
    await wait_delivered(node, asked.stdout.split()[0])

    stranger = await gateway(home, "recall", "--as", A01, doc_id, "--reason", "không phải của tôi")
    assert stranger.returncode == 1 and "HTTP 403" in stranger.stderr, stranger.stderr

    answered = await gateway(home, "status", "--as", A01, doc_id, "15", "--note", "Đồng ý trả lại")
    assert answered.returncode == 0, answered.stderr
    await wait_delivered(node, answered.stdout.split()[0])

    receipts = await gateway(home, "receipts", "--as", G22, doc_id)
    assert receipts.returncode == 0 and f"{A01} [party] delivered  recall agreed" in receipts.stdout, (
        receipts.stdout
    )
    as_json = json.loads((await gateway(home, "receipts", "--as", G22, doc_id, "--json")).stdout)
    assert recall_column(as_json) == {A01: "agreed"}
    inbox = await gateway(home, "inbox", "--as", A01)
    line = next(x for x in inbox.stdout.splitlines() if x.startswith(doc_id))
    assert line.endswith("[recalled]"), inbox.stdout
    trace = await gateway(home, "trace", doc_id, "--json")
    said = [e["detail"]["status"] for e in json.loads(trace.stdout)["events"] if e["event"] == "status"]
    assert said == ["13", "15"]


def recall_package(config: Config, sender: str, recipients: list[str], original_document_id: str) -> bytes:
    """A recall in its package form: an edoc with ``BussinessDocType`` 1 naming the original."""
    doc = NewEdoc(
        sender=Organ(sender),
        recipients=[Organ(r) for r in recipients],
        document_id=f"{sender},2026/11/30,{secrets.randbelow(10**6)}/TH-TB",
        subject="Về việc thu hồi văn bản",
        response_for=DocumentRef(organ=G22, document_id=original_document_id),
        business=Business(doc_type=BusinessDocType.RECALL, reason="Ban hành nhầm đối tượng"),
    )
    return sign_package(config.certs, sender, build_edoc(doc, now=datetime.now(UTC)))


async def test_a_recall_package_is_the_13_it_means(node: Node, config: Config, agency: Any) -> None:
    doc_id, document_id = await sent_to(node, config, agency, [A01, H41], "Về việc thu hồi bằng gói tin")
    code, body = await agency(G22).send(recall_package(config, G22, [A01], document_id))
    assert code == 202, body
    # Addressed to one recipient, like the 13; it reaches every recipient of the original.
    assert sorted(r["code"] for r in body["recipients"]) == sorted([A01, H41])
    await wait_delivered(node, body["id"])
    code, receipts = await agency(G22).call("GET", f"/v1/edocs/{doc_id}/receipts")
    assert recall_column(receipts) == {A01: "asked", H41: "asked"}
    assert [(s["code"], s["signature_valid"]) for s in receipts["sender_statuses"]] == [("13", True)]
    await post_status(
        node, agency, A01, doc_id, status(config, A01, G22, document_id, StatusCode.RECALL_AGREED)
    )
    assert (await inbox_recalled(agency, A01))[doc_id] is True


async def test_a_recall_package_for_an_unknown_or_anothers_document_is_refused(
    node: Node, config: Config, agency: Any
) -> None:
    _, document_id = await sent_to(node, config, agency, [A01], "Về việc thu hồi sai")
    code, body = await agency(G22).send(recall_package(config, G22, [A01], f"{G22},2026/11/30,1/KHONG-CO"))
    assert (code, body["error"]) == (422, "unknown_document"), body
    code, body = await agency(H41).send(recall_package(config, H41, [A01], document_id))
    assert (code, body["error"]) == (403, "forbidden"), body
