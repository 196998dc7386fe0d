"""A classified exchange through real processes leaves no plaintext in the database files or the logs."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.runtime.config import Config
from tests.api_contract import contract_session
from tests.conftest import A01, G22, I01, client_context, set_setting
from tests.processes import free_port, wait_healthy
from tests.test_restart import start_server

pytestmark = pytest.mark.slow

SUBJECT = "Phương án tác chiến bảo vệ biên giới 2027"
CONTENT = "Nội dung tuyệt mật số hiệu XK-4471 về điều động lực lượng"
ATTACHMENT_NAME = "ban-do-bo-tri-luc-luong.txt"
ATTACHMENT = "Tọa độ điểm tập kết: 21.0285, 105.8542".encode()


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GATEWAY_HOME": str(home), "GATEWAY_URL": ""}  # no URL from the shell
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


async def until_healthy(config: Config, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    async with contract_session(client_context(config, G22)) as session:
        await wait_healthy(session, f"https://localhost:{port}", proc, log)


def test_no_classified_plaintext_at_rest_or_in_logs(config: Config, home: Path, tmp_path: Path) -> None:
    port = free_port()
    set_setting(home, "port", str(port))
    set_setting(home, "carriers", "1")
    attachment = tmp_path / ATTACHMENT_NAME
    attachment.write_bytes(ATTACHMENT)
    proc = start_server(home, port)
    try:
        # Polled over HTTPS: a `gateway inbox` per try costs a second of CLI start-up each.
        asyncio.run(until_healthy(config, port, proc, home / "serve.log"))
        sent = cli(
            home, "send", "--as", G22, "--to", A01, "--to", I01, "--subject", SUBJECT, "--content", CONTENT,
            "--classification", "tuyet-mat", "--attach", str(attachment), "--json",
        )  # fmt: skip
        assert sent.returncode != 0 and "clearance_too_low" in sent.stderr  # I01 is cleared to toi-mat only
        sent = cli(
            home, "send", "--as", G22, "--to", A01, "--to", I01, "--subject", SUBJECT, "--content", CONTENT,
            "--classification", "toi-mat", "--attach", str(attachment), "--json",
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        doc_id = json.loads(sent.stdout)["id"]
        for code in (A01, I01):
            for _ in range(100):
                fetched = cli(home, "fetch", "--as", code, doc_id, "-o", str(tmp_path / f"{code}.xml"))
                if fetched.returncode == 0:
                    break
            assert fetched.returncode == 0, fetched.stderr
            assert SUBJECT in (tmp_path / f"{code}.xml").read_text(
                encoding="utf-8"
            )  # the recipient can read it
            assert (tmp_path / f"{code}.xml").stat().st_mode & 0o077 == 0
        # A recipient holding the wrong key fails cleanly, and the failure lands in the trace.
        stolen = cli(home, "fetch", "--as", "000.00.00.G12", doc_id)
        assert stolen.returncode == 1 and SUBJECT not in stolen.stderr
        receipts = json.loads(cli(home, "receipts", "--as", G22, doc_id, "--json").stdout)
        assert receipts["unconfirmed"] == []
        assert {r["recipient"]: [s["signed_by"] for s in r["receipts"]] for r in receipts["recipients"]} == {
            A01: [A01],
            I01: [I01],
        }
        trace = cli(home, "trace", doc_id, "--json")
        assert SUBJECT not in trace.stdout and CONTENT not in trace.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)

    needles = [
        SUBJECT.encode(),
        CONTENT.encode(),
        ATTACHMENT_NAME.encode(),
        ATTACHMENT,
        base64.b64encode(ATTACHMENT),
        b"XK-4471",
    ]
    haystacks = [p for p in home.iterdir() if p.name.startswith("gateway.db")] + [home / "serve.log"]
    assert any(p.name == "gateway.db" for p in haystacks)
    for path in haystacks:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"{needle[:20]!r} found in {path.name}"
    assert (home / "gateway.db").stat().st_mode & 0o077 == 0
