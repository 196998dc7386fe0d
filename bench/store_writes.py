"""The store's hot writes on their own: accepting documents and completing their routes, on a real
SQLite file (or a PostgreSQL URL), without HTTP, checkers or carriers.

N documents shaped as the intake writes them (a 12 KB package, one route, one delivery, the
accepted / signature_verified / routed records) are accepted C at a time, so that group commit
batches them as under load; then every route is claimed and completed in batches as the courier
does. Reports documents/s for each phase and the node process's CPU time per document, which is
what the interpreter lock makes scarce (bench/throughput.py: the store writer thread was over half
of the node's samples under py-spy).

    .venv/bin/python bench/store_writes.py [N] [--concurrency C] [--claim K] [--url URL]

A benchmark, not a test: it never fails on slowness.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from gateway.domain.vocabulary import Classification, Network, Priority
from gateway.exchange.ports import Carried, NewDelivery, NewDocument, NewEvent, NewRoute
from gateway.infra.sql.engine import sqlite_url
from gateway.infra.sql.store import SqlStore

SENDER, RECIPIENT = "000.00.00.G22", "000.00.00.A01"


def document(i: int, package: bytes) -> NewDocument:
    now = datetime.now(UTC)
    doc_id = secrets.token_hex(16)
    return NewDocument(
        id=doc_id,
        kind="edoc",
        sender=SENDER,
        sender_network=Network.GOVERNMENT,
        doc_key=f"{SENDER},2026/12/04,{i}/STORE",
        document_id=f"{SENDER},2026/12/04,{i}/STORE",
        response_for=None,
        status_code=None,
        signed_digest=secrets.token_hex(32),
        signer=f"agency:{SENDER}",
        subject=f"Công văn số {i} về việc thử tải",
        priority=Priority.THUONG,
        classification=Classification.NONE,
        accepted_at=now,
        package=package,
        routes=(NewRoute(Network.PARTY, (NewDelivery(RECIPIENT, RECIPIENT),)),),
        events=(
            NewEvent("accepted", now, doc_id, None, "government", {"kind": "edoc", "size": len(package)}),
            NewEvent("signature_verified", now, doc_id, None, "government", {"signer": SENDER}),
            NewEvent("routed", now, doc_id, None, "party", {"recipients": [RECIPIENT]}),
        ),
    )


async def run(n: int, concurrency: int, url: str, claim: int) -> None:
    store = SqlStore(url, synchronous="FULL", writer="bench")
    package = os.urandom(9000) + b"x" * 3000
    docs = [document(i, package) for i in range(n)]
    sem = asyncio.Semaphore(concurrency)

    async def accept(doc: NewDocument) -> None:
        async with sem:
            await store.accept(doc)

    cpu, start = time.process_time(), time.perf_counter()
    await asyncio.gather(*(accept(d) for d in docs))
    accept_s, accept_cpu = time.perf_counter() - start, time.process_time() - cpu

    cpu, start, done = time.process_time(), time.perf_counter(), 0
    while done < n:
        jobs = await store.claim_routes(node="bench", limit=claim, now=datetime.now(UTC), lease_seconds=60)
        if not jobs:
            break
        at = datetime.now(UTC)
        carried = Carried(
            sealed=b"<gw:Transfer/>" * 100, events=(NewEvent("sealed", at, None, None, "party"),)
        )
        await store.complete_routes([(job, carried) for job in jobs], now=at)
        done += len(jobs)
    carry_s, carry_cpu = time.perf_counter() - start, time.process_time() - cpu
    await store.close()
    print(
        f"store {url.split(':')[0]}: {n} documents, concurrency {concurrency}: "
        f"accepted {n / accept_s:.0f} docs/s ({accept_cpu / n * 1e6:.0f} µs CPU each), "
        f"claimed and completed {done / carry_s:.0f} routes/s "
        f"({carry_cpu / max(done, 1) * 1e6:.0f} µs CPU each)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--url", help="a database URL (default: a new SQLite file)")
    # The node's courier claims 8 routes at a time (so a Hỏa tốc document waits for little in flight).
    parser.add_argument("--claim", type=int, default=8, help="routes per claim (default 8, as the node)")
    args = parser.parse_args()
    url = args.url or sqlite_url(Path(tempfile.mkdtemp(prefix="gw-store-")) / "gateway.db")
    asyncio.run(run(args.n, args.concurrency, url, args.claim))


if __name__ == "__main__":
    main()
