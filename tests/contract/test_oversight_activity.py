"""The overview's reads (``SqlOversight.activity`` and ``recent_documents``) on SQLite and PostgreSQL.

One scenario, written in time order as a node writes it: a backlog route accepted hours before the
window and delivered inside it, a document to two networks, a failed route, one still waiting.
The queue the charts draw is checked against a count made route by route from the same scenario.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.domain.vocabulary import Network, Priority
from gateway.infra.sql.engine import sqlite_url
from gateway.infra.sql.reads import SqlOversight
from gateway.infra.sql.store import SqlStore
from gateway.operators.activity import last_hour, window
from tests.conftest import A01, G22, H41
from tests.contract.test_store_contract import carried, claim, document, route

NOW = datetime(2026, 11, 22, 4, 0, 30, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStore]:
    url = (
        sqlite_url(tmp_path / "o.db") if request.param == "sqlite" else request.getfixturevalue("pg_database")
    )
    made = SqlStore(url)
    try:
        yield made
    finally:
        await made.close()


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


async def carry(store: SqlStore, doc_id: str, at: datetime, *, fail: bool = False) -> None:
    jobs = [j for j in await claim(store, now=at, limit=100) if j.document.id == doc_id]
    assert jobs
    if fail:
        for j in jobs:
            await store.fail_route(j, reason="link down", now=at)
    else:
        await store.complete_routes([(j, carried(j, at=at)) for j in jobs], now=at)


async def test_activity_reads_routes_finished_deliveries_and_the_queue(store: SqlStore) -> None:
    old = document(G22, (route(Network.PARTY, A01),), at=ago(180))
    two = document(G22, (route(Network.PARTY, A01), route(Network.GOVERNMENT, H41)), at=ago(50))
    urgent = document(G22, (route(Network.PARTY, A01),), at=ago(20), priority=Priority.HOA_TOC)
    failing = document(G22, (route(Network.PARTY, A01),), at=ago(8))
    waiting = document(G22, (route(Network.PARTY, A01),), at=ago(5))
    await store.accept(old)
    await store.accept(two)
    await carry(store, two.id, ago(45))
    await store.accept(urgent)
    await carry(store, urgent.id, ago(19.5))
    await carry(store, old.id, ago(10))  # the backlog: accepted three hours ago
    await store.accept(failing)
    await carry(store, failing.id, ago(7), fail=True)
    await store.accept(waiting)

    oversight = SqlOversight(store.database)
    since = window(NOW)[0]
    activity = await oversight.activity(since=since)
    assert activity.complete and activity.since == since
    made = sorted((r.minute, r.network, r.priority, r.kind, r.count) for r in activity.routes)
    minute = lambda m: ago(m).replace(second=0, microsecond=0)  # noqa: E731
    assert made == [
        (minute(50), "government", 0, "edoc", 1), (minute(50), "party", 0, "edoc", 1),
        (minute(20), "party", 3, "edoc", 1), (minute(8), "party", 0, "edoc", 1),
        (minute(5), "party", 0, "edoc", 1),
    ]  # fmt: skip
    got = sorted((f.at, f.document, f.network, f.kind) for f in activity.finished)
    assert got == [
        (ago(45), two.id, "government", "delivered"), (ago(45), two.id, "party", "delivered"),
        (ago(19.5), urgent.id, "party", "delivered"), (ago(10), old.id, "party", "delivered"),
        (ago(7), failing.id, "party", "failed"),
    ]  # fmt: skip
    by_doc = {f.document: f for f in activity.finished}
    assert by_doc[old.id].accepted_at == ago(180) and by_doc[old.id].document_kind == "edoc"
    assert [(q.network, q.priority, q.count) for q in activity.pending] == [("party", 0, 1)]

    accepted = await oversight.accepted_per_minute(since=since)
    hour = last_hour(activity, accepted, now=NOW)
    # The queue route by route: waiting from its acceptance until it left (or still).
    party = [(ago(180), ago(10)), (ago(50), ago(45)), (ago(20), ago(19.5)), (ago(8), ago(7)), (ago(5), None)]
    lives: dict[str, list[tuple[datetime, datetime | None]]] = {
        "party": party,
        "government": [(ago(50), ago(45))],
    }
    for series in hour.queue:
        for start, depth in zip(hour.minutes, series.values, strict=True):
            end = min(start + timedelta(minutes=1), NOW)
            expected = sum(
                1
                for made_at, left in lives.get(series.name, [])
                if made_at < end and (left is None or left >= end)
            )
            assert depth == expected, (series.name, start, depth, expected)
    p50 = hour.latency[0].values
    assert p50[hour.minutes.index(minute(10))] == 170 * 60  # the backlog shows as latency
    assert p50[hour.minutes.index(minute(45))] == 5 * 60
    totals = {t.network: t for t in hour.totals}
    assert totals["government"].sent == 4  # two, urgent, failing, waiting: the sender's network
    assert (totals["party"].received, totals["government"].received, totals["party"].failed) == (3, 1, 1)


async def test_recent_documents_are_the_newest_of_any_kind_with_their_deliveries(store: SqlStore) -> None:
    first = document(G22, (route(Network.PARTY, A01),), at=ago(3))
    answer = document(A01, (route(Network.GOVERNMENT, G22),), at=ago(2), kind="status", response_for=first.id,
                      status_code="03")  # fmt: skip
    last = document(G22, (route(Network.PARTY, A01), route(Network.GOVERNMENT, H41)), at=ago(1))
    for d in (first, answer, last):
        await store.accept(d)
    recent = await SqlOversight(store.database).recent_documents(limit=2)
    assert [s.document.id for s in recent] == [last.id, answer.id]
    assert [s.document.kind for s in recent] == ["edoc", "status"]
    assert sorted(d.network.value for d in recent[0].deliveries) == ["government", "party"]


async def test_a_log_too_long_for_one_read_is_said_to_be_cut(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.infra.sql import reads

    docs = [document(G22, (route(Network.PARTY, A01),), at=ago(30 - i)) for i in range(3)]
    for d in docs:
        await store.accept(d)
        await carry(store, d.id, d.accepted_at + timedelta(seconds=20))
    oversight = SqlOversight(store.database)
    assert (await oversight.activity(since=window(NOW)[0])).complete
    monkeypatch.setattr(reads, "_CHART_EVENTS", 3)  # the last document's accepted, sealed, delivered
    cut = await oversight.activity(since=window(NOW)[0])
    assert not cut.complete and [f.document for f in cut.finished] == [docs[-1].id]
    assert len(cut.routes) == 3  # the routes are not read from the log: all of them
