"""A delivery log of a million events: trace one document, search the console, verify the chain.

    python bench/trace_million.py [--documents 250000] [--events-per-document 4]

Fills a fresh SQLite database the fast way (the chain computed in Python, executemany in one
transaction), signs its head with the government adapter's key, then times, on that database:
tracing one document by id (the store's read and the timeline; and `gateway trace ID` as a
process), the console's searches and pages over real mutual TLS, the overview's queries, and
`gateway audit verify` over the whole chain. Prints the query plans, so an unindexed query shows.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from gateway.audit.heads import sign_head
from gateway.audit.log import GENESIS, record_hash, utc_text
from gateway.domain.vocabulary import Network
from gateway.http.console import issue_operator
from gateway.infra.files.keys import load_seal_key
from gateway.infra.sql.reads import SqlOversight
from gateway.infra.sql.store import SqlStore
from gateway.operators.readmodel import Search
from gateway.operators.timeline import build_timeline, render_text
from gateway.runtime.config import load_config
from gateway.runtime.node import Node, init_home

NETWORKS = [n.value for n in Network]
BIG = "000.00.00.G22"  # one ministry that sends a tenth of everything


def agencies(n: int) -> list[tuple[str, str]]:
    return [(f"H{10 + i // 100:02d}.{i % 100:02d}.01", NETWORKS[i % 3]) for i in range(n)]


Row = tuple[Any, ...]  # one table row, columns in the INSERT's order


def fill(path: Path, documents: int, per_document: int, now: datetime) -> tuple[list[str], list[str], float]:
    """Documents, routes, deliveries and a chained log; returns (ids, DocumentIds, seconds)."""
    rng = random.Random(7)
    codes = agencies(2000)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    started = time.perf_counter()
    db.execute("BEGIN")
    ids: list[str] = []
    doc_ids: list[str] = []
    docs: list[Row] = []
    routes: list[Row] = []
    deliveries: list[Row] = []
    events: list[Row] = []
    prev, seq = GENESIS, 0
    span = timedelta(days=30).total_seconds()
    kinds = ["accepted", "routed", "sealed", "bridged", "seal_verified", "delivered", "fetched", "status"]
    for i in range(documents):
        accepted = now - timedelta(seconds=span * (1 - i / documents))
        doc_id = f"{int(accepted.timestamp() * 1000):012x}{rng.getrandbits(80):020x}"
        sender, sender_net = (BIG, "government") if i % 10 == 0 else rng.choice(codes)
        recipient, target = rng.choice(codes)
        document_id = f"{sender},{accepted:%Y/%m/%d},{i}/BENCH"
        priority = rng.choice((0, 0, 0, 1, 2, 3))
        ids.append(doc_id)
        doc_ids.append(document_id)
        at = utc_text(accepted)
        docs.append(
            (doc_id, "edoc", sender, sender_net, document_id, document_id, None, None, "ab" * 32,
             f"agency:{sender}", None, None, priority, 0, 2048, at, b"<p/>")
        )  # fmt: skip
        routes.append((i + 1, doc_id, target, "done", priority, sender, 0, 1, at))
        deliveries.append((doc_id, i + 1, recipient, recipient, target, "delivered", priority, at))
        for k in range(per_document):
            kind = kinds[k % len(kinds)]
            seq += 1
            moment = utc_text(accepted + timedelta(milliseconds=7 * k))
            detail = json.dumps(
                {"from": sender, "document_id": document_id, "priority": priority,
                 "sha256": hashlib.sha256(doc_id.encode()).hexdigest()} if kind == "accepted" else {},
                ensure_ascii=False, sort_keys=True,
            )  # fmt: skip
            who = recipient if kind in ("delivered", "fetched", "status") else None
            net = sender_net if kind in ("accepted", "sealed") else target
            rid = f"bench-{i:x}"
            digest = record_hash(kind, moment, doc_id, who, net, rid, detail, prev)
            events.append((seq, kind, moment, doc_id, who, net, detail, rid, prev, digest))
            prev = digest
        if len(events) >= 200_000:
            _flush(db, docs, routes, deliveries, events)
    _flush(db, docs, routes, deliveries, events)
    db.execute("COMMIT")
    db.close()
    return ids, doc_ids, time.perf_counter() - started


def _flush(
    db: sqlite3.Connection, docs: list[Row], routes: list[Row], deliveries: list[Row], events: list[Row]
) -> None:
    db.executemany(
        "INSERT INTO documents (id, kind, sender, sender_network, doc_key, document_id, response_for, "
        "status_code, signed_digest, signer, subject, due_at, priority, classification, size, accepted_at, "
        "package) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        docs,
    )
    db.executemany(
        "INSERT INTO routes (id, document, network, state, priority, sender, fair_rank, attempts, done_at) "
        "VALUES (?,?,?,?,?,?,?,?,?)",
        routes,
    )
    db.executemany(
        "INSERT INTO deliveries (document, route, recipient, addressed, network, state, priority, "
        "delivered_at) VALUES (?,?,?,?,?,?,?,?)",
        deliveries,
    )
    db.executemany(
        "INSERT INTO events (seq, kind, at, document, recipient, network, detail, request_id, prev_hash, "
        "hash) VALUES (?,?,?,?,?,?,?,?,?,?)",
        events,
    )
    for rows in (docs, routes, deliveries, events):
        rows.clear()


def timed(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"median {statistics.median(ms):7.2f} ms, p95 {p95:7.2f} ms (n={len(ms)})"


async def store_figures(url: str, ids: list[str], doc_ids: list[str], now: datetime) -> None:
    store = SqlStore(url, synchronous="OFF")
    oversight = SqlOversight(store.database)
    rng = random.Random(11)
    hour_ago = now - timedelta(hours=1)
    try:
        trace = []
        for doc_id in rng.sample(ids, 200):
            t = time.perf_counter()
            parts = await oversight.trace_parts(doc_id)
            assert parts is not None
            render_text(build_timeline(parts))
            trace.append(time.perf_counter() - t)
        print(f"trace one document by id (read + timeline + text): {timed(trace)}")
        searches = {
            "by id": Search(id=rng.choice(ids)),
            "by DocumentId": Search(document_id=rng.choice(doc_ids)),
            f"agency {BIG}, newest 50": Search(agency=BIG),
            f"agency {BIG}, 2h window 20 days ago": Search(
                agency=BIG, since=now - timedelta(days=20, hours=2), until=now - timedelta(days=20)
            ),
            "agency H10.05.01 (small), last 24h": Search(agency="H10.05.01", since=now - timedelta(hours=24)),
            "time range: last 2h": Search(since=now - timedelta(hours=2)),
            "time range: 1h, 20 days ago": Search(
                since=now - timedelta(days=20, hours=1), until=now - timedelta(days=20)
            ),
            "delivery state failed (none), all time": Search(states=frozenset({"failed"})),
        }  # fmt: skip
        for name, search in searches.items():
            runs = []
            for _ in range(20):
                t = time.perf_counter()
                found = await oversight.search_documents(search)
                runs.append(time.perf_counter() - t)
            print(f"search {name:<40} {len(found):3d} found: {timed(runs)}")
        page = Search(agency=BIG)
        t = time.perf_counter()
        for _ in range(10):
            found = await oversight.search_documents(page)
            page = Search(agency=BIG, before=found[-1].document.id)
        per_page = (time.perf_counter() - t) * 100
        print(f"search agency {BIG}: 10 pages of 50 (keyset)        {per_page:7.2f} ms/page")
        for name, call in (
            ("overview: documents per minute (1 h)", lambda: oversight.accepted_per_minute(since=hour_ago)),
            ("overview: queue depths", oversight.queue_depths),
            ("overview: failing deliveries", lambda: oversight.failing(limit=20)),
            ("overview: charts' activity (1 h)", lambda: oversight.activity(since=hour_ago)),
            ("overview: recent documents", lambda: oversight.recent_documents(limit=15)),
        ):  # fmt: skip
            runs = []
            for _ in range(10):
                t = time.perf_counter()
                await call()
                runs.append(time.perf_counter() - t)
            print(f"{name:<48} {timed(runs)}")
    finally:
        await store.close()


def plans(path: Path) -> None:
    db = sqlite3.connect(path)
    queries = {
        "trace events": "SELECT * FROM events WHERE document = 'x' ORDER BY at, seq",
        "by DocumentId": "SELECT id FROM documents WHERE document_id = 'x' ORDER BY id DESC LIMIT 50",
        "sent by agency": "SELECT id FROM documents WHERE sender = 'x' ORDER BY id DESC LIMIT 50",
        "received by agency": "SELECT d.id FROM documents d JOIN deliveries v ON v.document = d.id "
        "WHERE v.recipient = 'x' AND d.kind = 'edoc' ORDER BY v.document DESC LIMIT 50",
        "time range": "SELECT id FROM documents WHERE accepted_at >= 'a' AND accepted_at < 'b' "
        "ORDER BY accepted_at DESC LIMIT 50",
        "charts' routes": "SELECT r.network, count(*) FROM routes r JOIN documents d ON d.id = r.document "
        "WHERE r.document IN (SELECT id FROM documents WHERE accepted_at >= 'a') AND d.accepted_at >= 'a' "
        "GROUP BY r.network",
        "charts' deliveries": "SELECT e.at, d.accepted_at FROM events e LEFT JOIN documents d ON d.id = "
        "e.document WHERE e.seq >= 5 AND e.kind IN ('delivered', 'failed') AND e.at >= 'a'",
        "recent documents": "SELECT id FROM documents ORDER BY id DESC LIMIT 15",
    }  # fmt: skip
    for name, sql in queries.items():
        plan = "; ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql))
        print(f"plan {name:<20} {plan}")
    db.close()


async def console_figures(home: Path, ids: list[str], doc_ids: list[str]) -> None:
    config = load_config(home)
    creds = issue_operator(config.certs, "BENCH", now=datetime.now(UTC))
    node = Node(config)
    await node.start(port=0)
    ctx = ssl.create_default_context(cafile=str(config.certs / "trust.pem"))
    ctx.load_cert_chain(str(creds.certificate), str(creds.key))
    base = f"https://localhost:{node.port}"
    rng = random.Random(5)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
            pages = {
                "GET /console (overview)": lambda: "/console",
                "GET /console/search?q=<DocumentId>": lambda: "/console/search?q=" + rng.choice(doc_ids),
                f"GET /console/search?agency={BIG}": lambda: f"/console/search?agency={BIG}",
                "GET /console/documents/<id> (timeline)": lambda: "/console/documents/" + rng.choice(ids),
                "GET /metrics": lambda: "/metrics",
            }
            for name, path in pages.items():
                runs = []
                for _ in range(20):
                    t = time.perf_counter()
                    async with session.get(base + path()) as reply:
                        await reply.read()
                        assert reply.status == 200, reply.status
                    runs.append(time.perf_counter() - t)
                print(f"{name:<48} {timed(runs)}")
    finally:
        await node.stop()


def cli(home: Path, *args: str) -> float:
    env = {**os.environ, "GATEWAY_HOME": str(home)}
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - t
    assert out.returncode == 0, out.stdout + out.stderr
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=250_000)
    parser.add_argument("--events-per-document", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        init_home(home, now=datetime.now(UTC))
        config = load_config(home)
        path = home / "gateway.db"
        asyncio.run(SqlStore(config.database_url).close())  # the schema, by the store itself
        now = datetime.now(UTC)
        ids, doc_ids, seconds = fill(path, args.documents, args.events_per_document, now)
        total = args.documents * args.events_per_document
        python = sys.version.split()[0]
        print(f"machine: {os.cpu_count()} cores, Python {python}, SQLite {sqlite3.sqlite_version}")
        size = path.stat().st_size / 2**20
        print(f"filled {args.documents:,} documents and {total:,} chained events in {seconds:.1f} s")
        print(f"  ({total / seconds:,.0f} events/s); database {size:,.0f} MiB")
        db = sqlite3.connect(path, isolation_level=None)
        last, digest = db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        seal = load_seal_key(config.certs, Network.GOVERNMENT)
        head = sign_head(
            seq=last, hash_=digest, at=now, node="local", key=seal.key, certificate=seal.chain[0]
        )
        db.execute(
            "INSERT INTO audit_heads (seq, hash, signed_at, node, signer, algorithm, signature, certificate) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (head.seq, head.hash, head.signed_at, head.node, head.signer, head.algorithm, head.signature,
             head.certificate),
        )  # fmt: skip
        db.close()
        plans(path)
        asyncio.run(store_figures(config.database_url, ids, doc_ids, now))
        runs = [cli(home, "trace", random.choice(ids)) for _ in range(5)]
        print(f"`gateway trace ID` as a process (start-up included) {timed(runs)}")
        runs = [cli(home, "trace", "--agency", BIG, "--since", "2h") for _ in range(3)]
        print(f"`gateway trace --agency {BIG} --since 2h`      {timed(runs)}")
        asyncio.run(console_figures(home, ids, doc_ids))
        t = cli(home, "audit", "verify")
        print(f"`gateway audit verify` over all {total:,} records: {t:.1f} s ({total / t:,.0f} records/s)")


if __name__ == "__main__":
    main()
