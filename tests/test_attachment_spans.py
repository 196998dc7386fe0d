"""One attachment served from the span of its base64 text in the stored package (issue 13):
through a real node (mutual TLS, its SQLite file), with packages its sender really signed."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.agency_side.packages import sign_package
from gateway.domain.edxml import Attachment, NewEdoc, Organ, build_edoc
from gateway.domain.vocabulary import Classification
from gateway.runtime.config import Config
from gateway.runtime.node import Node
from tests.conftest import A01, G22, AgencyClient, wait_delivered

MIB = 1024 * 1024
_numbers = iter(range(1, 1000))


def signed(config: Config, *attachments: Attachment, level: Classification = Classification.NONE) -> bytes:
    doc = NewEdoc(
        sender=Organ(G22),
        recipients=[Organ(A01)],
        document_id=f"{G22},2026/12/04,{next(_numbers)}/SPAN",
        subject="Về việc gửi hồ sơ kèm theo",
        classification=level,
        attachments=attachments,
    )
    return sign_package(config.certs, G22, build_edoc(doc, now=datetime.now(UTC)))


async def delivered(
    node: Node, agency: Callable[[str], AgencyClient], package: bytes, level: str = ""
) -> str:
    headers = {"X-Classification": level} if level else {}
    sender = agency(G22)
    async with sender.session.post(
        sender.base + "/v1/edocs", data=io.BytesIO(package), headers=headers
    ) as answer:
        body = await answer.json()
        assert answer.status == 202, body
    await wait_delivered(node, body["id"])
    return str(body["id"])


async def served(reader: AgencyClient, doc_id: str, cid: str) -> tuple[int, bytes, dict[str, str]]:
    async with reader.session.get(f"{reader.base}/v1/edocs/{doc_id}/attachments/{cid}") as answer:
        return answer.status, await answer.read(), dict(answer.headers)


async def test_an_attachment_is_streamed_from_the_span_recorded_at_acceptance(
    node: Node, config: Config, agency: Callable[[str], AgencyClient]
) -> None:
    scan, note = os.urandom(3 * MIB + 5), "Phụ lục".encode()
    package = signed(
        config, Attachment("scan.pdf", "application/pdf", scan), Attachment("a.txt", "text/plain", note)
    )
    doc_id = await delivered(node, agency, package)
    recorded = await node.store.attachments(doc_id)
    assert [(a.position, a.content_id, a.name, a.size) for a in recorded] == [
        (1, "1", "scan.pdf", len(scan)),
        (2, "2", "a.txt", len(note)),
    ]
    for facts, data in zip(recorded, (scan, note), strict=True):
        assert facts.sha256 == hashlib.sha256(data).hexdigest() and facts.span is not None
        offset, length = facts.span
        assert base64.b64decode(package[offset : offset + length]) == data  # exactly its text
    status, body, headers = await served(agency(A01), doc_id, "cid:1")
    assert (status, body == scan) == (200, True)
    assert headers["Content-Length"] == str(len(scan))
    assert headers["X-Content-SHA256"] == hashlib.sha256(scan).hexdigest()
    assert headers["Content-Type"] == "application/pdf"
    status, body, _ = await served(agency(A01), doc_id, "2")
    assert (status, body) == (200, note)
    status, _, _ = await served(agency(A01), doc_id, "cid:3")
    assert status == 404
    kinds = [e.kind for e in await node.store.events(doc_id)]
    assert kinds.count("attachment_fetched") == 2


def in_cdata(text: bytes) -> bytes:
    return text[:8] + b"<![CDATA[" + text[8:16] + b"]]>" + text[16:]


def with_character_reference(text: bytes) -> bytes:
    return b"&#%d;" % text[0] + text[1:]


def with_comment(text: bytes) -> bytes:
    return text[:8] + b"<!-- ContentTransferEncoded -->" + text[8:]  # comments are not signed


@pytest.mark.parametrize("rewrite", [in_cdata, with_character_reference, with_comment])
async def test_an_attachment_whose_span_cannot_be_trusted_is_still_served_byte_for_byte(
    node: Node, config: Config, agency: Callable[[str], AgencyClient], rewrite: Callable[[bytes], bytes]
) -> None:
    """The same text written another way (canonically the same, so the signature holds): the raw
    span no longer decodes to the signed attachment, so it is not recorded, and the attachment
    is read from the parsed package instead."""
    first, second = os.urandom(30_000), os.urandom(20_000)
    package = signed(
        config, Attachment("1.bin", "application/zip", first), Attachment("2.bin", "text/plain", second)
    )
    text = base64.b64encode(first)
    assert package.count(text) == 1
    package = package.replace(text, rewrite(text))
    doc_id = await delivered(node, agency, package)
    one, two = await node.store.attachments(doc_id)
    assert one.span is None and one.sha256 == hashlib.sha256(first).hexdigest()
    assert two.span is not None  # the next one's text is found all the same
    for cid, data in (("cid:1", first), ("cid:2", second)):
        status, body, headers = await served(agency(A01), doc_id, cid)
        assert (status, body == data, headers["X-Content-SHA256"]) == (
            200,
            True,
            hashlib.sha256(data).hexdigest(),
        )


async def test_a_stored_package_altered_inside_the_span_is_refused_not_served(
    node: Node, config: Config, home: Path, agency: Callable[[str], AgencyClient]
) -> None:
    scan = os.urandom(2 * MIB)
    doc_id = await delivered(node, agency, signed(config, Attachment("scan.pdf", "application/pdf", scan)))
    [facts] = await node.store.attachments(doc_id)
    assert facts.span is not None
    at = facts.span[0] + facts.span[1] // 2  # one character of base64, in the second piece
    seq, at = divmod(at, MIB)  # the package is stored in parts of 1 MiB (migration 0007)
    with sqlite3.connect(home / "gateway.db") as db:
        [(stored,)] = db.execute(
            "select data from package_parts where document = ? and seq = ?", (doc_id, seq)
        ).fetchall()
        other = b"B" if stored[at : at + 1] == b"A" else b"A"
        db.execute(
            "update package_parts set data = ? where document = ? and seq = ?",
            (stored[:at] + other + stored[at + 1 :], doc_id, seq),
        )
    status, body, _ = await served(agency(A01), doc_id, "cid:1")
    assert status == 500 and scan[:1024] not in body
    assert [e.kind for e in await node.store.events(doc_id)].count("attachment_fetched") == 0


async def test_nothing_of_a_classified_documents_attachments_is_recorded(
    node: Node, config: Config, agency: Callable[[str], AgencyClient]
) -> None:
    package = signed(config, Attachment("ke-hoach.pdf", "application/pdf", b"%PDF"), level=Classification.MAT)
    doc_id = await delivered(node, agency, package, "mat")
    assert await node.store.attachments(doc_id) == []
    status, _, _ = await served(agency(A01), doc_id, "cid:1")
    assert status == 409
