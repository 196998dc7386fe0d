"""The agency commands find the server and say what is wrong: ``serve --port`` recorded in the home,
``--url`` and ``GATEWAY_URL``, ``send --due``, ``send --as`` a code the registry lacks or whose key
was revoked. Each test here failed before the change it covers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from gateway.crypto.pki import Role
from gateway.infra.files.pki_dir import read_inventory
from gateway.pki.inventory import Slot
from gateway.runtime.config import Config
from gateway.runtime.node import Node
from tests.conftest import A01, G22, client_context, set_setting, wait_delivered
from tests.processes import free_port, start_gateway, wait_healthy


async def gateway(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The ``gateway`` command as a user runs it in ``home`` (no GATEWAY_URL unless given)."""
    environment = {k: v for k, v in os.environ.items() if k != "GATEWAY_URL"}
    environment.update(GATEWAY_HOME=str(home), **env)

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", *args],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return await asyncio.to_thread(run)  # the node under test keeps serving on this loop


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr


async def test_serve_on_another_port_is_found_by_the_next_command(
    home: Path, config: Config, tmp_path: Path
) -> None:
    port = free_port()
    set_setting(home, "port", str(free_port()))  # the config names a port nobody listens on
    log = tmp_path / "serve.log"
    proc = start_gateway(home, "serve", "--port", str(port), log=log)
    try:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context(config, A01)))
        async with session:
            await wait_healthy(session, f"https://localhost:{port}", proc, log)
        record = home / "run" / "gateway.toml.url"
        assert record.read_text().split()[0] == f"https://localhost:{port}"
        sent = await gateway(home, "send", "--as", G22, "--to", A01, "--subject", "Qua cổng khác")
        assert sent.returncode == 0, sent.stderr
        inbox = await gateway(home, "inbox", "--as", A01)
        assert inbox.returncode == 0 and "Qua cổng khác" in inbox.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert not record.exists()  # a stopped node leaves no address behind
    gone = one_line(await gateway(home, "inbox", "--as", A01))
    assert "cannot reach the gateway" in gone and "--url" in gone


async def test_url_option_and_environment_variable(node: Node, home: Path) -> None:
    set_setting(home, "port", str(free_port()))  # not where the node listens
    url = f"https://localhost:{node.port}"
    missed = one_line(await gateway(home, "inbox", "--as", A01))
    assert "connection refused" in missed and "the port in" in missed and "--url" in missed

    by_option = await gateway(home, "inbox", "--as", A01, "--url", url)
    assert by_option.returncode == 0, by_option.stderr
    by_env = await gateway(home, "inbox", "--as", A01, GATEWAY_URL=url)
    assert by_env.returncode == 0, by_env.stderr
    # An explicit --url wins over the environment.
    both = await gateway(
        home, "receipts", "--as", G22, "nope", "--url", url, GATEWAY_URL="https://localhost:1"
    )
    assert "HTTP 404 not_found" in one_line(both)
    plain = await gateway(home, "inbox", "--as", A01, "--url", f"http://localhost:{node.port}")
    assert plain.returncode == 2 and "not an https:// URL" in plain.stderr


async def test_a_stale_record_is_ignored(node: Node, home: Path) -> None:
    set_setting(home, "port", str(node.port))
    record = home / "run" / "gateway.toml.url"
    record.parent.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    record.write_text(f"https://localhost:{free_port()}\n{dead.stdout.strip()}\n")  # a killed node's
    listed = await gateway(home, "inbox", "--as", A01)
    assert listed.returncode == 0, listed.stderr


async def test_send_due_sets_the_deadline(node: Node, home: Path, config: Config, tmp_path: Path) -> None:
    set_setting(home, "port", str(node.port))
    sent = await gateway(
        home,
        "send",
        "--as",
        G22,
        "--to",
        A01,
        "--subject",
        "Có hạn",
        "--due",
        "2026-12-31 17:00:00",
        "--json",
    )
    assert sent.returncode == 0, sent.stderr
    doc_id = json.loads(sent.stdout)["id"]
    await wait_delivered(node, doc_id)
    stored = await node.store.document(doc_id)
    assert stored is not None and stored.due_at is not None
    assert stored.due_at.isoformat() == "2026-12-31T10:00:00+00:00"  # 17:00 in Vietnam
    out = tmp_path / "due.xml"
    fetched = await gateway(home, "fetch", "--as", A01, doc_id, "-o", str(out))
    assert fetched.returncode == 0, fetched.stderr
    assert "<edXML:DueDate>2026/12/31 17:00:00</edXML:DueDate>" in out.read_text(encoding="utf-8")

    wrong = one_line(
        await gateway(home, "send", "--as", G22, "--to", A01, "--subject", "x", "--due", "2026/02/30")
    )
    assert "due date '2026/02/30' is not a real date" in wrong


async def test_send_as_an_unknown_or_revoked_agency(node: Node, home: Path, config: Config) -> None:
    set_setting(home, "port", str(node.port))
    unknown = one_line(await gateway(home, "send", "--as", "000.00.00.G98", "--to", A01, "--subject", "x"))
    assert "000.00.00.G98 is not in the registry" in unknown and "gateway agencies list" in unknown
    assert "no dev signing certificate" not in unknown

    record = read_inventory(config.certs).holding(G22, Role.SIGN, Slot.ACTIVE)
    assert record is not None
    revoked = await gateway(home, "certs", "revoke", record.serial, "--reason", "Lộ khóa", "--by", "officer")
    assert revoked.returncode == 0, revoked.stderr
    refused = one_line(await gateway(home, "send", "--as", G22, "--to", A01, "--subject", "x"))
    assert f"signing certificate {record.serial} of agency {G22} was revoked" in refused
    assert "Lộ khóa" in refused and f"gateway certs issue --agency {G22} --role sign" in refused
