"""A real `gateway serve` killed with SIGKILL in the middle of a burst loses and duplicates nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from gateway.runtime.config import DEFAULT_PORT, Config, load_config
from tests.api_contract import contract_session
from tests.conftest import A01, G22, H41, I01, client_context, make_package, set_setting
from tests.processes import alive, children, free_port, start_gateway, wait_healthy

pytestmark = pytest.mark.slow


def start_server(home: Path, port: int) -> subprocess.Popen[bytes]:
    return start_gateway(home, "serve", "--port", str(port), log=home / "serve.log")


def counts(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db, timeout=10) as conn:
        delivered = conn.execute("select count(*) from deliveries where state = 'delivered'").fetchone()[0]
        pending = conn.execute("select count(*) from deliveries where state = 'pending'").fetchone()[0]
    return delivered, pending


async def test_sigkill_mid_burst_loses_and_duplicates_nothing(config: Config, home: Path) -> None:
    set_setting(home, "carriers", "2")  # as deployed: sealing and verifying in worker processes
    port = free_port()
    base = f"https://localhost:{port}"
    db = home / "gateway.db"
    recipients = [A01, I01, H41]  # three networks: two bridges and one local route per document
    packages = [
        make_package(
            config, G22, recipients, document_id=f"{G22},2026/11/22,{i}/KILL", content=f"văn bản {i}"
        )
        for i in range(400)
    ]
    accepted: dict[int, str] = {}
    proc = start_server(home, port)
    killed_with_pending = False
    workers: list[int] = []
    async with contract_session(client_context(config, G22)) as session:
        await wait_healthy(session, base, proc, home / "serve.log")

        async def send(i: int) -> None:
            try:
                async with session.post(base + "/v1/edocs", data=packages[i]) as r:
                    if r.status == 202:
                        accepted[i] = (await r.json())["id"]
            except (aiohttp.ClientError, OSError):
                pass  # the server died under us: this one was not acknowledged

        async def killer() -> None:
            nonlocal killed_with_pending
            while True:
                await asyncio.sleep(0.02)
                delivered, pending = counts(db) if db.exists() else (0, 0)
                if delivered >= 30 and pending > 0:
                    killed_with_pending = True
                    workers.extend(children(proc.pid))  # before the kill: then they are orphans
                    proc.send_signal(signal.SIGKILL)
                    return
                if proc.poll() is not None:
                    return

        sem = asyncio.Semaphore(16)

        async def bounded(i: int) -> None:
            async with sem:
                await send(i)

        # A bound for a broken build (a node that accepts nothing never reaches 30 deliveries and
        # the killer waited for ever), not a measure of speed.
        async with asyncio.timeout(300):
            await asyncio.gather(killer(), *(bounded(i) for i in range(len(packages))))
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        assert killed_with_pending, "the burst finished before the kill; the test proved nothing"
        assert workers, "the server ran no carrier processes"
        for _ in range(100):  # the killed server's carriers notice and exit, not live on orphaned
            if not alive(workers):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"carrier processes {workers} outlived their killed server")
        before_restart = set(accepted.values())

        # Restart on the same home; resend what was never acknowledged (an agency system would).
        proc = start_server(home, port)
        try:
            await wait_healthy(session, base, proc, home / "serve.log")
            for i in range(len(packages)):
                if i not in accepted:
                    await send(i)
            assert len(accepted) == len(packages)
            for _ in range(600):
                if counts(db)[1] == 0:
                    break
                await asyncio.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)

    with sqlite3.connect(db) as conn:
        ids = {row[0] for row in conn.execute("select id from documents where kind = 'edoc'")}
        assert before_restart <= ids, "a document acknowledged with 202 was lost"
        assert ids == set(accepted.values()), "a resend created a second document"
        states = Counter(row[0] for row in conn.execute("select state from deliveries"))
        assert states == {"delivered": len(packages) * len(recipients)}
        per_delivery = Counter(
            conn.execute("select document, recipient from events where kind = 'delivered'").fetchall()
        )
        assert len(per_delivery) == len(packages) * len(recipients)
        assert set(per_delivery.values()) == {1}, "a delivery went into an inbox twice"


def test_cli_mistakes_are_one_line(home: Path) -> None:
    env = {**os.environ, "GATEWAY_HOME": str(home), "GATEWAY_URL": ""}  # no URL from the shell
    for args, needle in (
        (["sned"], "invalid choice"),
        (["agencies", "show", "000.00.00.g22"], "level-1 group"),
        (["inbox", "--as", "000.00.00.G22"], "cannot reach the gateway"),
        (["send", "--as", A01], "--to"),
        (["--home", "/nonexistent/dir", "inbox", "--as", A01], "gateway init"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "gateway.cli", *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode != 0, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_cli_mistakes_stay_one_line_while_a_server_listens_on_8443(home: Path) -> None:
    """README's own `./scripts/serve` may be running on 8443 while the tests run: a test home
    must not reach it. Something listens on 8443 here (this test's socket, or whatever already
    holds the port), and a client command in a test home still finds no server."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", DEFAULT_PORT))
        listener.listen()
    except OSError:
        pass  # taken: by a real server, which is the case this test is about
    try:
        assert load_config(home).port != DEFAULT_PORT
        env = {**os.environ, "GATEWAY_HOME": str(home)}
        result = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "inbox", "--as", G22],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1 and "cannot reach the gateway" in result.stderr, result.stderr
    finally:
        listener.close()


def _kinds(pid: int) -> Counter[str]:
    """The node's worker processes by kind: checkers, carriers (multiprocessing's spawned workers)."""
    kinds: Counter[str] = Counter()
    for child in alive(children(pid)):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"gateway.runtime.checkers" in cmdline:
            kinds["checker"] += 1
        elif b"spawn_main" in cmdline:
            kinds["carrier"] += 1
    return kinds


async def test_serve_answers_only_once_its_checkers_and_carriers_run(config: Config, home: Path) -> None:
    # Started for the first documents instead, four interpreters came up under the first second's
    # load on two cores, and most of that second's requests waited or were refused (503).
    set_setting(home, "carriers", "2")
    set_setting(home, "submit_checkers", "2")
    port = free_port()
    proc = start_server(home, port)
    try:
        async with contract_session(client_context(config, G22)) as session:
            await wait_healthy(session, f"https://localhost:{port}", proc, home / "serve.log")
            assert _kinds(proc.pid) == Counter({"checker": 2, "carrier": 2})  # no document sent yet
    finally:
        proc.terminate()
        proc.wait(timeout=30)
