"""Slow clients are cut off (issue 12, item 6): a real node on a loopback TLS port, its timeouts and
connection caps set low, and raw TLS clients that stall in the handshake, in the headers and in
the body, or that hold connections open. The assertions are on what the server did (closed the
connection, answered with a code) within the configured timeouts plus generous slack, never on
how fast it was."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.runtime.config import Config, load_config
from gateway.runtime.node import Node
from tests.conftest import A01, G12, G22, H41, client_context, set_setting

TIMEOUTS = {"tls_handshake_timeout": 2.0, "header_timeout": 2.0, "body_timeout": 3.0}
SLACK = 6.0  # seconds a close may come after its deadline on a busy shared machine
CAPS = {"max_connections": 60, "max_connections_per_client": 25}


@pytest.fixture
def config(home: Path, request: pytest.FixtureRequest) -> Config:
    """The home's config with the settings a test names (``indirect`` parametrisation)."""
    for key, value in getattr(request, "param", {}).items():
        set_setting(home, key, str(value))
    return load_config(home)


@dataclass
class Raw:
    """One raw TLS connection: what was sent is written by hand, to stall where a test wants."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    opened_at: float  # loop time when the connection (and the TLS handshake, if any) was made

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until_closed(self, timeout: float) -> tuple[float, bytes]:
        """Everything the server sends until it closes, and when it closed, in seconds after the
        connection was made (TimeoutError if still open ``timeout`` s after that)."""
        loop = asyncio.get_running_loop()
        received = b""
        async with asyncio.timeout_at(self.opened_at + timeout):
            while True:
                try:
                    chunk = await self.reader.read(65536)
                except (ConnectionResetError, ssl.SSLError):
                    break
                if not chunk:
                    break
                received += chunk
        return loop.time() - self.opened_at, received

    def close(self) -> None:
        self.writer.close()


async def connect(port: int, ctx: ssl.SSLContext | None) -> Raw:
    """A TLS connection with ``ctx`` (or plain TCP, which never starts a handshake)."""
    host = "localhost" if ctx is not None else None
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=host)
    return Raw(reader, writer, asyncio.get_running_loop().time())


def answer(raw: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    """Status, headers (lower-case names) and JSON body of one HTTP answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


@pytest.fixture
async def raw_clients() -> AsyncIterator[list[Raw]]:
    opened: list[Raw] = []
    yield opened
    for raw in opened:
        raw.close()


async def wait_open(node: Node, count: int) -> None:
    """Until the node counts ``count`` open connections (a handshake ends on the server last)."""
    for _ in range(400):
        if node.metrics.edge.open_connections == count:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"{node.metrics.edge.open_connections} open connections, expected {count}")


@pytest.mark.parametrize("config", [{**TIMEOUTS, **CAPS}], indirect=True)
async def test_stalled_connections_are_closed_while_a_normal_request_is_answered(
    node: Node, config: Config, agency, raw_clients: list[Raw]
) -> None:
    port, g22, h41 = node.port, client_context(config, G22), client_context(config, H41)
    half_headers = b"GET /v1/inbox HTTP/1.1\r\nHost: localhost\r\nX-Waiting: for"
    half_body = b"POST /v1/edocs HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n<edXMLEnvelope"
    stalls: dict[str, list[Raw]] = {"handshake": [], "headers": [], "body": []}
    for _ in range(10):  # plain TCP: the TLS handshake never starts
        stalls["handshake"].append(await connect(port, None))
    for _ in range(20):
        stalls["headers"].append(await connect(port, g22))
        await stalls["headers"][-1].send(half_headers)
    for _ in range(20):
        stalls["body"].append(await connect(port, h41))
        await stalls["body"][-1].send(half_body)
    # And one of each that keeps sending a byte every half second: bytes do not reset the deadline.
    trickle_headers, trickle_body = await connect(port, g22), await connect(port, h41)
    await trickle_headers.send(b"GET /v1/inbox HTTP/1.1\r\nHost: localhost\r\n")
    await trickle_body.send(half_body)
    raw_clients += [*stalls["handshake"], *stalls["headers"], *stalls["body"], trickle_headers, trickle_body]

    deadlines = {
        "handshake": TIMEOUTS["tls_handshake_timeout"],
        "headers": TIMEOUTS["header_timeout"],
        "body": TIMEOUTS["body_timeout"],
    }
    closing = {
        stage: [asyncio.create_task(c.until_closed(deadlines[stage] + SLACK)) for c in conns]
        for stage, conns in stalls.items()
    }

    async def trickle(raw: Raw, byte: bytes, stage: str) -> tuple[int, float, bytes]:
        closed = asyncio.create_task(raw.until_closed(deadlines[stage] + SLACK))
        sent = 0
        while not closed.done():
            try:
                await raw.send(byte)
                sent += 1
            except (ConnectionError, ssl.SSLError):
                pass  # the server has closed it; the reader says when
            await asyncio.wait([closed], timeout=0.5)
        return sent, *closed.result()

    trickling = asyncio.gather(trickle(trickle_headers, b"X", "headers"), trickle(trickle_body, b"x", "body"))
    # Meanwhile another agency is served as usual.
    status, body = await agency(A01).call("GET", "/v1/inbox")
    assert status == 200 and body["agency"] == A01

    for stage, tasks in closing.items():
        for took, received in await asyncio.gather(*tasks):
            # Closed by its deadline (not earlier, for another reason; not much later).
            assert deadlines[stage] - 0.5 <= took <= deadlines[stage] + SLACK
            if stage == "body":  # answered before it was closed
                status, headers, error = answer(received)
                assert (status, error["error"]) == (408, "request_timeout")
                assert headers["connection"] == "close"
            else:
                assert received == b""
    (sent_h, took_h, _), (sent_b, took_b, received_b) = await trickling
    assert deadlines["headers"] - 0.5 <= took_h <= deadlines["headers"] + SLACK
    assert deadlines["body"] - 0.5 <= took_b <= deadlines["body"] + SLACK
    assert answer(received_b)[2]["error"] == "request_timeout"
    assert min(sent_h, sent_b) >= 3  # they kept sending: bytes arriving do not move the deadline
    assert node.metrics.edge.timeouts["body"] == 21
    status, _ = await agency(A01).call("GET", "/v1/inbox")  # and the node is healthy afterwards
    assert status == 200


@pytest.mark.parametrize("config", [{**CAPS, "header_timeout": 60.0}], indirect=True)
async def test_connection_caps_per_client_certificate_and_in_total(
    node: Node, config: Config, raw_clients: list[Raw]
) -> None:
    port = node.port
    hello = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    g22, h41, g12, a01 = (client_context(config, code) for code in (G22, H41, G12, A01))
    for _ in range(CAPS["max_connections_per_client"]):
        raw_clients.append(await connect(port, g22))
    await wait_open(node, 25)

    over = await connect(port, g22)  # one more with the same certificate
    await over.send(hello)
    _, received = await over.until_closed(SLACK)
    status, headers, error = answer(received)
    assert (status, error["error"]) == (429, "too_many_connections")
    assert headers["retry-after"] == "1" and headers["connection"] == "close"

    other = await connect(port, h41)  # another agency is not held back by G22's connections
    await other.send(hello)
    _, received = await other.until_closed(SLACK)
    assert answer(received)[0] == 200
    await wait_open(node, 25)  # its slot is free again once the server has seen it closed

    for ctx, count in ((h41, 25), (g12, 10)):  # 60 in all: the total cap
        for _ in range(count):
            raw_clients.append(await connect(port, ctx))
    await wait_open(node, 60)
    full = await connect(port, a01)
    await full.send(hello)
    _, received = await full.until_closed(SLACK)
    status, headers, error = answer(received)
    assert (status, error["error"]) == (503, "server_busy")

    raw_clients.pop(0).close()  # a slot frees when a connection closes
    await wait_open(node, 59)
    again = await connect(port, a01)
    await again.send(hello)
    _, received = await again.until_closed(SLACK)
    assert answer(received)[0] == 200
    assert node.metrics.edge.refused == {"per_client": 1, "total": 1}
