"""The client library an agency system imports (``gateway.agency_side.client``), against a real node
over real mutual TLS on loopback: send, inbox, fetch and open, status, receipts, trace, recall,
update, replace; error answers raised as the error tree's own classes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from gateway.agency_side.client import (
    AgencyClient,
    AgencyKeys,
    AsyncAgencyClient,
    Draft,
    error_from_answer,
)
from gateway.agency_side.packages import sign_package
from gateway.crypto.pki import Role
from gateway.domain.edxml import Attachment, Edoc, NewEdoc, Organ, build_edoc
from gateway.domain.vocabulary import Classification, Network, Priority, StatusCode
from gateway.errors import (
    BadRequest,
    CertificateRejected,
    CheckersBusy,
    ClientError,
    ConfigError,
    GatewayError,
    GatewayUnreachable,
    InvalidDate,
    NotFound,
    RemoteError,
    SenderMismatch,
    ServerBusy,
    TooManyRequests,
    UnknownRecipient,
)
from gateway.infra.files.pki_dir import read_inventory
from gateway.pki.inventory import Slot
from gateway.runtime import wiring
from gateway.runtime.config import Config
from gateway.runtime.node import Node
from tests.conftest import A01, G12, G16, G22, I01, wait_delivered
from tests.processes import free_port


def keys(config: Config, code: str) -> AgencyKeys:
    return AgencyKeys.from_dev_pki(config.certs, code, config.registry)


def client(node: Node, config: Config, code: str) -> AsyncAgencyClient:
    return AsyncAgencyClient(f"https://localhost:{node.port}", keys(config, code))


async def test_round_trip_send_inbox_fetch_status_receipts_trace(node: Node, config: Config) -> None:
    annex = Attachment("phu-luc.txt", "text/plain", "Phụ lục danh sách xã".encode())
    async with client(node, config, G22) as g22, client(node, config, A01) as a01:
        accepted = await g22.send(
            Draft(
                subject="Về việc thử thư viện",
                to=[A01, G16],
                priority=Priority.HOA_TOC,
                due=date(2026, 12, 31),
                attachments=[annex],
            )
        )
        assert not accepted.duplicate
        assert {r.code: (r.network, r.forwarded_via) for r in accepted.recipients} == {
            A01: (Network.PARTY, None),
            G12: (Network.GOVERNMENT, (G16, G12)),
        }
        await wait_delivered(node, accepted.id)

        [entry] = [e for e in await a01.inbox() if e.id == accepted.id]
        assert (entry.sender, entry.subject, entry.priority) == (
            G22,
            "Về việc thử thư viện",
            Priority.HOA_TOC,
        )
        assert entry.classification is Classification.NONE and entry.accepted_at.tzinfo is not None

        delivery = await a01.fetch(accepted.id)
        assert isinstance(delivery.content, Edoc)
        assert delivery.signed_by == G22 and delivery.content.subject == "Về việc thử thư viện"
        assert delivery.content.due == "2026/12/31"
        assert delivery.attachments == (replace(annex, content_id="1"),)  # named by its ContentId too
        assert [(h.network, h.action) for h in delivery.hops] == [
            (Network.GOVERNMENT, "sealed"),
            (Network.PARTY, "bridged"),
        ]
        assert (
            b"Signature" in delivery.package and not delivery.receipt_sent
        )  # unclassified: the gateway's 01
        assert accepted.id not in [e.id for e in await a01.inbox()]  # fetched: out of the waiting list

        answered = await a01.status(accepted.id, StatusCode.ACCEPTED, "Đã vào sổ")
        assert [r.code for r in answered.recipients] == [G22]
        await wait_delivered(node, answered.id)

        receipts = await g22.receipts(accepted.id)
        assert receipts.sender == G22 and receipts.unconfirmed == (G12,)
        mine = next(r for r in receipts.recipients if r.recipient == A01)
        assert [(s.code, s.signature_valid) for s in mine.receipts][:2] == [("01", True), ("03", True)]
        assert mine.confirmed and mine.fetched_at is not None and mine.receipts[1].signed_by == A01

        events = [e.event for e in await g22.trace(accepted.id)]
        assert events[:2] == ["accepted", "verified"] and "fetched" in events


async def test_recall_update_replace(node: Node, config: Config) -> None:
    async with client(node, config, G22) as g22, client(node, config, A01) as a01:
        first = await g22.send(Draft(subject="Bản đầu", to=[A01]))
        second = await g22.send(Draft(subject="Bản thứ hai", to=[A01]))
        await wait_delivered(node, first.id)
        await wait_delivered(node, second.id)

        recall = await g22.recall(first.id, "Ban hành nhầm")
        await wait_delivered(node, recall.id)
        agreed = await a01.status(first.id, "15", "Đồng ý trả lại")
        await wait_delivered(node, agreed.id)
        assert next(r for r in (await g22.receipts(first.id)).recipients).recall == "agreed"

        update = await g22.update(second.id, Draft(subject="Bổ sung số liệu"), reason="Thiếu phụ lục")
        replacement = await g22.replace(second.id, Draft(subject="Văn bản thay thế"), reason="Sai số")
        assert [r.code for r in update.recipients] == [A01] == [r.code for r in replacement.recipients]
        await wait_delivered(node, update.id)
        await wait_delivered(node, replacement.id)
        listed = {e.id: e for e in await a01.inbox(include_fetched=True)}
        assert listed[first.id].recalled
        assert listed[update.id].updates == second.id and listed[replacement.id].replaces == second.id
        assert listed[second.id].superseded_by == replacement.id
        assert (await a01.fetch(second.id)).superseded_by == replacement.id


async def test_classified_is_decrypted_and_acknowledged_by_the_agency(node: Node, config: Config) -> None:
    async with client(node, config, G22) as g22, client(node, config, A01) as a01:
        sent = await g22.send(Draft(subject="Tài liệu mật", to=[A01], classification=Classification.TOI_MAT))
        await wait_delivered(node, sent.id)
        [entry] = [e for e in await a01.inbox() if e.id == sent.id]
        assert entry.subject is None  # the gateway never holds it in clear
        delivery = await a01.fetch(sent.id)
        assert delivery.receipt_sent and delivery.classification is Classification.TOI_MAT
        assert isinstance(delivery.content, Edoc) and delivery.content.subject == "Tài liệu mật"
        await asyncio.sleep(0.3)
        mine = (await g22.receipts(sent.id)).recipients[0]
        assert any(s.code == "01" and s.signed_by == A01 and s.signature_valid for s in mine.receipts)


async def test_error_answers_are_the_error_trees_classes(node: Node, config: Config) -> None:
    async with client(node, config, G22) as g22, client(node, config, I01) as i01:
        with pytest.raises(UnknownRecipient) as unknown:
            await g22.send(Draft(subject="Không ai nhận", to=["000.00.00.G98"]))
        assert unknown.value.status == 422 and "HTTP 422 unknown_recipient" in unknown.value.message

        # A package from A01 presented by G22: the gateway refuses it by its stable code.
        doc = NewEdoc(
            sender=Organ(A01), recipients=[Organ(G22)], document_id="x,2026/11/22,1/GW", subject="x"
        )
        forged = sign_package(config.certs, A01, build_edoc(doc, now=node.clock.now()))
        with pytest.raises(SenderMismatch) as mismatch:
            await g22.send_package(forged)
        assert isinstance(mismatch.value, ClientError) and mismatch.value.code == "sender_mismatch"

        sent = await g22.send(Draft(subject="Chỉ A01", to=[A01]))
        with pytest.raises(NotFound):  # not a recipient: ids cannot be probed
            await i01.fetch(sent.id)
        with pytest.raises(NotFound):
            await g22.receipts("no-such-id")
        with pytest.raises(NotFound):  # one path segment: an id cannot reach another route
            await g22.receipts(f"{sent.id}/../{sent.id}")
        with pytest.raises(InvalidDate):
            await g22.send(Draft(subject="x", to=[A01], due="2026/02/30"))
        with pytest.raises(BadRequest):
            await g22.status(sent.id, "07")


async def test_the_sync_client_drives_the_async_one(node: Node, config: Config) -> None:
    url = f"https://localhost:{node.port}"

    def as_a_script() -> str:
        with AgencyClient(url, keys(config, G22)) as g22:
            return g22.send(Draft(subject="Từ mã đồng bộ", to=[A01], due="31/12/2026 17:00:00")).id

    doc_id = await asyncio.to_thread(as_a_script)  # in a thread: the node serves on this loop
    await wait_delivered(node, doc_id)

    def fetch() -> str | None:
        with AgencyClient(url, keys(config, A01)) as a01:
            content = a01.fetch(doc_id).content
            assert isinstance(content, Edoc)
            return content.due

    assert await asyncio.to_thread(fetch) == "2026/12/31 17:00:00"


async def test_an_unreachable_gateway_says_so(config: Config) -> None:
    async with AsyncAgencyClient(f"https://localhost:{free_port()}", keys(config, G22)) as g22:
        with pytest.raises(GatewayUnreachable, match="connection refused"):
            await g22.inbox()


def test_keys_say_what_is_wrong(config: Config) -> None:
    with pytest.raises(ConfigError, match=re.escape("000.00.00.G98 is not in the registry")):
        keys(config, "000.00.00.G98")
    with pytest.raises(ConfigError, match=re.escape(f"is retired; its successor is {G12}")):
        keys(config, G16)
    record = read_inventory(config.certs).holding(G22, Role.SIGN, Slot.ACTIVE)
    assert record is not None
    # The officer's revocation, as `gateway certs revoke` makes it.
    wiring.cert_office(config, now=datetime.now(UTC), by="officer").revoke(record.serial, "key lost")
    with pytest.raises(
        CertificateRejected, match=re.escape(f"certificate {record.serial} of agency {G22} was revoked")
    ):
        keys(config, G22)


def _coded() -> list[type[GatewayError]]:
    found: list[type[GatewayError]] = [ServerBusy, CheckersBusy]
    pending: list[type[GatewayError]] = list(ClientError.__subclasses__())
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return sorted(found, key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", _coded(), ids=lambda c: c.__name__)
def test_every_stable_code_maps_back_to_its_class(cls: type[ClientError]) -> None:
    body = json.dumps({"error": cls.code, "message": "m", "request_id": "r"}).encode()
    error = error_from_answer(cls.status, body, "7")
    assert type(error) is cls and error.message == f"m (HTTP {cls.status} {cls.code})"
    if isinstance(error, TooManyRequests | CheckersBusy):
        assert error.retry_after == 7.0


def test_unknown_codes_and_bodies_stay_remote_errors() -> None:
    internal = error_from_answer(500, b'{"error": "internal", "message": "quote request id r"}')
    assert isinstance(internal, RemoteError) and (internal.status, internal.code) == (500, "internal")
    assert isinstance(error_from_answer(404, b"<html>"), RemoteError)
    # A known code under another status is not guessed at.
    assert type(error_from_answer(400, b'{"error": "not_found", "message": "m"}')) is RemoteError


async def test_the_readme_example_runs(node: Node, home: Path) -> None:
    """The README's "Client library for agency systems" example, as a user saves and runs it."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Client library for agency systems", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    script = home / "exchange.py"
    script.write_text(example, encoding="utf-8")
    env = {**os.environ, "GATEWAY_HOME": str(home), "GATEWAY_URL": f"https://localhost:{node.port}"}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
        )

    done = await asyncio.to_thread(run)  # the node serves on this loop meanwhile
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("sent ") and f"signed by {G22}" in lines[1] and "phu-luc.txt" in lines[1]
    assert "('01', 'ADAPTER.PARTY', True)" in lines[2] and f"('03', '{A01}', True)" in lines[2]
    assert "refused as expected:" in lines[-1] and "(HTTP 404 not_found)" in lines[-1]
