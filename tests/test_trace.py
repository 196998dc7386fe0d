"""`gateway trace`: a document's life as a timeline, and the documents of one agency."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.operators.timeline import VIETNAM, parse_moment
from gateway.runtime.config import Config
from gateway.runtime.node import Node
from tests.conftest import A01, G22, H41, make_package, wait_delivered
from tests.oversight_helpers import gateway, settle


async def test_a_document_timeline_shows_hops_crossings_receipts_and_what_is_missing(
    node: Node, config: Config, agency, home: Path
) -> None:
    status, body = await agency(G22).send(
        make_package(config, G22, [A01, H41], subject="Công văn thử dấu vết")
    )
    assert status == 202
    doc_id = body["id"]
    await wait_delivered(node, doc_id)
    status, _ = await agency(A01).call("GET", f"/v1/edocs/{doc_id}")  # A01 fetches: its 01 goes back
    await settle(node)

    out = await gateway(home, "trace", doc_id)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "Timeline (Asia/Ho_Chi_Minh" in text and f"DocumentId {G22},2026/11/22," in text
    assert "government → party" in text  # the network crossing, with its duration
    for kind in (
        "accepted",
        "verified",
        "routed",
        "sealed",
        "bridged",
        "seal_verified",
        "delivered",
        "fetched",
    ):
        assert f"  {kind} " in text, kind
    assert f"{A01} [party] fetched" in text and "01 Đã đến" in text
    assert f"{H41} [government] delivered" in text and "missing: 01 Đã đến, 03 Đã tiếp nhận" in text
    assert f"Missing receipts: 03 from {A01}, 01 from {H41}, 03 from {H41}" in text
    assert "→ party: done, 1 attempt" in text

    view = json.loads((await gateway(home, "trace", doc_id, "--json")).stdout)
    assert view["timezone"] == "Asia/Ho_Chi_Minh" and view["document"]["subject"] == "Công văn thử dấu vết"
    events = {e["event"]: e for e in view["events"]}
    bridged = events["bridged"]
    assert bridged["crossing"] == "government → party" and bridged["duration_ms"] >= 0
    assert events["accepted"]["offset_ms"] == 0 and events["delivered"]["offset_ms"] >= bridged["offset_ms"]
    stored = datetime.fromisoformat(bridged["at"])
    assert stored.utcoffset() == timedelta(0)  # stored in UTC ...
    assert (
        bridged["local_time"] == stored.astimezone(VIETNAM).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    )  # shown +7
    assert {(m["recipient"], m["code"]) for m in view["missing_receipts"]} == {
        (A01, "03"),
        (H41, "01"),
        (H41, "03"),
    }

    missing = await gateway(home, "trace", "0" * 32)
    assert missing.returncode == 1 and "no document with id" in missing.stderr


async def test_retries_failures_and_an_agencys_documents(config: Config, home: Path) -> None:
    node = Node(config)  # not serving: the test drives the courier by hand
    try:
        good = await node.intake.submit(G22, make_package(config, G22, [A01], subject="Đến nơi"))
        bad = await node.intake.submit(G22, make_package(config, G22, [A01], subject="Hỏng"))
        [job] = [
            j
            for j in await node.store.claim_routes(
                node="t", limit=10, now=datetime.now(UTC), lease_seconds=60
            )
            if j.document.id == bad.id
        ]
        reason = "the link to the party network is down"
        await node.store.defer_route(job, reason=reason, not_before=datetime.now(UTC), now=datetime.now(UTC))
        await node.store.release_claims(node="t")
        with sqlite3.connect(
            home / "gateway.db"
        ) as conn:  # a corrupted package: quarantined, never delivered
            conn.execute("update package_parts set data = ? where document = ?", (b"<broken", bad.id))
        while await node.courier.run_once():
            pass
    finally:
        await node.stop()  # an unstarted node too: courier, checker processes, store

    out = await gateway(home, "trace", bad.id)
    assert out.returncode == 0, out.stderr
    assert "Retries and failures" in out.stdout and reason in out.stdout
    assert "quarantined" in out.stdout and "changed since it was accepted" in out.stdout
    assert "→ party: quarantined, 2 attempts, last error: " in out.stdout

    listing = await gateway(home, "trace", "--agency", G22, "--since", "2h")
    assert listing.returncode == 0, listing.stderr
    assert good.id in listing.stdout and bad.id in listing.stdout and "→ 000.00.00.G22" in listing.stdout
    failed = await gateway(home, "trace", "--agency", G22, "--since", "2h", "--state", "failed", "--json")
    assert [d["id"] for d in json.loads(failed.stdout)["documents"]] == [bad.id]
    received = json.loads((await gateway(home, "trace", "--agency", A01, "--since", "2h", "--json")).stdout)
    assert {d["id"]: d["direction"] for d in received["documents"]} == {
        good.id: "received",
        bad.id: "received",
    }
    first = json.loads((await gateway(home, "trace", "--agency", A01, "--limit", "1", "--json")).stdout)
    assert [d["id"] for d in first["documents"]] == [bad.id] and first["next_before"] == bad.id
    rest = await gateway(home, "trace", "--agency", A01, "--before", bad.id, "--json")
    assert [d["id"] for d in json.loads(rest.stdout)["documents"]] == [good.id]
    old = await gateway(home, "trace", "--agency", A01, "--since", "2026-01-01", "--until", "2026-01-02")
    assert old.returncode == 0 and good.id not in old.stdout


def test_times_are_read_as_vietnam_time() -> None:
    now = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
    assert parse_moment("2h", now=now) == now - timedelta(hours=2)
    assert parse_moment("2026-11-22 14:00", now=now) == datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
    assert parse_moment("2026-11-22", now=now, end_of_day=True).astimezone(VIETNAM).hour == 23
