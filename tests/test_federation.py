"""Three nodes, one per network, as real processes on loopback, bridged over mutual TLS.

The processes are started with exactly the command docker-compose.yml runs:
``gateway --home HOME --config node-NETWORK.toml serve``.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from gateway.agency_side.packages import decryption_keys, open_delivery
from gateway.domain.edxml import BusinessDocType
from gateway.domain.vocabulary import Classification, Network, StatusCode
from gateway.runtime.config import Config
from tests.api_contract import contract_session
from tests.conftest import A01, G22, H41, I01, client_context, make_package, trust_for
from tests.processes import free_port
from tests.test_large_packages import large_package
from tests.test_recall import recall_column, status
from tests.test_update_replace import changing_package

pytestmark = pytest.mark.slow
HOME_OF = {Network.GOVERNMENT: G22, Network.PARTY: A01, Network.FRONT: I01}


def node_config(network: Network, ports: dict[Network, int], **extra: str) -> str:
    lines = [
        "[gateway]",
        f'node = "{network.value}"',
        f'network = "{network.value}"',
        f"port = {ports[network]}",
        f'database = "sqlite:///{network.value}.db"',
        'registry = "registry.csv"',
        'certs = "certs_dev"',
        "carriers = 1",
        "submit_rate = 0",
        *(f"{k} = {v}" for k, v in extra.items()),
        "[peers]",
        *(f'{n.value} = "https://localhost:{p}"' for n, p in ports.items() if n is not network),
    ]
    return "\n".join(lines) + "\n"


@dataclass
class Federation:
    home: Path
    config: Config
    ports: dict[Network, int]
    procs: dict[Network, subprocess.Popen[bytes]] = field(default_factory=dict)
    sessions: dict[str, aiohttp.ClientSession] = field(default_factory=dict)

    def write_config(self, network: Network, **extra: str) -> None:
        (self.home / f"node-{network.value}.toml").write_text(node_config(network, self.ports, **extra))

    def start(self, network: Network) -> None:
        with (self.home / f"{network.value}.log").open("ab") as log:
            self.procs[network] = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "--home", str(self.home),
                 "--config", str(self.home / f"node-{network.value}.toml"), "serve"],
                stdout=log, stderr=log,
            )  # fmt: skip

    def kill(self, network: Network) -> None:
        proc = self.procs.pop(network)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            proc.wait(timeout=30)
        self.procs.clear()

    def url(self, network: Network) -> str:
        return f"https://localhost:{self.ports[network]}"

    def session(self, code: str) -> aiohttp.ClientSession:
        if code not in self.sessions:
            self.sessions[code] = contract_session(client_context(self.config, code))
        return self.sessions[code]

    async def call(self, code: str, network: Network, method: str, path: str, body: bytes | None = None):
        async with self.session(code).request(method, self.url(network) + path, data=body) as r:
            if r.content_type == "application/json":
                return r.status, await r.json()
            return r.status, await r.read()

    async def start_healthy(self, *networks: Network) -> None:
        """Start these nodes together, then wait until each answers."""
        for network in networks:
            self.start(network)
        for network in networks:
            await self.healthy(network)

    async def healthy(self, network: Network) -> None:
        for _ in range(300):
            proc = self.procs[network]
            if proc.poll() is not None:
                raise AssertionError((self.home / f"{network.value}.log").read_text())
            try:
                status, _ = await self.call(HOME_OF[network], network, "GET", "/healthz")
                if status == 200:
                    return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError(f"{network} node did not start")

    async def until_in_inbox(self, code: str, network: Network, doc_id: str, timeout: float = 30) -> None:
        for _ in range(int(timeout / 0.05)):
            status, inbox = await self.call(code, network, "GET", "/v1/inbox?all=1")
            if status == 200 and any(d["id"] == doc_id for d in inbox["documents"]):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{doc_id} never reached {code}")


@pytest.fixture
async def federation(home: Path, config: Config) -> AsyncIterator[Federation]:
    ports = {n: free_port() for n in Network}
    fed = Federation(home, config, ports)
    for network in Network:
        fed.write_config(network)
    try:
        yield fed
    finally:
        fed.stop_all()
        for s in fed.sessions.values():
            await s.close()


PAIRS = [(s, r) for s in Network for r in Network if s is not r]


async def test_every_pair_of_networks_with_receipts_back(federation: Federation) -> None:
    fed = federation
    await fed.start_healthy(*Network)
    sent = {}
    for source, target in PAIRS:
        sender, recipient = HOME_OF[source], HOME_OF[target]
        status, body = await fed.call(
            sender,
            source,
            "POST",
            "/v1/edocs",
            make_package(
                fed.config, sender, [recipient], document_id=f"{sender},2026/11/22,{target.value}/P"
            ),
        )
        assert status == 202, body
        sent[(source, target)] = body["id"]
    for (source, target), doc_id in sent.items():
        recipient = HOME_OF[target]
        await fed.until_in_inbox(recipient, target, doc_id)
        status, sealed = await fed.call(recipient, target, "GET", f"/v1/edocs/{doc_id}")
        assert status == 200
        opened = open_delivery(sealed, trust=trust_for(fed.config), network=target, at=datetime.now(UTC))
        assert opened.signer.code == HOME_OF[source]
        assert [(h.network, h.action) for h in opened.transfer.hops] == [
            (source, "sealed"),
            (target, "bridged"),
        ]
    # Each recipient's 01 crossed back to the sender's node.
    for (source, _target), doc_id in sent.items():
        for _ in range(200):
            _, receipts = await fed.call(HOME_OF[source], source, "GET", f"/v1/edocs/{doc_id}/receipts")
            rows = receipts["recipients"]
            if rows and rows[0]["receipts"]:
                break
            await asyncio.sleep(0.05)
        assert rows[0]["state"] == "forwarded"
        assert [(r["code"], r["signature_valid"]) for r in rows[0]["receipts"]] == [("01", True)]
        # The sender's node knows its own hops; the recipient's node knows the crossing.
        _, trace = await fed.call(HOME_OF[source], source, "GET", f"/v1/edocs/{doc_id}/trace")
        assert {"sealed", "forwarded"} <= {e["event"] for e in trace["events"]}


async def test_an_agency_uses_its_own_networks_node_and_peers_must_be_adapters(
    federation: Federation,
) -> None:
    fed = federation
    fed.start(Network.PARTY)
    await fed.healthy(Network.PARTY)
    status, body = await fed.call(
        G22, Network.PARTY, "POST", "/v1/edocs", make_package(fed.config, G22, [A01])
    )
    assert (status, body["error"]) == (403, "forbidden") and "government network" in body["message"]
    # An agency's TLS certificate cannot hand over transfers, however well formed the body.
    status, body = await fed.call(A01, Network.PARTY, "POST", "/v1/transfers", b"<x/>")
    assert (status, body["error"]) == (403, "forbidden") and "not the adapter of a peer network" in body[
        "message"
    ]


async def test_peer_killed_mid_burst_delivers_everything_exactly_once(federation: Federation) -> None:
    fed = federation
    await fed.start_healthy(Network.GOVERNMENT, Network.PARTY)
    packages = [
        make_package(fed.config, G22, [A01, H41], document_id=f"{G22},2026/11/22,{i}/FED") for i in range(120)
    ]
    party_db = fed.home / "party.db"
    ids: list[str] = []
    killed = False
    for i, package in enumerate(packages):
        status, body = await fed.call(G22, Network.GOVERNMENT, "POST", "/v1/edocs", package)
        assert status == 202, body
        ids.append(body["id"])
        if not killed and i > 20 and party_db.exists():
            with sqlite3.connect(party_db) as conn:
                arrived = conn.execute("select count(*) from deliveries").fetchone()[0]
            if arrived >= 5:
                fed.kill(Network.PARTY)
                killed = True
    assert killed, "the party node was never killed mid-burst"

    async def backing_off() -> bool:  # the government node keeps the rest and retries the dead peer
        with sqlite3.connect(fed.home / "government.db", timeout=10) as conn:
            return bool(conn.execute("select count(*) from events where kind = 'retry'").fetchone()[0])

    await _until(backing_off, "the government node never retried the killed party node")
    fed.start(Network.PARTY)
    await fed.healthy(Network.PARTY)
    for doc_id in ids:
        await fed.until_in_inbox(A01, Network.PARTY, doc_id, timeout=60)
    with sqlite3.connect(party_db) as conn:
        per_doc = Counter(
            r[0] for r in conn.execute("select document from deliveries where recipient = ?", (A01,))
        )
        delivered = Counter(
            r[0] for r in conn.execute("select document from events where kind = 'delivered'")
        )
    assert set(per_doc) == set(ids) and set(per_doc.values()) == {1}
    assert set(delivered.values()) == {1}, "a transfer was put in the inbox twice"
    with sqlite3.connect(fed.home / "government.db") as conn:
        retries = conn.execute("select count(*) from events where kind = 'retry'").fetchone()[0]
        states = Counter(r[0] for r in conn.execute("select state from deliveries"))
    assert retries > 0
    assert states == {"forwarded": 120, "delivered": 120}  # A01 via the party node, H41 locally


async def test_failed_after_give_up_then_redriven(federation: Federation) -> None:
    fed = federation
    fed.write_config(Network.GOVERNMENT, give_up_after="1.0")
    fed.start(Network.GOVERNMENT)
    await fed.healthy(Network.GOVERNMENT)
    status, body = await fed.call(
        G22, Network.GOVERNMENT, "POST", "/v1/edocs", make_package(fed.config, G22, [I01])
    )
    doc_id = body["id"]
    for _ in range(200):
        _, receipts = await fed.call(G22, Network.GOVERNMENT, "GET", f"/v1/edocs/{doc_id}/receipts")
        if receipts["recipients"][0]["state"] == "failed":
            break
        await asyncio.sleep(0.05)
    assert receipts["recipients"][0]["state"] == "failed"
    fed.start(Network.FRONT)
    await fed.healthy(Network.FRONT)
    env = {**os.environ}
    retry = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--home", str(fed.home),
         "--config", str(fed.home / "node-government.toml"), "deliveries", "retry", doc_id],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert retry.returncode == 0, retry.stderr
    await fed.until_in_inbox(I01, Network.FRONT, doc_id)
    again = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--home", str(fed.home),
         "--config", str(fed.home / "node-government.toml"), "deliveries", "retry", doc_id],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert again.returncode == 1 and "no failed delivery" in again.stderr


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    for _ in range(int(timeout / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(what)


async def test_a_recall_and_a_replacement_cross_to_the_recipients_node(federation: Federation) -> None:
    """Issue 13: a 13 and its answer, and a replacement (BussinessDocType 3), each carried between
    two nodes; the recipient's node links them to the original as a single node does."""
    fed = federation
    gov, party = Network.GOVERNMENT, Network.PARTY
    await fed.start_healthy(gov, party)
    document_id = f"{G22},2026/12/04,77/FED-TH"
    code, body = await fed.call(
        G22, gov, "POST", "/v1/edocs", make_package(fed.config, G22, [A01], document_id=document_id)
    )
    assert code == 202, body
    original = body["id"]
    await fed.until_in_inbox(A01, party, original)

    asked = status(fed.config, G22, A01, document_id, StatusCode.RECALL_REQUESTED)
    code, body = await fed.call(G22, gov, "POST", f"/v1/edocs/{original}/status", asked)
    assert code == 202, body

    async def recalled_on_party() -> bool:
        _, inbox = await fed.call(A01, party, "GET", "/v1/inbox?all=1")
        return any(d["status_code"] == "13" and d["response_for"] == original for d in inbox["documents"])

    await _until(recalled_on_party, "the 13 never reached the party node")
    agreed = status(fed.config, A01, G22, document_id, StatusCode.RECALL_AGREED)
    code, body = await fed.call(A01, party, "POST", f"/v1/edocs/{original}/status", agreed)
    assert code == 202, body

    async def agreed_on_government() -> bool:
        _, receipts = await fed.call(G22, gov, "GET", f"/v1/edocs/{original}/receipts")
        return recall_column(receipts) == {A01: "agreed"}

    await _until(agreed_on_government, "the 15 never reached the sender's node")
    _, inbox = await fed.call(A01, party, "GET", "/v1/inbox?all=1")
    assert {d["id"]: d["recalled"] for d in inbox["documents"] if d["kind"] == "edoc"}[original] is True

    replacement = changing_package(fed.config, G22, [A01], document_id, BusinessDocType.REPLACE)
    code, body = await fed.call(G22, gov, "POST", "/v1/edocs", replacement)
    assert code == 202, body
    new = body["id"]
    await fed.until_in_inbox(A01, party, new)
    _, inbox = await fed.call(A01, party, "GET", "/v1/inbox?all=1")
    seen = {d["id"]: d for d in inbox["documents"] if d["kind"] == "edoc"}
    assert seen[new]["replaces"] == original
    assert seen[original]["superseded_by"] == new


async def test_a_large_package_plain_and_toi_mat_crosses_between_nodes(federation: Federation) -> None:
    """Issue 13: 12 MB packages (over the spool threshold, several parts) handed from the
    government node to the party node as header and streamed parts, digest checked on arrival,
    then fetched and opened there; one attachment served by the party node from its span."""
    fed = federation
    gov, party = Network.GOVERNMENT, Network.PARTY
    await fed.start_healthy(gov, party)
    sent: dict[Classification, tuple[str, bytes]] = {}
    for number, level in enumerate((Classification.NONE, Classification.TOI_MAT), start=40):
        scan = os.urandom(9 * 1024 * 1024)
        package = large_package(fed.config, scan=scan, level=level, number=number)
        headers = {"X-Classification": level.slug} if level is not Classification.NONE else {}
        async with fed.session(G22).post(
            fed.url(gov) + "/v1/edocs", data=io.BytesIO(package), headers=headers
        ) as r:
            assert r.status == 202, await r.text()
            sent[level] = ((await r.json())["id"], scan)
    keys = decryption_keys(fed.config.certs, A01)
    for doc_id, scan in sent.values():
        await fed.until_in_inbox(A01, party, doc_id, timeout=60)
        status, delivery = await fed.call(A01, party, "GET", f"/v1/edocs/{doc_id}")
        assert status == 200
        opened = open_delivery(
            delivery, trust=trust_for(fed.config), network=party, at=datetime.now(UTC), decryption_keys=keys
        )
        assert opened.signer.code == G22 and opened.attachments[0].data == scan
    plain_id, plain_scan = sent[Classification.NONE]
    status, served = await fed.call(A01, party, "GET", f"/v1/edocs/{plain_id}/attachments/cid:1")
    assert status == 200 and served == plain_scan
    for network in (gov, party):  # the spool of each node (one folder per node name) is empty again
        spool = fed.home / "spool" / network.value
        assert spool.is_dir() and list(spool.iterdir()) == []
