"""The SQL store's group-commit writer: one failing operation never holds up or loses the others."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection

from gateway.exchange.ports import NewEvent
from gateway.infra.sql.chain import append_events
from gateway.infra.sql.engine import sqlite_url
from gateway.infra.sql.store import SqlStore


async def test_an_operation_that_raises_a_bug_is_told_and_the_rest_of_its_batch_commits(tmp_path: Path):
    store = SqlStore(sqlite_url(tmp_path / "w.db"), synchronous="NORMAL")
    now = datetime.now(UTC)

    def buggy(conn: Connection) -> None:
        append_events(conn, [NewEvent("never", now)])
        raise ValueError("a bug in a store operation")

    def fine(conn: Connection) -> str:
        append_events(conn, [NewEvent("kept", now)])
        return "ok"

    try:
        # Queued together, so both run in one group commit.
        results = await asyncio.wait_for(
            asyncio.gather(store.database.write(buggy), store.database.write(fine), return_exceptions=True),
            timeout=30,
        )
        assert isinstance(results[0], ValueError) and results[1] == "ok"
        kinds = [e.kind for e in await store.events_of_kind("kept")] + [
            e.kind for e in await store.events_of_kind("never")
        ]
        assert kinds == ["kept"]
    finally:
        await store.close()


@pytest.mark.parametrize("count", [1, 5])
async def test_the_writer_keeps_working_after_a_failed_operation(tmp_path: Path, count: int):
    store = SqlStore(sqlite_url(tmp_path / "w.db"), synchronous="NORMAL")

    def boom(conn: Connection) -> None:
        raise RuntimeError("bug")

    try:
        for _ in range(count):
            with pytest.raises(RuntimeError):
                await asyncio.wait_for(store.database.write(boom), timeout=30)
        await store.add_events([NewEvent("after", datetime.now(UTC))])
        assert len(await store.events_of_kind("after")) == 1
    finally:
        await store.close()
