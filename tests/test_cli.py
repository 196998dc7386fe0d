"""The `gateway` command end to end against a running node: what an agency clerk and an operator type."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from gateway.runtime.node import Node
from tests.conftest import A01, G16, G22, set_setting, wait_delivered


async def gateway(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GATEWAY_HOME": str(home), "GATEWAY_URL": ""}  # no URL from the shell

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", *args], env=env, capture_output=True, text=True, timeout=120
        )

    # In a thread: the node under test runs on this event loop and must keep serving.
    return await asyncio.to_thread(run)


async def test_send_inbox_fetch_status_receipts_trace(node: Node, home: Path, tmp_path: Path) -> None:
    set_setting(home, "port", str(node.port))
    attachment = tmp_path / "phu-luc.txt"
    attachment.write_text("Phụ lục danh sách xã", encoding="utf-8")

    sent = await gateway(
        home, "send", "--as", G22, "--to", A01, "--to", G16, "--subject", "Về việc thử CLI",
        "--priority", "3", "--attach", str(attachment), "--json",
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    reply = json.loads(sent.stdout)
    doc_id = reply["id"]
    assert {r["code"]: r["forwarded_via"] for r in reply["recipients"]} == {
        A01: None,
        "000.00.00.G12": [G16, "000.00.00.G12"],
    }
    await wait_delivered(node, doc_id)

    inbox = await gateway(home, "inbox", "--as", A01)
    assert inbox.returncode == 0 and doc_id in inbox.stdout and "Về việc thử CLI" in inbox.stdout

    out = tmp_path / "received.xml"
    fetched = await gateway(home, "fetch", "--as", A01, doc_id, "-o", str(out))
    assert fetched.returncode == 0, fetched.stderr
    assert (
        "signed by 000.00.00.G22" in fetched.stdout and "government:sealed → party:bridged" in fetched.stdout
    )
    assert "Phụ lục danh sách xã".encode() not in out.read_bytes()  # attachments stay base64
    assert "Về việc thử CLI" in out.read_text(encoding="utf-8")

    status = await gateway(home, "status", "--as", A01, doc_id, "03", "--note", "Đã vào sổ")
    assert status.returncode == 0, status.stderr
    await asyncio.sleep(0.3)
    receipts = await gateway(home, "receipts", "--as", G22, doc_id, "--json")
    view = json.loads(receipts.stdout)
    a01 = next(r for r in view["recipients"] if r["recipient"] == A01)
    assert [r["code"] for r in a01["receipts"]][:2] == ["01", "03"]
    assert view["unconfirmed"] == ["000.00.00.G12"]

    trace = await gateway(home, "trace", doc_id, "--json")
    kinds = [e["event"] for e in json.loads(trace.stdout)["events"]]
    assert kinds[:2] == ["accepted", "verified"] and "redirected" in kinds and "fetched" in kinds

    bad = await gateway(home, "status", "--as", A01, doc_id, "07")
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "unknown status code" in bad.stderr

    other = await gateway(home, "fetch", "--as", "000.00.00.I01", doc_id)
    assert other.returncode == 1 and "HTTP 404 not_found" in other.stderr and "Traceback" not in other.stderr


async def test_init_is_idempotent_and_agencies_read_the_registry(tmp_path: Path) -> None:
    home = tmp_path / "fresh"
    first = await gateway(home, "init")
    assert first.returncode == 0 and "created" in first.stdout
    second = await gateway(home, "init")
    assert second.returncode == 0 and "nothing to do" in second.stdout
    listing = await gateway(home, "agencies", "list", "--json")
    codes = {a["code"]: a for a in json.loads(listing.stdout)}
    assert codes[G16]["successor"] == "000.00.00.G12" and codes[G16]["state"] == "retired"
    assert codes["H41.12.05"]["clearance"] == "mat" and codes["H41.12.05"]["parent"] == "000.00.00.H41"
    keys = list((home / "certs_dev").rglob("*.key"))
    assert keys and all(k.stat().st_mode & 0o077 == 0 for k in keys)
