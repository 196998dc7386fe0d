"""Issue 13: packages up to 50 MB end to end (plain and classified, real keys), one attachment by
its ContentId, and the in-flight upload budget. Speed and memory are measured in
``bench/large.py``, not here."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import pty
import signal
import sqlite3
import ssl
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.agency_side.client import AgencyKeys, AsyncAgencyClient
from gateway.agency_side.packages import decryption_keys, open_delivery, sign_package
from gateway.domain import transfer as tr
from gateway.domain.edxml import Attachment, NewEdoc, Organ, build_edoc
from gateway.domain.vocabulary import Classification, Network
from gateway.http.api import server_tls_context
from gateway.infra.files.pki_dir import server_paths
from gateway.runtime.config import Config, load_config
from gateway.runtime.node import Node
from tests.conftest import A01, G22, I01, AgencyClient, client_context, set_setting, trust_for, wait_delivered
from tests.processes import free_port, start_gateway, wait_healthy
from tests.test_cli import gateway

MIB = 1024 * 1024
SCAN = "Bản scan công văn số 12.pdf"


def large_package(
    config: Config, *, scan: bytes, level: Classification = Classification.NONE, number: int = 1
) -> bytes:
    """A package with a scanned document and a small appendix, as an agency's system builds it."""
    doc = NewEdoc(
        sender=Organ(G22),
        recipients=[Organ(A01)],
        document_id=f"{G22},2026/12/04,{number}/LARGE",
        subject="Về việc gửi hồ sơ scan",
        classification=level,
        attachments=(
            Attachment(SCAN, "application/pdf", scan),
            Attachment("phu-luc.txt", "text/plain", "Phụ lục".encode()),
        ),
    )
    return sign_package(config.certs, G22, build_edoc(doc, now=datetime.now(UTC)))


@pytest.fixture(scope="module")
def toi_mat_50_mb(template_home: Path) -> tuple[bytes, bytes]:
    """A 50 MB Tối mật package and its scan, built and signed once for the two round trips that
    send it (each to its own node): every home is a copy of the session's, so G22's key is the same."""
    scan = os.urandom(36 * MIB)
    return scan, large_package(load_config(template_home), scan=scan, level=Classification.TOI_MAT, number=2)


async def post(client: AgencyClient, package: bytes, level: str | None = None) -> tuple[int, Any]:
    """Send a large package as a document system streams it (a file-like body, not one buffer)."""
    headers = {"X-Classification": level} if level else {}
    async with client.session.post(client.base + "/v1/edocs", data=io.BytesIO(package), headers=headers) as r:
        return r.status, await r.json()


async def test_a_50_mb_package_round_trip_plain_with_one_attachment_by_content_id(
    node: Node, config: Config, agency
) -> None:
    scan = os.urandom(36 * MIB)  # base64 inside the package: about 48 MB, near the 50 MiB limit
    package = large_package(config, scan=scan)
    assert 45 * MIB < len(package) < config.max_package_bytes
    status, body = await post(agency(G22), package)
    assert status == 202, body
    assert {d.state.value for d in await wait_delivered(node, body["id"], timeout=60)} == {"delivered"}
    # Stored once, named by digest: the sealed header is small, whatever the package's size.
    sealed = await node.store.sealed_for(body["id"], Network.PARTY)
    assert sealed is not None and len(sealed) < 8 * 1024

    reader = agency(A01)
    status, delivered = await reader.call("GET", f"/v1/edocs/{body['id']}")
    assert status == 200
    opened = open_delivery(delivered, trust=trust_for(config), network=Network.PARTY, at=datetime.now(UTC))
    assert opened.package == package and opened.signer.code == G22
    first = opened.attachments[0]
    assert (first.content_id, first.name, first.data == scan) == ("1", SCAN, True)

    async with reader.session.get(f"{reader.base}/v1/edocs/{body['id']}/attachments/cid:1") as answer:
        served = await answer.read()
        assert answer.status == 200
        assert answer.headers["Content-Type"] == "application/pdf"
        assert answer.headers["X-Content-SHA256"] == hashlib.sha256(scan).hexdigest()
        disposition = answer.headers["Content-Disposition"]
    assert served == scan  # byte for byte
    assert disposition.startswith('attachment; filename="B_n scan c_ng v_n s_ 12.pdf"; filename*=UTF-8')
    status, _ = await reader.call("GET", f"/v1/edocs/{body['id']}/attachments/2")
    assert status == 200  # "2" and "cid:2" are the same ContentId
    status, err = await reader.call("GET", f"/v1/edocs/{body['id']}/attachments/cid:9")
    assert (status, err["error"]) == (404, "not_found")
    status, err = await agency(G22).call("GET", f"/v1/edocs/{body['id']}/attachments/cid:1")
    assert (status, err["error"]) == (403, "forbidden")  # the sender reads receipts, not deliveries
    status, err = await agency(I01).call("GET", f"/v1/edocs/{body['id']}/attachments/cid:1")
    assert (status, err["error"]) == (404, "not_found")  # a stranger is not told it exists
    trace = [e.kind for e in await node.store.events(body["id"])]
    assert trace.count("attachment_fetched") == 2


async def test_a_50_mb_toi_mat_package_round_trip_decrypted_only_by_its_recipient(
    node: Node, config: Config, agency, toi_mat_50_mb: tuple[bytes, bytes]
) -> None:
    scan, package = toi_mat_50_mb
    status, body = await post(agency(G22), package, "toi-mat")
    assert status == 202, body
    await wait_delivered(node, body["id"], timeout=60)
    stored = await node.store.package(body["id"])
    assert stored is not None and scan[:4096] not in stored  # only ciphertext at rest

    reader = agency(A01)
    status, delivered = await reader.call("GET", f"/v1/edocs/{body['id']}")
    assert status == 200
    opened = open_delivery(
        delivered,
        trust=trust_for(config),
        network=Network.PARTY,
        at=datetime.now(UTC),
        decryption_keys=decryption_keys(config.certs, A01),
    )
    assert opened.signer.code == G22 and opened.attachments[0].data == scan  # decrypted, then verified
    status, err = await reader.call("GET", f"/v1/edocs/{body['id']}/attachments/cid:1")
    assert (status, err["error"]) == (409, "attachment_encrypted")
    assert "fetch the document and decrypt it" in err["message"]


async def test_gateway_fetch_attachment_writes_the_signed_bytes(
    node: Node, home: Path, config: Config, agency, tmp_path: Path
) -> None:
    set_setting(home, "port", str(node.port))
    scan = os.urandom(3 * MIB)
    for number, level in ((3, Classification.NONE), (4, Classification.MAT)):
        package = large_package(config, scan=scan, level=level, number=number)
        status, body = await post(
            agency(G22), package, level.slug if level is not Classification.NONE else None
        )
        assert status == 202, body
        await wait_delivered(node, body["id"], timeout=60)
        target = tmp_path / f"scan-{number}.pdf"
        ran = await gateway(
            home, "fetch", "--as", A01, body["id"], "--attachment", "cid:1", "-o", str(target)
        )
        assert ran.returncode == 0, ran.stderr
        assert target.read_bytes() == scan
        assert hashlib.sha256(scan).hexdigest() in ran.stdout
        if level is not Classification.NONE:
            assert target.stat().st_mode & 0o077 == 0  # the plaintext of a classified attachment
    ran = await gateway(home, "fetch", "--as", A01, body["id"], "--attachment", "cid:7", "-o", str(target))
    assert ran.returncode == 1 and ran.stderr.count("\n") == 1 and "ContentIds: 1, 2" in ran.stderr
    assert "Traceback" not in ran.stderr


async def test_uploads_over_the_in_flight_budget_get_503_and_are_accepted_on_retry(
    home: Path, config: Config
) -> None:
    package = large_package(config, scan=os.urandom(4 * MIB), number=5)
    set_setting(home, "max_upload_bytes_in_flight", str(len(package) + len(package) // 2))
    node = Node(load_config(home))
    await node.start(port=0)
    try:
        ctx: ssl.SSLContext = client_context(config, G22)
        # One upload holds the budget: its headers announce the whole package, half the body sent.
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", node.port, ssl=ctx, server_hostname="localhost"
        )
        head = (
            f"POST /v1/edocs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(package)}\r\n\r\n"
        ).encode()
        writer.write(head + package[: len(package) // 2])
        await writer.drain()
        await asyncio.sleep(0.3)  # the handler runs once the headers are in, and holds its share

        second = large_package(config, scan=os.urandom(4 * MIB), number=6)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
            url = f"https://localhost:{node.port}/v1/edocs"
            async with session.post(url, data=io.BytesIO(second)) as answer:
                said = await answer.json()
                refused = (answer.status, said.get("error"), answer.headers.get("Retry-After"))
            assert refused == (503, "uploads_busy", "1"), said
            assert await node.store.events_of_kind("accepted") == []  # nothing was stored

            writer.write(package[len(package) // 2 :])  # the first upload completes...
            await writer.drain()
            status_line = await reader.readline()
            assert b" 202 " in status_line, status_line
            writer.close()
            async with session.post(url, data=io.BytesIO(second)) as answer:  # ...and the retry goes through
                assert answer.status == 202, await answer.text()
        assert len(await node.store.events_of_kind("accepted")) == 2
    finally:
        await node.stop()


async def test_a_long_attachment_that_is_not_base64_is_refused_as_the_schema_would(
    node: Node, config: Config, agency
) -> None:
    """Long attachments are checked as base64 outside libxml2's validator (quadratic in a text's
    length): the refusal is the same schema_invalid, nothing stored."""
    doc = NewEdoc(
        sender=Organ(G22),
        recipients=[Organ(A01)],
        document_id=f"{G22},2026/12/04,7/LARGE",
        subject="x",
        attachments=(Attachment("scan.pdf", "application/pdf", os.urandom(300_000)),),
    )
    root = build_edoc(doc, now=datetime.now(UTC))
    encoded = next(root.iter("{*}ContentTransferEncoded"))
    encoded.text = (encoded.text or "")[:-8] + "!!!!AAAA"
    status, body = await post(agency(G22), sign_package(config.certs, G22, root))
    assert (status, body["error"]) == (400, "schema_invalid"), body
    assert "not base64" in body["message"]
    assert await node.store.events_of_kind("accepted") == []


def _on_a_terminal(home: Path, *args: str) -> tuple[int, str]:
    """``gateway ARGS`` with its stderr on a pseudo-terminal (as in a clerk's shell); its output there."""
    master, slave = pty.openpty()
    env = {**os.environ, "GATEWAY_HOME": str(home), "GATEWAY_URL": ""}
    with subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", *args], env=env, stdout=subprocess.PIPE, stderr=slave
    ) as proc:
        os.close(slave)
        seen = bytearray()
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            seen += chunk
        proc.wait(timeout=120)
    os.close(master)
    return proc.returncode, seen.decode(errors="replace")


async def test_send_and_fetch_show_progress_on_a_terminal_and_nothing_extra_otherwise(
    node: Node, home: Path, tmp_path: Path
) -> None:
    set_setting(home, "port", str(node.port))
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(os.urandom(6 * MIB))
    send = ("send", "--as", G22, "--to", A01, "--subject", "Hồ sơ scan", "--attach", str(scan))
    code, shown = await asyncio.to_thread(_on_a_terminal, home, *send)
    assert code == 0, shown
    assert "sending" in shown and "100 %" in shown and "MB [" in shown
    quiet = await gateway(home, *send)  # not a terminal: no bar
    assert quiet.returncode == 0 and "sending" not in quiet.stderr and "%" not in quiet.stderr
    as_json = await asyncio.to_thread(_on_a_terminal, home, *send, "--json")
    assert as_json[0] == 0 and "sending" not in as_json[1]
    inbox = await node.mailbox.inbox(A01)
    code, shown = await asyncio.to_thread(
        _on_a_terminal, home, "fetch", "--as", A01, inbox[0].document.id, "-o", str(tmp_path / "got.xml")
    )
    assert code == 0, shown
    assert "receiving" in shown and "100 %" in shown


async def test_sigkill_during_a_large_upload_leaves_nothing_half_stored_and_the_retry_succeeds(
    config: Config, home: Path
) -> None:
    package = large_package(config, scan=os.urandom(24 * MIB), number=8)
    port = free_port()
    base = f"https://localhost:{port}"
    db = home / "gateway.db"
    ctx = client_context(config, G22)
    proc = start_gateway(home, "serve", "--port", str(port), log=home / "serve.log")
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
            await wait_healthy(session, base, proc, home / "serve.log")
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
        )
        head = f"POST /v1/edocs HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(package)}\r\n\r\n"
        writer.write(head.encode() + package[: len(package) * 3 // 5])
        await writer.drain()
        await asyncio.sleep(0.5)  # the server is reading the body
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
        assert proc.returncode == -signal.SIGKILL
        writer.close()
        with sqlite3.connect(db) as conn:
            assert conn.execute("select count(*) from documents").fetchone()[0] == 0  # nothing half-stored
            assert conn.execute("select count(*) from package_parts").fetchone()[0] == 0
        # The body was being spooled to disk, not held in memory; killed, nobody removed it.
        left = [p.name for p in config.spool_dir.iterdir()]
        assert len(left) == 1 and left[0].startswith("up-"), left
        assert (config.spool_dir / left[0]).stat().st_mode & 0o077 == 0  # owner-only
        # ...and sealed with a key that died with the node: none of what it held is readable.
        residue = (config.spool_dir / left[0]).read_bytes()
        assert len(residue) > MIB and package[:4096] not in residue and package[-MIB:][:4096] not in residue
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    proc = start_gateway(home, "serve", "--port", str(port), log=home / "serve.log")
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
            await wait_healthy(session, base, proc, home / "serve.log")
            assert list(config.spool_dir.iterdir()) == []  # what the killed run left is gone at start
            async with session.post(base + "/v1/edocs", data=io.BytesIO(package)) as answer:
                assert answer.status == 202, await answer.text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select package_sha256 from documents").fetchall()
        parts = conn.execute("select length(data) from package_parts order by seq").fetchall()
    assert rows == [(hashlib.sha256(package).hexdigest(),)]  # stored once, exactly as sent
    assert [n for (n,) in parts[:-1]] == [MIB] * (len(parts) - 1) and sum(n for (n,) in parts) == len(package)
    assert list(config.spool_dir.iterdir()) == []  # the answered request's file went with it


async def test_a_client_that_goes_away_mid_upload_leaves_no_spool_file(node: Node, config: Config) -> None:
    package = large_package(config, scan=os.urandom(8 * MIB), number=9)
    ctx = client_context(config, G22)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", node.port, ssl=ctx, server_hostname="localhost"
    )
    head = f"POST /v1/edocs HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(package)}\r\n\r\n"
    writer.write(head.encode() + package[: len(package) // 2])
    await writer.drain()
    async with asyncio.timeout(60):  # a bound for a broken build, not a measure of speed
        while not any(config.spool_dir.iterdir()):  # the server is spooling the body
            await asyncio.sleep(0.02)
        writer.close()  # gone half-way through
        while any(config.spool_dir.iterdir()):  # the request ended: its file is removed
            await asyncio.sleep(0.02)
    assert await node.store.pending_routes() == 0  # and nothing was stored


async def test_the_client_fetches_a_50_mb_toi_mat_package_through_its_spool_and_leaves_nothing(
    node: Node, config: Config, agency, tmp_path: Path, toi_mat_50_mb: tuple[bytes, bytes]
) -> None:
    scan, package = toi_mat_50_mb
    status, body = await post(agency(G22), package, "toi-mat")
    assert status == 202, body
    await wait_delivered(node, body["id"], timeout=60)
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    keys = AgencyKeys.from_dev_pki(config.certs, A01, config.registry)
    async with AsyncAgencyClient(f"https://localhost:{node.port}", keys, spool_dir=spool, timeout=300) as a01:
        delivery = await a01.fetch(body["id"], acknowledge=False)
        assert list(spool.iterdir()) == []  # the spooled ciphertext went with the fetch
        assert delivery.signed_by == G22 and delivery.attachments[0].data == scan
        # Exactly what the sender signed (the node encrypted the signed root, no XML declaration):
        # the decrypted bytes themselves, not a serialization of them.
        assert package.endswith(delivery.package) and delivery.package.startswith(b"<edXML ")
        status, delivered = await agency(A01).call("GET", f"/v1/edocs/{body['id']}")
        keys_a01 = decryption_keys(config.certs, A01)
        opened = open_delivery(
            delivered,
            trust=trust_for(config),
            network=Network.PARTY,
            at=datetime.now(UTC),
            decryption_keys=keys_a01,
        )
        assert opened.package == delivery.package and opened.sealed == delivery.opened.sealed


def _altered_cipher_value(node: Node, delivered: bytes) -> bytes:
    """What a compromised gateway could hand out: one byte of the ciphertext flipped (its text in
    the middle of the CipherValue, well-formed base64 still), under a perfectly valid seal."""
    sealed, package = tr.unframe(delivered)
    transfer, _ = node.adapters[Network.PARTY].open(sealed, sealed_by=Network.PARTY)
    at = package.rindex(b"</xenc:CipherValue>") - 4000 // 4 * 4
    group = bytearray(base64.b64decode(package[at : at + 4]))
    group[0] ^= 0x01
    altered = package[:at] + base64.b64encode(bytes(group)) + package[at + 4 :]
    resealed = node.adapters[Network.PARTY].seal(transfer.routing, tr.PackageRef.of(altered, encrypted=True))
    return b"".join(tr.frame(resealed, altered)[1])


async def test_gateway_fetch_of_a_tampered_delivery_writes_no_file_and_reports_it(
    node: Node, home: Path, config: Config, agency, tmp_path: Path
) -> None:
    package = large_package(config, scan=os.urandom(3 * MIB), level=Classification.MAT, number=21)
    status, body = await post(agency(G22), package, "mat")
    assert status == 202, body
    await wait_delivered(node, body["id"], timeout=60)
    _, delivered = await agency(A01).call("GET", f"/v1/edocs/{body['id']}")
    tampered = _altered_cipher_value(node, delivered)
    reports: list[Any] = []

    async def deliver(request: web.Request) -> web.Response:
        return web.Response(body=tampered, content_type="multipart/mixed")

    async def failure(request: web.Request) -> web.Response:
        reports.append(await request.json())
        return web.json_response({}, status=202)

    # A real TLS server with the node's own certificate, handing out the altered delivery.
    app = web.Application()
    app.router.add_get("/v1/edocs/{id}", deliver)
    app.router.add_post("/v1/edocs/{id}/failures", failure)
    crt, key = server_paths(config.certs)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(
        runner,
        "127.0.0.1",
        0,
        ssl_context=server_tls_context(str(crt), str(key), str(config.certs / "trust.pem")),
    )
    await site.start()
    try:
        port = runner.addresses[0][1]
        out = tmp_path / "out"
        out.mkdir()
        for extra in ((), ("--attachment", "cid:1")):
            target = out / "cong-van.xml"
            ran = await gateway(
                home,
                "fetch",
                "--as",
                A01,
                body["id"],
                *extra,
                "-o",
                str(target),
                "--url",
                f"https://localhost:{port}",
            )
            assert ran.returncode == 1 and "altered" in ran.stderr, ran.stderr
            assert "Traceback" not in ran.stderr
            assert list(out.iterdir()) == []  # no file, no part of one, no temp file beside it
    finally:
        await runner.cleanup()
    assert [r["stage"] for r in reports] == ["open", "open"]
