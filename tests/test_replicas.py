"""Two replicas of one node on one PostgreSQL database share the work and deliver nothing twice,
even when one is killed in the middle of carrying."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import create_engine, text

from gateway.runtime.config import Config
from tests.api_contract import contract_session
from tests.conftest import A01, G22, H41, I01, client_context, make_package
from tests.processes import alive, children, free_port, start_gateway, wait_healthy

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def replica_config(name: str, port: int, database: str) -> str:
    return (
        "[gateway]\n"
        f'node = "{name}"\nport = {port}\ndatabase = "{database}"\n'
        'registry = "registry.csv"\ncerts = "certs_dev"\n'
        "carriers = 1\nsubmit_rate = 0\nlease_seconds = 2.0\n"
    )


def start(home: Path, name: str) -> subprocess.Popen[bytes]:
    return start_gateway(home, "--config", str(home / f"{name}.toml"), "serve", log=home / f"{name}.log")


async def healthy(
    session: aiohttp.ClientSession, port: int, proc: subprocess.Popen[bytes], home: Path, name: str
) -> None:
    await wait_healthy(session, f"https://localhost:{port}", proc, home / f"{name}.log")


def rows(database: str, query: str) -> list[tuple[Any, ...]]:
    engine = create_engine(database)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(query))]
    finally:
        engine.dispose()


async def burst(session: aiohttp.ClientSession, ports: list[int], packages: list[bytes]) -> list[str]:
    ids = []
    for i, package in enumerate(packages):  # alternate between the replicas' APIs
        async with session.post(f"https://localhost:{ports[i % len(ports)]}/v1/edocs", data=package) as r:
            assert r.status == 202, await r.text()
            ids.append((await r.json())["id"])
    return ids


def logged_events(log: Path) -> list[str]:
    """The delivery-log records a replica wrote as JSON lines (logger gateway.events)."""
    found = []
    for line in log.read_text(encoding="utf-8").splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("logger") == "gateway.events":
                found.append(entry["event"])
    return found


async def until_drained(database: str, timeout: float = 90) -> None:
    for _ in range(int(timeout / 0.2)):
        if rows(database, "select count(*) from routes where state = 'pending'") == [(0,)]:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the replicas did not drain the queue")


def assert_exactly_once(database: str, ids: list[str], recipients: int) -> None:
    states = Counter(r[0] for r in rows(database, "select state from deliveries"))
    assert states == {"delivered": len(ids) * recipients}, states
    delivered = Counter(rows(database, "select document, recipient from events where kind = 'delivered'"))
    assert len(delivered) == len(ids) * recipients and set(delivered.values()) == {1}


async def test_two_replicas_share_one_queue(config: Config, home: Path, pg_database: str) -> None:
    ports = [free_port(), free_port()]
    for name, port in zip(("r1", "r2"), ports, strict=True):
        (home / f"{name}.toml").write_text(replica_config(name, port, pg_database))
    procs = [start(home, "r1"), start(home, "r2")]
    try:
        ctx = client_context(config, G22)
        async with contract_session(ctx) as session:
            for proc, port, name in zip(procs, ports, ("r1", "r2"), strict=True):
                await healthy(session, port, proc, home, name)
            packages = [
                make_package(config, G22, [A01, I01, H41], document_id=f"{G22},2026/11/22,{i}/R")
                for i in range(150)
            ]
            ids = await burst(session, ports, packages)
            await until_drained(pg_database)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)
    assert_exactly_once(pg_database, ids, 3)
    by_replica = Counter(r[0] for r in rows(pg_database, "select carried_by from routes"))
    assert set(by_replica) == {"r1", "r2"}, f"both replicas should have carried routes: {by_replica}"
    # Each replica logs (and counts in /metrics) the records it wrote, not its sibling's too:
    # summed over the replicas, every delivery is one log line.
    logged = {name: Counter(logged_events(home / f"{name}.log")) for name in ("r1", "r2")}
    carried = dict(
        rows(pg_database, "select writer, count(*) from events where kind = 'delivered' group by writer")
    )
    assert {name: lines["delivered"] for name, lines in logged.items()} == carried
    assert sum(lines["accepted"] for lines in logged.values()) == len(ids)


async def test_killed_replicas_claims_are_taken_over(config: Config, home: Path, pg_database: str) -> None:
    ports = [free_port(), free_port()]
    for name, port in zip(("r1", "r2"), ports, strict=True):
        (home / f"{name}.toml").write_text(replica_config(name, port, pg_database))
    r1, r2 = start(home, "r1"), start(home, "r2")
    try:
        ctx = client_context(config, G22)
        async with contract_session(ctx) as session:
            await healthy(session, ports[0], r1, home, "r1")
            await healthy(session, ports[1], r2, home, "r2")
            packages = [
                make_package(config, G22, [A01, I01], document_id=f"{G22},2026/11/22,{i}/K")
                for i in range(200)
            ]
            sending = asyncio.create_task(burst(session, [ports[0]], packages))
            killed = False
            for _ in range(600):
                held = rows(
                    pg_database, "select count(*) from routes where state = 'pending' and claimed_by = 'r2'"
                )
                if held[0][0] > 0:
                    workers = children(r2.pid)  # its carriers, perhaps still starting up
                    r2.send_signal(signal.SIGKILL)
                    r2.wait(timeout=10)
                    killed = True
                    break
                await asyncio.sleep(0.01)
            assert killed, "r2 never held a claim"
            ids = await sending
            await until_drained(pg_database)
    finally:
        for proc in (r1, r2):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    assert_exactly_once(pg_database, ids, 2)
    carried = Counter(r[0] for r in rows(pg_database, "select carried_by from routes"))
    assert carried["r1"] > 0
    # The killed replica's carrier processes did not live on as orphans (their watch reads the
    # node's pid from the node, so even one killed before its worker finished starting is seen).
    for _ in range(100):
        if not alive(workers):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"r2's carrier processes {workers} outlived it")
