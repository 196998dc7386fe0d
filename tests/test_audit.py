"""The tamper-evident delivery log: every event chained, heads signed by the adapter key, and
`gateway audit verify` naming the first record an attacker with the database file altered,
removed or inserted; exports verified offline with nothing but the trust anchors."""

from __future__ import annotations

import itertools
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.audit.log import GENESIS, record_hash
from gateway.audit.verify import verify_log
from gateway.exchange.ports import NewEvent
from gateway.infra.files.pki_dir import load_trust_anchors
from gateway.infra.sql.engine import sqlite_url
from gateway.infra.sql.reads import SqlOversight
from gateway.infra.sql.store import SqlStore
from gateway.runtime.config import Config
from gateway.runtime.node import Node, init_home
from tests.conftest import A01, G22, H41, I01, make_package, wait_delivered
from tests.oversight_helpers import database, gateway, rechain_from, settle
from tests.test_classified import CONTENT, SUBJECT, classified_package, send_classified


async def exchange(node: Node, config: Config, agency) -> list[str]:
    """Three documents across networks, delivered; the first fetched (so a receipt comes back)."""
    ids = []
    for sender, recipient in ((G22, A01), (A01, I01), (G22, H41)):
        status, body = await agency(sender).send(
            make_package(config, sender, [recipient], subject=f"Kiểm toán {sender} → {recipient}")
        )
        assert status == 202, body
        ids.append(body["id"])
    for doc_id in ids:
        await wait_delivered(node, doc_id)
    status, _ = await agency(A01).call("GET", f"/v1/edocs/{ids[0]}")
    assert status == 200
    await settle(node)
    return ids


async def signed_log(node: Node, config: Config, agency) -> int:
    await exchange(node, config, agency)
    head = await node.head_signer.sign_once()
    assert head is not None and head.seq == await node.oversight.last_seq()
    assert head.signer == "ADAPTER.GOVERNMENT"
    return head.seq


async def test_every_event_is_chained_and_the_untouched_log_verifies(
    node: Node, config: Config, agency, home
):
    last = await signed_log(node, config, agency)
    records = await node.oversight.audit_records(after=0, limit=1000)
    assert [r.seq for r in records] == list(range(1, last + 1))
    assert records[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
    assert all(r.request_id for r in records)  # every record names the request (or job) that wrote it
    assert await node.head_signer.sign_once() is None  # nothing new: no second head

    out = await gateway(home, "audit", "verify")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (
        f"OK: delivery log: {last} records (records 1–{last}) chained; 1 signed heads verified" in out.stdout
    )
    since = await gateway(home, "audit", "verify", "--from", "1h", "--json")
    assert since.returncode == 0 and json.loads(since.stdout)["ok"] is True


def _insert_after(db, seq: int) -> None:
    """Renumber the records after ``seq`` and slip a forged, correctly chained record in."""
    db.execute("UPDATE events SET seq = seq + 1000000 WHERE seq > ?", (seq,))
    db.execute("UPDATE events SET seq = seq - 999999 WHERE seq > 1000000")
    at, document, prev = db.execute("SELECT at, document, hash FROM events WHERE seq = ?", (seq,)).fetchone()
    forged = ("delivered", at, document, I01, "front", "forged-request", "{}")
    db.execute(
        "INSERT INTO events (seq, kind, at, document, recipient, network, request_id, detail, prev_hash, "
        "hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (seq + 1, *forged, prev, record_hash(*forged, prev)),
    )


@pytest.mark.parametrize("attack", ["altered", "removed", "inserted", "rewritten", "truncated"])
async def test_tampering_is_caught_and_the_record_named(node: Node, config: Config, agency, home, attack):
    last = await signed_log(node, config, agency)
    k = last // 2
    db = database(config)
    if attack == "altered":
        db.execute("UPDATE events SET recipient = '000.00.00.H99' WHERE seq = ?", (k,))  # no such agency
        expected = f"record {k} was altered: its content no longer matches its hash"
    elif attack == "removed":
        db.execute("DELETE FROM events WHERE seq = ?", (k,))
        expected = f"record {k} was removed: record {k + 1} follows record {k - 1}"
    elif attack == "inserted":
        _insert_after(db, k)
        expected = f"record {k + 1} was inserted: record {k + 2} links to record {k}"
    elif attack == "rewritten":
        # A careful attacker recomputes every hash after the edit: only the signed head catches it.
        db.execute("UPDATE events SET detail = ? WHERE seq = ?", ('{"reason": "nothing happened"}', k))
        rechain_from(db, k)
        expected = f"the chain up to record {last} is not the one signed at"
    else:
        db.execute("DELETE FROM events WHERE seq > ?", (last - 3,))
        expected = f"records after record {last - 3} are missing: the head signed at"
    db.close()

    out = await gateway(home, "audit", "verify")
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.startswith("TAMPERED: delivery log: ")
    assert expected in out.stdout
    as_json = json.loads((await gateway(home, "audit", "verify", "--json")).stdout)
    assert as_json["ok"] is False and as_json["finding"]["kind"] == attack.replace("truncated", "removed")


async def test_a_forged_head_is_refused(node: Node, config: Config, agency, home):
    await signed_log(node, config, agency)
    db = database(config)
    db.execute("UPDATE audit_heads SET seq = seq - 1")  # a head moved to another record
    out = await gateway(home, "audit", "verify")
    assert out.returncode == 1 and "the signature does not verify" in out.stdout


async def test_the_signer_never_signs_over_a_broken_chain(node: Node, config: Config, agency):
    last = await signed_log(node, config, agency)
    await agency(G22).send(make_package(config, G22, [A01], subject="Sau lần ký"))
    await settle(node)
    db = database(config)
    db.execute("UPDATE events SET kind = 'fetched' WHERE seq = ?", (last + 1,))
    assert await node.head_signer.sign_once() is None
    head = await node.oversight.last_audit_head()
    assert head is not None and head.seq == last


async def test_export_verifies_offline_with_only_the_trust_anchors(
    node: Node, config: Config, agency, home, tmp_path: Path
):
    last = await signed_log(node, config, agency)
    await agency(G22).send(make_package(config, G22, [A01], subject="Chưa ký"))  # after the head: left out
    export = tmp_path / "audit-2026-11.jsonl"
    out = await gateway(home, "audit", "export", "--from", "1d", "-o", str(export))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"exported records 1–{last} and 1 signed heads" in out.stdout and "not signed yet" in out.stdout

    auditor = tmp_path / "auditor"  # no home, no database, no key: the file and trust.pem
    auditor.mkdir()
    shutil.copy(config.certs / "trust.pem", auditor / "trust.pem")
    shutil.copy(export, auditor / "audit.jsonl")
    out = await gateway(None, "audit", "verify", "--file", "audit.jsonl", "--trust", "trust.pem", cwd=auditor)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{last} records (records 1–{last}) chained; 1 signed heads verified" in out.stdout

    lines = (auditor / "audit.jsonl").read_text().splitlines()
    middle = next(
        i for i, line in enumerate(lines) if json.loads(line).get("seq") == last // 2 and '"record"' in line
    )
    record = json.loads(lines[middle])
    # Really altered: a record whose network already is "front" would be left as it was.
    record["network"] = "party" if record.get("network") == "front" else "front"
    altered = [*lines[:middle], json.dumps(record), *lines[middle + 1 :]]
    (auditor / "altered.jsonl").write_text("\n".join(altered) + "\n")
    out = await gateway(
        None, "audit", "verify", "--file", "altered.jsonl", "--trust", "trust.pem", cwd=auditor
    )
    assert out.returncode == 1 and f"record {last // 2} was altered" in out.stdout

    (auditor / "cut.jsonl").write_text("\n".join(lines[:-2]) + "\n")
    out = await gateway(None, "audit", "verify", "--file", "cut.jsonl", "--trust", "trust.pem", cwd=auditor)
    assert out.returncode == 1 and "are missing" in out.stdout

    other = tmp_path / "other-pki"
    init_home(other, now=datetime.now(UTC))
    out = await gateway(
        None, "audit", "verify", "--file", "audit.jsonl", "--trust", str(other / "certs_dev" / "trust.pem"),
        cwd=auditor,
    )  # fmt: skip
    assert out.returncode == 1 and "certificate refused" in out.stdout


async def test_classified_documents_appear_only_by_ids_codes_level_and_digests(
    node: Node, config: Config, agency, home, tmp_path: Path
):
    status, body = await send_classified(agency, classified_package(config, [A01]))
    assert status == 202, body
    await wait_delivered(node, body["id"])
    await node.head_signer.sign_once()
    export = tmp_path / "audit.jsonl"
    out = await gateway(home, "audit", "export", "--from", "1h", "-o", str(export))
    assert out.returncode == 0, out.stderr
    text = export.read_text(encoding="utf-8")
    assert body["id"] in text and '\\"classification\\": \\"toi-mat\\"' in text and "sha256" in text
    for secret in (SUBJECT, CONTENT, "subject"):
        assert secret not in text
    trace = await gateway(home, "trace", body["id"], "--json")
    assert SUBJECT not in trace.stdout and json.loads(trace.stdout)["document"]["subject"] is None


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
async def test_an_operation_that_fails_in_a_batch_leaves_no_record_and_no_gap(
    engine: str, config: Config, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Records are chained at commit, not as they are written: one operation of a group commit
    that fails takes its records with it, the others' are chained without a hole."""
    import asyncio

    from gateway.errors import NotFound
    from gateway.infra.sql.chain import append_events

    url = request.getfixturevalue("pg_database") if engine == "postgresql" else sqlite_url(tmp_path / "b.db")
    store = SqlStore(url)
    now = datetime.now(UTC)

    def failing(conn: object) -> None:
        append_events(conn, [NewEvent("retry", now, None, None, None, {"n": "lost"})])  # type: ignore[arg-type]
        raise NotFound("this operation fails after writing its record")

    try:
        results = await asyncio.gather(
            store.add_events([NewEvent("cert_issued", now, None, None, None, {"n": 1})]),
            store.database.write(failing),
            store.add_events([NewEvent("cert_issued", now, None, None, None, {"n": 2})]),
            return_exceptions=True,
        )
        assert results[0] is None and isinstance(results[1], NotFound) and results[2] is None
        records = await SqlOversight(store.database).audit_records(after=0, limit=100)
        assert [(r.seq, json.loads(r.detail)["n"]) for r in records] == [(1, 1), (2, 2)]
        assert verify_log(records, [], load_trust_anchors(config.certs)).ok
        with pytest.raises(RuntimeError, match="only inside a store write"):
            append_events(store.database._engine.connect(), [NewEvent("retry", now)])
    finally:
        await store.close()
