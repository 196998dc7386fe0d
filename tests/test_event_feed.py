"""The event feed that drives metrics and the delivery-log lines, over a real SQLite store.

It hands every record to its observers once, in order, and in slices with the event loop free
between them: a poll that handed a second's records over at once held every request behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path

from gateway.exchange.ports import NewEvent
from gateway.infra.sql.engine import sqlite_url
from gateway.infra.sql.reads import SqlOversight
from gateway.infra.sql.store import SqlStore
from gateway.operators.metrics import EventFeed
from gateway.operators.readmodel import FeedEvent


async def test_every_record_is_handed_over_once_in_slices_that_let_the_loop_run(tmp_path: Path) -> None:
    store = SqlStore(sqlite_url(tmp_path / "feed.db"), writer="node-a")
    try:
        now = datetime.now(UTC)
        await store.add_events([NewEvent("cert_issued", now, None, None, None, {"n": -1})])  # before
        slices: list[list[int]] = []
        loop_ran: list[int] = []  # how many slices were in when the loop ran something else

        def observe(records: list[FeedEvent]) -> None:
            slices.append([r.seq for r in records])

        feed = EventFeed(SqlOversight(store.database), [observe], writer="node-a", batch=250, slice_size=32)
        assert await feed.poll() == 0  # the feed starts where the log stands
        await store.add_events([NewEvent("cert_issued", now, None, None, None, {"n": i}) for i in range(600)])

        async def other_work() -> None:
            while True:
                loop_ran.append(len(slices))
                await asyncio.sleep(0)

        beside = asyncio.create_task(other_work())
        try:
            assert await feed.poll() == 600
        finally:
            beside.cancel()
        seqs = [seq for s in slices for seq in s]
        assert seqs == sorted(seqs) and len(set(seqs)) == 600 and min(seqs) == 2  # each once, the old one not
        assert max(len(s) for s in slices) <= 32
        assert len(set(loop_ran)) >= len(slices) - 1  # the other work ran between (nearly) every two slices
        assert await feed.poll() == 0
    finally:
        await store.close()


async def test_a_poll_cancelled_between_slices_hands_nothing_over_twice(tmp_path: Path) -> None:
    store = SqlStore(sqlite_url(tmp_path / "feed.db"), writer="node-a")
    try:
        now = datetime.now(UTC)
        seen: list[int] = []
        feed = EventFeed(
            SqlOversight(store.database),
            [lambda records: seen.extend(r.seq for r in records)],
            writer="node-a",
            slice_size=10,
        )
        await feed.poll()
        await store.add_events([NewEvent("cert_issued", now, None, None, None, {"n": i}) for i in range(100)])
        polling = asyncio.create_task(feed.poll())
        while len(seen) < 30:  # part way through: some slices handed over, the rest not
            await asyncio.sleep(0)
        polling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await polling
        await feed.poll()  # as Node.stop does, after cancelling the periodic one
        assert len(seen) == 100 and len(set(seen)) == 100
    finally:
        await store.close()
