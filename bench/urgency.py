"""Urgency and fairness under a real backlog, on the real store and carriers of one node.

1. N ordinary documents (default 10,000) are queued for delivery; the courier starts draining
   them; then one Hỏa tốc document is sent. Reported: the time until it is in its recipient's
   inbox, against the time the backlog ahead of it took to drain (what a first-in-first-out
   queue would have made it wait).
2. One sender floods (N/2 documents) while a second sender sends 50 documents over the same
   period; reported: the second sender's p50/p99 delivery latency.

    .venv/bin/python bench/urgency.py [N]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from gateway.domain.vocabulary import DeliveryState, Priority
from gateway.runtime.config import load_config
from gateway.runtime.node import Node, init_home
from tests.conftest import A01, G22, H41, make_package, set_setting


async def delivered(node: Node, doc_id: str) -> None:
    while True:
        deliveries = await node.store.deliveries(doc_id)
        if deliveries and all(d.state is DeliveryState.DELIVERED for d in deliveries):
            return
        await asyncio.sleep(0.002)


def committed(database: Path, doc_id: str, seen: dict[str, float]) -> None:
    """In a thread of its own, on a plain SQLite connection: the moment the delivery is committed
    into the inbox. Asking through the node's own store (as ``delivered`` does) adds the wait for
    its busy event loop and reader threads, which is the benchmark's cost, not the gateway's."""
    conn = sqlite3.connect(database, timeout=30)
    try:
        while True:
            row = conn.execute("select state from deliveries where document = ?", (doc_id,)).fetchone()
            if row and row[0] == DeliveryState.DELIVERED.value:
                seen["at"] = time.perf_counter()
                return
            time.sleep(0.001)
    finally:
        conn.close()


async def drained(node: Node) -> None:
    while await node.store.pending_routes():
        await asyncio.sleep(0.01)


async def queue(node: Node, packages: list[bytes], sender: str) -> None:
    sem = asyncio.Semaphore(8)

    async def one(p: bytes) -> None:
        async with sem:
            await node.intake.submit(sender, p)

    await asyncio.gather(*(one(p) for p in packages))


async def run(n: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="gw-urgency-"))
    init_home(home, now=datetime.now(UTC))
    set_setting(home, "carriers", "2")
    config = load_config(home)
    t = time.perf_counter()
    backlog = [make_package(config, G22, [A01], document_id=f"{G22},2026/11/22,{i}/B") for i in range(n)]
    urgent = make_package(config, G22, [A01], document_id=f"{G22},2026/11/22,HT/B", priority=Priority.HOA_TOC)
    flood = [make_package(config, G22, [A01], document_id=f"{G22},2026/11/22,{i}/F") for i in range(n // 2)]
    steady = [make_package(config, H41, [A01], document_id=f"{H41},2026/11/22,{i}/S") for i in range(50)]
    print(f"prepared {n + n // 2 + 51} signed documents in {time.perf_counter() - t:.0f} s")

    node = Node(config)
    try:
        t = time.perf_counter()
        await queue(node, backlog, G22)
        print(f"queued {n} ordinary documents in {time.perf_counter() - t:.0f} s (courier stopped)")
        courier = asyncio.create_task(node.courier.run())
        # Send once the carriers are up and draining the backlog (their processes take about two
        # seconds to start here; a document sent before that waits for them, whatever its urgency).
        t = time.perf_counter()
        while await node.store.pending_routes() > n - 100:
            await asyncio.sleep(0.01)
        print(f"carriers draining the backlog {time.perf_counter() - t:.1f} s after the courier started")
        start = time.perf_counter()
        accepted = await node.intake.submit(G22, urgent)
        seen: dict[str, float] = {}
        watcher = threading.Thread(target=committed, args=(home / "gateway.db", accepted.id, seen))
        watcher.start()
        await delivered(node, accepted.id)
        urgent_ms = (time.perf_counter() - start) * 1000
        await asyncio.to_thread(watcher.join)
        inbox_ms = (seen["at"] - start) * 1000
        await drained(node)
        fifo_s = time.perf_counter() - start
        print(
            f"urgency: Hỏa tốc committed into its inbox {inbox_ms:.0f} ms after it was sent behind a "
            f"backlog of {n} (seen through the node's own store after {urgent_ms:.0f} ms); the backlog "
            f"ahead of it drained only {fifo_s:.1f} s later (its wait in a FIFO queue)"
        )

        # Fairness: one sender floods; another sends a document every so often meanwhile.
        latencies: list[float] = []

        async def steady_sender() -> None:
            for p in steady:
                t0 = time.perf_counter()
                accepted = await node.intake.submit(H41, p)
                await delivered(node, accepted.id)
                latencies.append(time.perf_counter() - t0)
                await asyncio.sleep(0.05)

        t = time.perf_counter()
        flooding = asyncio.create_task(queue(node, flood, G22))
        await asyncio.sleep(0.5)  # the flood is under way
        await steady_sender()
        flood_left = await node.store.pending_routes()
        await flooding
        await drained(node)
        latencies.sort()
        print(
            f"fairness: while {G22} flooded {n // 2} documents, {H41}'s 50 documents were delivered with "
            f"p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, p99 {latencies[-1] * 1000:.0f} ms "
            f"({flood_left} of the flood still pending when the last one arrived; "
            f"flood drained {time.perf_counter() - t:.1f} s after the first)"
        )
        courier.cancel()
    finally:
        node.courier.close()
        await node.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=10_000)
    asyncio.run(run(parser.parse_args().n))


if __name__ == "__main__":
    main()
