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
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, load_pem_private_key, pkcs12
from cryptography.x509.oid import NameOID

from gateway.agency_side.packages import sign_package
from gateway.crypto.pki import Role
from gateway.domain.edxml import NewEdoc, Organ, build_edoc
from gateway.domain.vocabulary import Priority
from gateway.exchange.deadlines import VIETNAM
from gateway.infra.files.pki_dir import agency_paths
from gateway.operators.readmodel import Search
from gateway.runtime.config import Config
from gateway.runtime.node import Node
from tests.conftest import A01, G22, H41, I01, make_package, wait_delivered
from tests.oversight_helpers import operator, operator_session, settle

TOOLS = {
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
    "certutil": "libnss3-tools",
    "pk12util": "libnss3-tools",
}
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
CHARTS = ("chart-target", "chart-priority", "chart-latency", "chart-queue")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,1000",
)  # fmt: skip


async def more_traffic(node: Node, config: Config, agency) -> None:
    """Two more documents: a Hỏa tốc one to two networks due in 30 minutes (at risk until fetched
    and answered), and a Khẩn one within the government network."""
    now = datetime.now(UTC).replace(microsecond=0)
    due = (now + timedelta(minutes=30)).astimezone(VIETNAM).strftime("%Y/%m/%d %H:%M:%S")
    urgent = NewEdoc(
        sender=Organ(G22), recipients=[Organ(A01), Organ(I01)], document_id=f"{G22},2026/12/01,HT/CONSOLE",
        subject="Công điện hỏa tốc", priority=Priority.HOA_TOC, due=due,
    )  # fmt: skip
    for sender, package in (
        (G22, sign_package(config.certs, G22, build_edoc(urgent, now=now))),
        (H41, make_package(config, H41, [G22], subject="Báo cáo khẩn", priority=Priority.KHAN)),
    ):
        status, body = await agency(sender).send(package)
        assert status == 202, body
        await wait_delivered(node, body["id"])
    await settle(node)


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
            assert reply.status == 200 and "Documents per minute by target network" in page
            assert reply.headers["Content-Security-Policy"] == CSP  # the charts need nothing looser
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
    await more_traffic(node, config, agency)
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
            assert d.find_element(By.ID, "accepted-hour").text == "3"
            assert "OPERATOR.ALICE" in d.page_source
            d.save_screenshot(str(tmp_path / "overview.png"))
            charts_render(d)
            d.set_window_size(1400, 2400)  # the whole overview, for a person to look at
            d.save_screenshot(str(tmp_path / "overview-full.png"))
            d.set_window_size(1400, 1000)

            d.find_element(By.LINK_TEXT, "Search").click()
            d.find_element(By.ID, "q").send_keys(document_id)
            d.find_element(By.ID, "search-button").click()
            # The empty search page has its (empty) results too: wait for the answer to the query.
            WebDriverWait(d, 10).until(ec.url_contains("q="))
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

    def charts_render(d: Any) -> None:
        """Laid out by the browser under the page's CSP: each chart has a size, its marks too."""
        from selenium.webdriver.common.by import By

        viewport = d.execute_script("return [window.innerWidth, window.innerHeight]")
        assert viewport[0] >= 1300 and viewport[1] >= 850, viewport  # the 1400x1000 window
        attention = d.find_element(By.ID, "attention")
        assert attention.rect["y"] + attention.rect["height"] <= viewport[1], attention.rect  # above the fold
        assert d.find_element(By.ID, "at-risk").text == "2"  # the Hỏa tốc one's two recipients
        for chart in CHARTS:
            box = d.find_element(By.ID, chart).rect
            assert box["width"] >= 500 and box["height"] >= 150, (chart, box)
            assert attention.rect["y"] < box["y"]
        bars = d.find_elements(By.CSS_SELECTOR, "#chart-target rect.bar")
        assert {b.get_attribute("data-series") for b in bars} == {"government", "party", "front"}
        assert all(b.rect["height"] > 0 and b.rect["width"] > 0 for b in bars)
        priorities = d.find_elements(By.CSS_SELECTOR, "#chart-priority rect.bar")
        assert {b.get_attribute("data-series") for b in priorities} == {"0", "1", "3"}
        dots = d.find_elements(By.CSS_SELECTOR, "#chart-latency circle.dot")
        assert dots and all(c.rect["width"] > 0 for c in dots)
        assert d.find_elements(By.CSS_SELECTOR, "#chart-queue path.line")
        recent = d.find_element(By.ID, "recent").text
        assert (
            "Công điện hỏa tốc" not in recent
            and "3 Hỏa tốc" in recent
            and "government → front, party" in recent
        )
        for th in d.find_elements(By.CSS_SELECTOR, "#totals th.n"):
            assert th.value_of_css_property("text-align") == "right"

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
        for name in ("overview.png", "overview-full.png", "timeline.png"):
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
