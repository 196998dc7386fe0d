"""Urgent documents overtake a backlog, senders share fairly, floods get 429, deadlines are watched."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from gateway.agency_side.packages import sign_package
from gateway.domain.edxml import NewEdoc, Organ, build_edoc, build_status
from gateway.domain.vocabulary import Network, Priority, StatusCode
from gateway.exchange.deadlines import VIETNAM, DeadlineWatcher, due_at
from gateway.runtime.config import Config
from gateway.runtime.node import Node
from tests.api_contract import contract_session
from tests.conftest import A01, G22, H41, I01, client_context, set_setting, wait_delivered
from tests.conftest import make_package as package


@pytest.fixture(params=["sqlite", "postgresql"])
def engine_config(request: pytest.FixtureRequest, config: Config) -> Config:
    if request.param == "postgresql":
        return replace(config, database=request.getfixturevalue("pg_database"))
    return config


@pytest.fixture
async def idle_node(engine_config: Config) -> AsyncIterator[Node]:
    """A node whose courier is not running: the test decides when work is claimed."""
    node = Node(engine_config)
    try:
        yield node
    finally:
        await node.stop()  # an unstarted node too: courier, checker processes, store


async def test_hoa_toc_overtakes_a_backlog(idle_node: Node, engine_config: Config) -> None:
    for i in range(40):
        await idle_node.intake.submit(
            G22, package(engine_config, G22, [A01], document_id=f"{G22},2026/11/22,{i}/T")
        )
    urgent = await idle_node.intake.submit(
        G22,
        package(engine_config, G22, [A01], document_id=f"{G22},2026/11/22,HT/T", priority=Priority.HOA_TOC),
    )
    [first] = await idle_node.store.claim_routes(node="t", limit=1, now=datetime.now(UTC), lease_seconds=60)
    assert first.document.id == urgent.id
    await idle_node.store.release_claims(node="t")
    while await idle_node.courier.run_once():
        pass
    inbox = await idle_node.mailbox.inbox(A01)
    assert inbox[0].document.id == urgent.id and len(inbox) == 41
    assert [i.document.id for i in inbox[1:]] == sorted(i.document.id for i in inbox[1:])  # then oldest first


async def test_one_senders_batch_does_not_starve_another(idle_node: Node, engine_config: Config) -> None:
    for i in range(30):
        await idle_node.intake.submit(
            G22, package(engine_config, G22, [A01], document_id=f"{G22},2026/11/22,{i}/F")
        )
    single = await idle_node.intake.submit(H41, package(engine_config, H41, [A01]))
    claimed = await idle_node.store.claim_routes(node="t", limit=3, now=datetime.now(UTC), lease_seconds=60)
    senders = [job.document.sender for job in claimed]
    assert senders[:2] == [G22, H41], senders  # right after the batch's head, not after all 30
    assert single.id in [job.document.id for job in claimed]


async def test_flood_gets_429_then_everything_is_accepted(config: Config, home) -> None:
    set_setting(home, "submit_rate", "5.0")
    set_setting(home, "submit_burst", "4")
    from gateway.runtime.config import load_config

    node = Node(load_config(home))
    await node.start(port=0)
    try:
        packages = [package(config, G22, [A01], document_id=f"{G22},2026/11/22,{i}/R") for i in range(10)]
        ctx = client_context(config, G22)
        async with contract_session(ctx) as s:
            refused: list[tuple[int, float]] = []
            ids = set()
            for i, p in enumerate(packages):
                async with s.post(f"https://localhost:{node.port}/v1/edocs", data=p) as r:
                    if r.status == 429:
                        body = await r.json()
                        assert body["error"] == "rate_limited"
                        refused.append((i, float(r.headers["Retry-After"])))
                    else:
                        assert r.status == 202
                        ids.add((await r.json())["id"])
            assert refused and all(wait >= 1 for _, wait in refused)
            stored = {d.document.id for d in await node.mailbox.inbox(A01)}
            await asyncio.sleep(max(w for _, w in refused))
            for i, _ in refused:  # the client slows down and sends the rest again
                async with s.post(f"https://localhost:{node.port}/v1/edocs", data=packages[i]) as r:
                    assert r.status == 202
                    ids.add((await r.json())["id"])
                await asyncio.sleep(0.25)
        assert len(ids) == 10
        assert ids >= stored
    finally:
        await node.stop()


class ManualClock:
    def __init__(self, now: datetime) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current


async def test_deadline_near_then_overdue_flagged_once(config: Config) -> None:
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    due = (clock.current + timedelta(hours=1)).astimezone(VIETNAM)
    node = Node(config, clock=clock)
    try:
        doc = NewEdoc(
            sender=Organ(G22),
            recipients=[Organ(A01), Organ(I01)],
            document_id=f"{G22},2026/11/22,DL/T",
            subject="Báo cáo trước hạn",
            due=due.strftime("%Y/%m/%d %H:%M:%S"),
        )
        raw = sign_package(config.certs, G22, build_edoc(doc, now=clock.current))
        accepted = await node.intake.submit(G22, raw)
        assert due_at(doc.due) == due
        while await node.courier.run_once():
            pass
        watcher = DeadlineWatcher(node.store, clock, warn_before=timedelta(hours=2))
        near = await watcher.check_once()
        assert sorted((e.kind, e.recipient) for e in near) == [("deadline_near", A01), ("deadline_near", I01)]
        assert await watcher.check_once() == []  # flagged once, not every interval

        # A01 fetches and answers 03; I01 does nothing.
        await node.mailbox.fetch(A01, accepted.id)
        status = sign_package(
            config.certs,
            A01,
            build_status(
                sender=Organ(A01),
                about_organ=G22,
                about_document_id=doc.document_id,
                code=StatusCode.ACCEPTED,
                now=clock.current,
            ),
        )
        await node.intake.submit(A01, status, about=accepted.id)
        clock.current += timedelta(hours=2)
        late = await watcher.check_once()
        assert [(e.kind, e.recipient, e.network) for e in late] == [("overdue", I01, Network.FRONT.value)]
        events = await node.store.events(accepted.id)
        assert [e.recipient for e in events if e.kind == "overdue"] == [I01]
    finally:
        await node.stop()  # an unstarted node too: courier, checker processes, store


def test_due_dates_read_as_vietnam_time() -> None:
    assert due_at("2026/11/30") == datetime(2026, 11, 30, 23, 59, 59, tzinfo=VIETNAM)
    assert due_at("2026/11/30 08:00:00") == datetime(2026, 11, 30, 1, 0, tzinfo=UTC)
    assert due_at("2026/02/30") is None and due_at(None) is None


async def test_inbox_reports_the_urgency(node: Node, config: Config, agency) -> None:
    status, body = await agency(G22).send(package(config, G22, [A01], priority=Priority.THUONG_KHAN))
    await wait_delivered(node, body["id"])
    _, inbox = await agency(A01).call("GET", "/v1/inbox")
    assert inbox["documents"][0]["priority"] == int(Priority.THUONG_KHAN)


async def test_deliveries_at_risk_in_trace_overdue_metrics_and_console(
    node: Node, config: Config, agency, home
) -> None:
    """The operator's three views of deadlines agree: who is overdue, who is due soon, and not
    anyone who fetched and answered 03, nor a document due tomorrow."""
    from prometheus_client.parser import text_string_to_metric_families

    from tests.oversight_helpers import gateway, operator, operator_session, settle

    now = datetime.now(UTC).replace(microsecond=0)

    async def send(recipients: list[str], due: datetime, tag: str) -> str:
        doc = NewEdoc(
            sender=Organ(G22),
            recipients=[Organ(r) for r in recipients],
            document_id=f"{G22},2026/12/01,{tag}/HAN",
            subject=f"Báo cáo {tag}",
            due=due.astimezone(VIETNAM).strftime("%Y/%m/%d %H:%M:%S"),
        )
        status, body = await agency(G22).send(sign_package(config.certs, G22, build_edoc(doc, now=now)))
        assert status == 202, body
        await wait_delivered(node, body["id"])
        return str(body["id"])

    soon = await send([A01, I01], now + timedelta(minutes=30), "SOON")
    late = await send([H41], now - timedelta(minutes=10), "LATE")
    await send([A01], now + timedelta(days=1), "LATER")  # not at risk yet
    # A01 fetches the first one and answers 03: no longer at risk. I01 has done nothing.
    assert (await agency(A01).call("GET", f"/v1/edocs/{soon}"))[0] == 200
    answer = build_status(
        sender=Organ(A01), about_organ=G22, about_document_id=f"{G22},2026/12/01,SOON/HAN",
        code=StatusCode.ACCEPTED, now=now,
    )  # fmt: skip
    status, _ = await agency(A01).call(
        "POST", f"/v1/edocs/{soon}/status", sign_package(config.certs, A01, answer)
    )
    assert status == 202
    await settle(node)

    out = await gateway(home, "trace", "--overdue", "--json")
    assert out.returncode == 0, out.stderr
    rows = [
        (d["document"], d["recipient"], d["state"], d["waiting_for"])
        for d in json.loads(out.stdout)["deliveries"]
    ]
    assert rows == [
        (late, H41, "overdue", "fetch (01) and 03"),
        (soon, I01, "deadline_near", "fetch (01) and 03"),
    ]
    text = await gateway(home, "trace", "--overdue", "--agency", I01)
    assert text.returncode == 0, text.stderr
    assert f"{soon}  → {I01} (front)" in text.stdout and late not in text.stdout
    assert "Báo cáo" not in text.stdout  # whom to phone, not what the document says

    creds = operator(config)
    async with operator_session(config, creds) as session:
        async with session.get(f"https://localhost:{node.port}/metrics") as reply:
            families = {f.name: f for f in text_string_to_metric_families(await reply.text())}
        async with session.get(f"https://localhost:{node.port}/console") as reply:
            page = await reply.text()
    at_risk = {
        (s.labels["network"], s.labels["state"]): s.value
        for s in families["gateway_deliveries_at_risk"].samples
    }
    assert at_risk == {("government", "overdue"): 1, ("front", "deadline_near"): 1}
    assert '<span id="at-risk">2</span>' in page and f"/console/documents/{late}" in page
