"""Shared fixtures: a real home (dev PKI generated at test time), a real node on a loopback TLS port,
and agency clients that present real client certificates."""

from __future__ import annotations

import asyncio
import compileall
import os
import shutil
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import gateway
from gateway.agency_side.packages import sign_package
from gateway.crypto.pki import Role
from gateway.domain.edxml import NewEdoc, Organ, build_edoc, envelope_rooted
from gateway.domain.vocabulary import DeliveryState, Priority
from gateway.infra.files.keys import file_trust
from gateway.infra.files.pki_dir import agency_paths
from gateway.infra.files.registry_csv import load_registry
from gateway.pki.trust import RegistryTrust
from gateway.runtime.config import Config, load_config
from gateway.runtime.node import Node, init_home
from tests.api_contract import contract_session
from tests.processes import hold_closed_port

G22 = "000.00.00.G22"  # Văn phòng Chính phủ (government)
H41 = "000.00.00.H41"  # UBND tỉnh Nghệ An (government)
A01 = "000.00.00.A01"  # Văn phòng Trung ương Đảng (party)
I01 = "000.00.00.I01"  # Ủy ban Trung ương MTTQ Việt Nam (front)
G12 = "000.00.00.G12"  # Bộ Tài chính (government)
G16 = "000.00.00.G16"  # retired, successor G12
COMMUNE = "H41.12.05"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile gateway/ to bytecode once, before the tests start their `gateway` processes: where
    PYTHONDONTWRITEBYTECODE is set (as on this project's machines) no process writes it, so each
    of the hundreds of commands the tests run compiled the whole package again (0.3 s of CPU each).
    The import system checks each file's mtime and size, so a process never runs stale bytecode."""
    compileall.compile_dir(gateway.__path__[0], quiet=1)


@pytest.fixture(scope="session")
def unreachable_port() -> Iterator[int]:
    """A loopback port no one listens on during the session (see ``hold_closed_port``)."""
    port, held = hold_closed_port()
    try:
        yield port
    finally:
        for s in held:
            s.close()


@pytest.fixture(scope="session")
def template_home(tmp_path_factory: pytest.TempPathFactory, unreachable_port: int) -> Path:
    """One dev PKI per test session (key generation is the slow part); each test copies it."""
    home = tmp_path_factory.mktemp("template-home")
    init_home(home, now=datetime.now(UTC))
    set_setting(home, "carriers", "0")  # in-process tests carry in a thread; test_restart uses processes
    # Never the default 8443: a test must not depend on what else runs here (README's server does).
    # A test that talks to a server sets the port it started, or passes --port / --config.
    set_setting(home, "port", str(unreachable_port))
    return home


def set_setting(home: Path, key: str, value: str) -> None:
    """Change one line of a home's gateway.toml (as an operator would)."""
    path = home / "gateway.toml"
    lines = [
        f"{key} = {value}" if line.split("=")[0].strip() == key else line
        for line in path.read_text().splitlines()
    ]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def home(template_home: Path, tmp_path: Path) -> Path:
    target = tmp_path / "home"
    shutil.copytree(template_home, target)  # copy2 keeps the 0600 modes of the keys
    return target


@pytest.fixture
def config(home: Path) -> Config:
    return load_config(home)


@pytest.fixture
async def node(config: Config) -> AsyncIterator[Node]:
    n = Node(config)
    await n.start(port=0)
    try:
        yield n
    finally:
        await n.stop()


def make_package(
    config: Config,
    sender: str,
    recipients: list[str],
    *,
    subject: str = "Về việc triển khai chính quyền địa phương hai cấp",
    document_id: str | None = None,
    content: str = "Nội dung văn bản hành chính",
    priority: Priority = Priority.THUONG,
    now: datetime | None = None,
    root: str = "edXML",
) -> bytes:
    """A signed edoc package; ``root="edXMLEnvelope"`` gives the same package rooted at its envelope
    (attachments inside edXMLBody) instead of the SDKs' ``edXML`` shape."""
    doc = NewEdoc(
        sender=Organ(sender),
        recipients=[Organ(r) for r in recipients],
        document_id=document_id or f"{sender},2026/11/22,{abs(hash((sender, subject, content))) % 10**6}/GW",
        subject=subject,
        content=content,
        priority=priority,
    )
    built = build_edoc(doc, now=now or datetime.now(UTC))
    return sign_package(config.certs, sender, envelope_rooted(built) if root == "edXMLEnvelope" else built)


@dataclass
class AgencyClient:
    """An agency's document system talking to the node over mutual TLS."""

    code: str
    session: aiohttp.ClientSession
    base: str

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, self.base + path, data=body) as resp:
            raw = await resp.read()
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, raw

    async def send(self, package: bytes) -> tuple[int, Any]:
        return await self.call("POST", "/v1/edocs", package)


def client_context(config: Config, code: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(config.certs / "trust.pem"))
    if code is not None:
        crt, key = agency_paths(config.certs, code, Role.TLS)
        ctx.load_cert_chain(str(crt), str(key))
    return ctx


@pytest.fixture
async def agency(node: Node, config: Config) -> AsyncIterator[Callable[[str | None], AgencyClient]]:
    sessions: list[aiohttp.ClientSession] = []

    def make(code: str | None) -> AgencyClient:
        session = contract_session(client_context(config, code))  # answers checked against the contract
        sessions.append(session)
        return AgencyClient(code or "-", session, f"https://localhost:{node.port}")

    yield make
    for s in sessions:
        await s.close()


async def wait_delivered(node: Node, doc_id: str, *, timeout: float = 20.0) -> list[Any]:
    """Wait until no delivery of ``doc_id`` is pending any more; returns the deliveries."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        deliveries = await node.store.deliveries(doc_id)
        if deliveries and all(d.state is not DeliveryState.PENDING for d in deliveries):
            return deliveries
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{doc_id} still pending after {timeout}s: {deliveries}")
        await asyncio.sleep(0.02)


def trust_for(config: Config) -> RegistryTrust:
    return file_trust(config.certs, load_registry(config.registry))


PG = "postgresql+psycopg://postgres@127.0.0.1:5432/"


def postgres_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def pg_database() -> Iterator[str]:
    if not postgres_reachable():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not reachable at 127.0.0.1:5432, and CI must run the PostgreSQL tests")
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432 (CI starts it; start it locally to test)")
    import psycopg

    name = f"gw_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG.replace("+psycopg", "") + "postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG + name
    finally:
        with psycopg.connect(PG.replace("+psycopg", "") + "postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
