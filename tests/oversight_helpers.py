"""Helpers shared by the audit, trace, metrics and console tests: the CLI, operator certificates,
and direct edits of the SQLite file (as an attacker with the database file would make them)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import ssl
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from gateway.audit.log import record_hash
from gateway.http.console import OperatorCredentials, issue_operator
from gateway.runtime.config import Config
from gateway.runtime.node import Node


async def gateway(home: Path | None, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``gateway`` command in a thread (the node under test keeps serving on this loop)."""
    env = {**os.environ}
    env.pop("GATEWAY_HOME", None)
    env.pop("GATEWAY_URL", None)  # the node under test, not one the shell names
    if home is not None:
        env["GATEWAY_HOME"] = str(home)

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            cwd=cwd,
        )

    return await asyncio.to_thread(run)


def operator(config: Config, name: str = "ALICE") -> OperatorCredentials:
    return issue_operator(config.certs, name, now=datetime.now(UTC), days=30)


def operator_session(config: Config, creds: OperatorCredentials | None) -> aiohttp.ClientSession:
    ctx = ssl.create_default_context(cafile=str(config.certs / "trust.pem"))
    if creds is not None:
        ctx.load_cert_chain(str(creds.certificate), str(creds.key))
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))


def database(config: Config) -> sqlite3.Connection:
    """The node's SQLite file opened directly (autocommit), with a generous busy timeout."""
    return sqlite3.connect(config.database_url.removeprefix("sqlite:///"), isolation_level=None, timeout=30)


def rechain_from(db: sqlite3.Connection, seq: int) -> None:
    """Recompute every hash from ``seq`` on, as a careful attacker would after editing a record."""
    prev = db.execute("SELECT hash FROM events WHERE seq < ? ORDER BY seq DESC LIMIT 1", (seq,)).fetchone()[0]
    rows = db.execute(
        "SELECT seq, kind, at, document, recipient, network, request_id, detail FROM events WHERE seq >= ? "
        "ORDER BY seq",
        (seq,),
    ).fetchall()
    db.execute("BEGIN IMMEDIATE")
    for s, kind, at, document, recipient, network, request_id, detail in rows:
        digest = record_hash(kind, at, document, recipient, network, request_id, detail, prev)
        db.execute("UPDATE events SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, s))
        prev = digest
    db.execute("COMMIT")


async def settle(node: Node) -> None:
    """Wait until the node has carried everything and written its last event (receipts travel too)."""
    last = -1
    for _ in range(400):
        seq = await node.oversight.last_seq()
        if seq == last and await node.store.pending_routes() == 0:
            return
        last = seq
        await asyncio.sleep(0.05)
    raise AssertionError("the node kept writing events for 20 s")
