"""The operators' web console: over HTTP, and in a real headless Chromium holding a client certificate.

Chromium reads client certificates and extra trust roots from the NSS database in
``$HOME/.pki/nssdb``; the test gives it a HOME of its own with the dev root trusted
(``certutil``) and one certificate imported (``pk12util``). Without a policy Chromium
would ask which certificate to present, and headless there is nobody to answer: the
profile's ``auto_select_certificate`` content setting (the same one the
AutoSelectCertificateForUrls policy sets) names the issuer to pick for the gateway.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, load_pem_private_key, pkcs12
from cryptography.x509.oid import NameOID

from gateway.crypto.pki import Role
from gateway.infra.files.pki_dir import agency_paths
from gateway.operators.readmodel import Search
from gateway.runtime.config import Config
from gateway.runtime.node import Node
from tests.conftest import A01, G22, make_package, wait_delivered
from tests.oversight_helpers import operator, operator_session, settle

TOOLS = {
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
    "certutil": "libnss3-tools",
    "pk12util": "libnss3-tools",
}
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,1000",
)  # fmt: skip


async def sent_and_delivered(node: Node, config: Config, agency) -> str:
    status, body = await agency(G22).send(
        make_package(config, G22, [A01], subject="Về việc thử bảng điều khiển")
    )
    assert status == 202
    await wait_delivered(node, body["id"])
    await settle(node)
    doc_id: str = body["id"]
    return doc_id


# --- over HTTP ----------------------------------------------------------------------------------


async def test_console_pages_over_http(node: Node, config: Config, agency) -> None:
    doc_id = await sent_and_delivered(node, config, agency)
    base = f"https://localhost:{node.port}"
    async with operator_session(config, operator(config)) as session:
        async with session.get(base + "/console") as reply:
            page = await reply.text()
            assert reply.status == 200 and "Documents per minute by network" in page
            assert reply.headers["Content-Security-Policy"].startswith("default-src 'none'")
            assert '<span id="accepted-hour">1</span>' in page and "OPERATOR.ALICE" in page
        async with session.get(base + f"/console/search?q={doc_id}", allow_redirects=False) as reply:
            assert reply.status == 302 and reply.headers["Location"] == f"/console/documents/{doc_id}"
        record = await node.store.document(doc_id)
        assert record is not None and record.document_id is not None
        document_id = record.document_id
        async with session.get(base + "/console/search", params={"q": document_id}) as reply:
            assert reply.status == 200 and f"/console/documents/{doc_id}" in await reply.text()
        async with session.get(base + "/console/search", params={"agency": A01, "state": "failed"}) as reply:
            assert "no document matches" in await reply.text()
        async with session.get(base + "/console/search", params={"q": G22, "from": "2026-13-40"}) as reply:
            assert reply.status == 400 and "cannot read the time" in await reply.text()
        async with session.get(base + f"/console/documents/{doc_id}") as reply:
            page = await reply.text()
            assert reply.status == 200 and "government → party" in page and "Đã đến" in page
        async with session.get(base + "/console/documents/" + "f" * 32) as reply:
            assert reply.status == 404


async def test_agencies_and_strangers_are_refused(node: Node, config: Config, agency) -> None:
    client = agency(A01)
    async with client.session.get(client.base + "/console") as reply:
        assert reply.status == 403 and "is not an operator" in await reply.text()
    async with (
        operator_session(config, None) as anonymous,
        anonymous.get(client.base + "/console/search") as reply,
    ):
        assert reply.status == 401
    creds = operator(config, "BOB")  # and an operator cannot use the agency API
    async with operator_session(config, creds) as session, session.get(client.base + "/v1/inbox") as reply:
        assert reply.status == 403 and (await reply.json())["error"] == "forbidden"


# --- in Chromium --------------------------------------------------------------------------------


def _tools() -> dict[str, str]:
    found = {name: shutil.which(name) or "" for name in TOOLS}
    missing = sorted({TOOLS[name] for name, path in found.items() if not path})
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        reason = f"the headless Chromium test needs {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(reason + ": scripts/test installs them in CI")  # in CI it must run, never skip
        print(f"\nSKIPPED: {reason} (apt-get install chromium chromium-driver libnss3-tools)")
        pytest.skip(reason)
    return found


@dataclass
class Chromium:
    tools: dict[str, str]
    home: Path  # Chromium's own HOME: its NSS database and profile

    def __post_init__(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = self.tools["chromium"]
        for flag in (*FLAGS, f"--user-data-dir={self.home / 'profile'}"):
            options.add_argument(flag)
        service = Service(self.tools["chromedriver"], env={**os.environ, "HOME": str(self.home)})
        self.driver = webdriver.Chrome(options=options, service=service)
        self.driver.set_page_load_timeout(30)

    @classmethod
    def with_certificate(
        cls,
        tools: dict[str, str],
        home: Path,
        trust_root: Path,
        origin: str,
        client: tuple[Path, Path] | None,
    ) -> Chromium:
        db = home / ".pki" / "nssdb"
        db.mkdir(parents=True)
        nss = f"sql:{db}"
        subprocess.run([tools["certutil"], "-N", "-d", nss, "--empty-password"], check=True)
        trust = [tools["certutil"], "-A", "-d", nss, "-n", "dev-root", "-t", "C,,", "-i", str(trust_root)]
        subprocess.run(trust, check=True)
        profile = home / "profile" / "Default"
        profile.mkdir(parents=True)
        if client is not None:
            crt, key = client
            chain = x509.load_pem_x509_certificates(crt.read_bytes())
            p12 = home / "client.p12"
            p12.write_bytes(
                pkcs12.serialize_key_and_certificates(
                    b"client", load_pem_private_key(key.read_bytes(), None), chain[0], chain[1:],  # type: ignore[arg-type]
                    BestAvailableEncryption(b"test"),
                )
            )  # fmt: skip
            subprocess.run([tools["pk12util"], "-i", str(p12), "-d", nss, "-W", "test"], check=True,
                           capture_output=True)  # fmt: skip
            issuer = chain[0].issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
            select = {f"{origin},*": {"setting": {"filters": [{"ISSUER": {"CN": issuer}}]}}}
            prefs = {"profile": {"content_settings": {"exceptions": {"auto_select_certificate": select}}}}
            (profile / "Preferences").write_text(json.dumps(prefs))
        return cls(tools, home)

    def quit(self) -> None:
        self.driver.quit()


async def test_operator_console_in_headless_chromium(
    node: Node, config: Config, agency, tmp_path: Path
) -> None:
    tools = _tools()
    doc_id = await sent_and_delivered(node, config, agency)
    record = await node.store.document(doc_id)
    assert record is not None and record.document_id is not None
    document_id = record.document_id
    creds = operator(config)
    origin = f"https://localhost:{node.port}"
    root = config.certs / "root-ca.crt"

    def operator_visits() -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        browser = Chromium.with_certificate(
            tools, tmp_path / "operator", root, origin, (creds.certificate, creds.key)
        )
        try:
            d = browser.driver
            d.get(origin + "/console")
            assert d.title.startswith("Overview"), d.page_source[:500]
            assert d.find_element(By.ID, "accepted-hour").text == "1"
            assert "OPERATOR.ALICE" in d.page_source
            d.save_screenshot(str(tmp_path / "overview.png"))

            d.find_element(By.LINK_TEXT, "Search").click()
            d.find_element(By.ID, "q").send_keys(document_id)
            d.find_element(By.ID, "search-button").click()
            WebDriverWait(d, 10).until(ec.presence_of_element_located((By.ID, "results")))
            d.find_element(By.LINK_TEXT, doc_id).click()

            WebDriverWait(d, 10).until(ec.presence_of_element_located((By.ID, "timeline")))
            timeline = d.find_element(By.ID, "timeline").text
            for step in ("accepted", "sealed", "bridged", "seal_verified", "delivered"):
                assert step in timeline, timeline
            assert "government → party" in timeline
            assert "03 Đã tiếp nhận" in d.find_element(By.ID, "recipients").text  # the missing receipt
            d.save_screenshot(str(tmp_path / "timeline.png"))
        finally:
            browser.quit()

    def agency_visits() -> None:
        crt, key = agency_paths(config.certs, A01, Role.TLS)
        browser = Chromium.with_certificate(tools, tmp_path / "agency", root, origin, (crt, key))
        try:
            browser.driver.get(origin + "/console")
            text = browser.driver.find_element("id", "refused").text
            assert f"{A01} is not an operator" in text
        finally:
            browser.quit()

    def stranger_visits() -> None:
        browser = Chromium.with_certificate(tools, tmp_path / "stranger", root, origin, None)
        try:
            browser.driver.get(origin + "/console")
            assert "no client certificate" in browser.driver.find_element("id", "refused").text
        finally:
            browser.quit()

    # In threads: the node under test serves on this event loop meanwhile.
    await asyncio.to_thread(operator_visits)
    await asyncio.to_thread(agency_visits)
    await asyncio.to_thread(stranger_visits)
    screenshots = os.environ.get("CONSOLE_SCREENSHOTS")
    if screenshots:  # for a person to look at
        for name in ("overview.png", "timeline.png"):
            shutil.copy(tmp_path / name, Path(screenshots) / name)


async def test_searches_page_through_everything_once(node: Node, config: Config, agency) -> None:
    sent = []
    for n in range(5):
        status, body = await agency(G22).send(make_package(config, G22, [A01], subject=f"Trang {n}"))
        assert status == 202
        sent.append(body["id"])
    await settle(node)
    now = datetime.now(UTC)
    for search in (
        Search(since=now - timedelta(hours=1), limit=2),  # the acceptance-time index
        Search(agency=G22, since=now - timedelta(hours=1), limit=2),  # sent: (sender, id)
        Search(agency=A01, limit=2),  # received: (recipient, document)
    ):
        seen: list[str] = []
        while True:
            page = await node.oversight.search_documents(replace(search, before=seen[-1] if seen else None))
            seen += [s.document.id for s in page]
            if len(page) < search.limit:
                break
        assert seen == sorted(sent, reverse=True), search
    assert await node.oversight.search_documents(Search(since=now + timedelta(hours=1))) == []
