"""Push notifications end to end: a real node, a real agency endpoint on loopback (aiohttp over TLS,
asking for and verifying the gateway's client certificate), real keys from the test's dev PKI.

The endpoint's port is reserved by binding a socket that does not listen yet: connections to it
are refused (the endpoint is down) until the server starts on that very socket.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.agency_side.notifications import SIGNATURE_HEADER, verify_notification
from gateway.crypto.issuing import generate_key, make_leaf
from gateway.crypto.pki import KeyType, Role, cert_pem, key_pem
from gateway.domain.vocabulary import Network, Priority
from gateway.errors import SignatureInvalid
from gateway.infra.files.pki_dir import ca_paths, load_trust_anchors, read_certs, read_key
from gateway.runtime.config import load_config
from gateway.runtime.node import Node
from tests.conftest import A01, G22, AgencyClient, client_context, make_package, set_setting

SUBJECT = "Về việc phòng chống bão số 3 — tuyệt đối không lộ"


@dataclass
class Endpoint:
    """An agency's receiving system: records what arrives and who presented which certificate."""

    sock: socket.socket
    ctx: ssl.SSLContext
    received: list[tuple[bytes, str, str]] = field(default_factory=list)  # body, signature, client CN
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.sock.getsockname()[1]}/gateway/hook"

    async def handle(self, request: web.Request) -> web.Response:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        assert der, "the gateway presented no client certificate"
        cn = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        self.received.append((await request.read(), request.headers[SIGNATURE_HEADER], str(cn[0].value)))
        self.arrived.set()
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/gateway/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.SockSite(self.runner, self.sock, ssl_context=self.ctx).start()

    async def wait_for(self, count: int, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()


def endpoint_context(certs: Path, tmp_path: Path) -> ssl.SSLContext:
    """The agency's server certificate for 127.0.0.1, from its network's CA (as `certs issue`
    would give it); client certificates are required and checked against the gateway's trust.pem."""
    ca_crt, ca_key = ca_paths(certs, Network.PARTY)
    key = generate_key(KeyType.P256)

    cert = make_leaf(
        key.public_key(), code=A01, name="Văn phòng Trung ương Đảng", network=Network.PARTY, role=Role.TLS,
        issuer_cert=read_certs(ca_crt)[0], issuer_key=read_key(ca_key), now=datetime.now(UTC), days=30,
        ip_addresses=["127.0.0.1"],
    )  # fmt: skip
    (tmp_path / "hook.crt").write_bytes(cert_pem(cert) + cert_pem(read_certs(ca_crt)[0]))
    (tmp_path / "hook.key").write_bytes(key_pem(key))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(tmp_path / "hook.crt"), str(tmp_path / "hook.key"))
    ctx.load_verify_locations(cafile=str(certs / "trust.pem"))
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


@pytest.fixture
async def endpoint(home: Path, tmp_path: Path) -> AsyncIterator[Endpoint]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # reserved, not listening: the endpoint is down until start()
    made = Endpoint(sock, endpoint_context(home / "certs_dev", tmp_path))
    try:
        yield made
    finally:
        if made.runner is not None:
            await made.runner.cleanup()
        sock.close()


@pytest.fixture
def push_home(home: Path) -> Path:
    set_setting(home, "notify_max_backoff", "0.3")  # tests wait fractions of a second, not minutes
    return home


@pytest.fixture
async def clients() -> AsyncIterator[Callable[[Node, str], AgencyClient]]:
    import aiohttp

    sessions: list[aiohttp.ClientSession] = []

    def make(node: Node, code: str) -> AgencyClient:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context(node.config, code)))
        sessions.append(session)
        return AgencyClient(code, session, f"https://localhost:{node.port}")

    yield make
    for s in sessions:
        await s.close()


@pytest.fixture
async def node(push_home: Path) -> AsyncIterator[Node]:
    n = Node(load_config(push_home))
    await n.start(port=0)
    try:
        yield n
    finally:
        await n.stop()


async def register(client: AgencyClient, url: str) -> None:
    status, body = await client.call("PUT", "/v1/notifications/endpoint", json.dumps({"url": url}))
    assert status == 200 and body["url"] == url and body["agency"] == client.code, body


async def send(node: Node, client: AgencyClient, priority: Priority = Priority.THUONG, tag: str = "") -> str:
    package = make_package(node.config, G22, [A01], subject=SUBJECT + tag, priority=priority)
    status, body = await client.send(package)
    assert status == 202, body
    return str(body["id"])


async def kinds_in_trace(node: Node, doc_id: str) -> list[str]:
    return [e.kind for e in await node.store.events(doc_id)]


async def wait_for_event(node: Node, doc_id: str, kind: str, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while kind not in await kinds_in_trace(node, doc_id):
            await asyncio.sleep(0.02)


def independently_verified(body: bytes, token: str) -> dict[str, Any]:
    """Checked with PyJWT (RFC 7797 detached payload) and the certificate from the header's x5c:
    what an agency's system would do with any JOSE library."""
    header = jwt.get_unverified_header(token)
    leaf = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    public = leaf.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    decoded = jwt.api_jws.decode_complete(
        token, key=public, algorithms=[header["alg"]], detached_payload=body
    )
    cn = leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn == "ADAPTER.PARTY" and decoded["payload"] == body
    return dict(json.loads(decoded["payload"]))


async def test_a_delivered_document_is_notified_signed_over_mutual_tls(node, clients, endpoint) -> None:
    await endpoint.start()
    a01, g22 = clients(node, A01), clients(node, G22)
    await register(a01, endpoint.url)
    doc_id = await send(node, g22, Priority.HOA_TOC)
    await endpoint.wait_for(1)
    [(body, token, client_cn)] = endpoint.received
    assert client_cn == "ADAPTER.PARTY"  # the adapter of the recipient's network presented itself

    anchors = load_trust_anchors(node.config.certs)
    notification = verify_notification(body, token, anchors, agency=A01)
    assert notification == independently_verified(body, token)
    assert set(notification) == {"id", "kind", "priority", "sender", "recipient", "at", "status", "about"}
    assert (notification["id"], notification["kind"], notification["priority"]) == (doc_id, "document", 3)
    assert (notification["sender"], notification["recipient"]) == (G22, A01)
    assert SUBJECT.encode() not in body and "bão".encode() not in body  # metadata only, never content
    with pytest.raises(SignatureInvalid):  # one byte changed in transit: refused
        verify_notification(body.replace(b'"priority":3', b'"priority":0'), token, anchors, agency=A01)
    with pytest.raises(SignatureInvalid):  # meant for someone else
        verify_notification(body, token, anchors, agency=G22)

    await wait_for_event(node, doc_id, "notified")
    [notified] = [e for e in await node.store.events(doc_id) if e.kind == "notified"]
    assert (notified.recipient, notified.detail["status"], notified.detail["attempt"]) == (A01, 204, 1)
    assert await node.store.queued_notifications() == 0
    status, _ = await a01.call("GET", f"/v1/edocs/{doc_id}")  # pull is still how it is fetched
    assert status == 200


async def test_an_endpoint_that_was_down_gets_the_notifications_most_urgent_first(
    node, clients, endpoint
) -> None:
    a01, g22 = clients(node, A01), clients(node, G22)
    await register(a01, endpoint.url)  # registered while nothing listens there
    sent = []
    for priority in (Priority.THUONG, Priority.KHAN, Priority.HOA_TOC_HEN_GIO, Priority.THUONG_KHAN):
        sent.append((priority, await send(node, g22, priority, tag=str(int(priority)))))
    for _, doc_id in sent:
        await wait_for_event(node, doc_id, "delivered")
    async with asyncio.timeout(20):  # the most urgent one queued when the endpoint was tried
        while not (
            failed := [e for _, d in sent for e in await node.store.events(d) if e.kind == "notify_failed"]
        ):
            await asyncio.sleep(0.02)
    assert "unreachable" in failed[0].detail["reason"] and failed[0].detail["next_attempt_at"]
    assert endpoint.received == [] and await node.store.queued_notifications() == 4

    await endpoint.start()  # the endpoint comes back
    await endpoint.wait_for(4)
    order = [json.loads(body)["priority"] for body, _, _ in endpoint.received]
    assert order == [4, 2, 1, 0]
    for _, doc_id in sent:
        await wait_for_event(node, doc_id, "notified")
    assert await node.store.queued_notifications() == 0


async def test_a_restart_loses_no_queued_notification(push_home: Path, clients, endpoint) -> None:
    first = Node(load_config(push_home))
    await first.start(port=0)
    try:
        await register(clients(first, A01), endpoint.url)
        doc_id = await send(first, clients(first, G22))
        await wait_for_event(first, doc_id, "notify_failed")
    finally:
        await first.stop()
    await endpoint.start()
    second = Node(load_config(push_home))
    await second.start(port=0)
    try:
        await endpoint.wait_for(1)
        assert json.loads(endpoint.received[0][0])["id"] == doc_id
        await wait_for_event(second, doc_id, "notified")
    finally:
        await second.stop()


async def test_an_agency_registers_reads_and_removes_its_endpoint(node, clients) -> None:
    a01 = clients(node, A01)
    path = "/v1/notifications/endpoint"
    status, body = await a01.call("GET", path)
    assert (status, body["error"]) == (404, "not_found")
    for wrong in ("http://127.0.0.1:9/hook", "https://user:pw@host/hook", "ftp://host/x", "https://", 42):
        status, body = await a01.call("PUT", path, json.dumps({"url": wrong}))
        assert (status, body["error"]) == (400, "invalid_endpoint"), wrong
    status, body = await a01.call("PUT", path, b"not json")
    assert (status, body["error"]) == (400, "bad_request")
    await register(a01, "https://docs.a01.example/hook")
    status, body = await a01.call("GET", path)
    assert status == 200 and body["url"] == "https://docs.a01.example/hook"
    status, _ = await clients(node, G22).call("GET", path)
    assert status == 404  # each agency sees only its own
    status, _ = await a01.call("DELETE", path)
    assert status == 204
    status, body = await a01.call("DELETE", path)
    assert (status, body["error"]) == (404, "not_found")
    registered = await node.store.events_of_kind("endpoint_registered")
    assert [(e.recipient, e.detail) for e in registered] == [(A01, {"endpoint": "docs.a01.example:443"})]
