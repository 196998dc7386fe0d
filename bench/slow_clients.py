"""Normal requests while a real `gateway serve` holds 500 stalled TLS connections (issue 12, item 6).

The stalled connections come from four agencies (000.00.00.G22, H41, I01, G12: 125 each, under the
default cap of 200 per client certificate); half of them sent half their request headers, half
sent their headers and the first bytes of a 100 KB body, and all then say nothing more. Meanwhile
000.00.00.A01 (another agency) sends ordinary requests one after another: GET /v1/inbox on one
kept-alive connection, GET /v1/inbox on a new TLS connection each time (handshake included), and
POST /v1/edocs of a signed 13 KB package. The same requests are measured first with nothing
stalled. Afterwards the benchmark waits for the server to close the stalled connections and says
when it did, against header_timeout and body_timeout (set here to 30 s so that the measurement
fits inside them; every other setting is `gateway init`'s default).

    .venv/bin/python bench/slow_clients.py [--stalls 500] [--requests 300] [--timeout 30]

A benchmark, not a test: it never fails on slowness. It talks to 127.0.0.1 only; the client runs
on the same CPUs as the server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.http.console import issue_operator
from gateway.runtime.config import load_config
from gateway.runtime.node import init_home
from tests.conftest import client_context, make_package, set_setting
from tests.processes import free_port, start_gateway, wait_healthy

STALLERS = ["000.00.00.G22", "000.00.00.H41", "000.00.00.I01", "000.00.00.G12"]
CLIENT = "000.00.00.A01"  # the agency whose ordinary requests are timed
HALF_HEADERS = b"GET /v1/inbox HTTP/1.1\r\nHost: localhost\r\nX-Waiting: for"
HALF_BODY = b"POST /v1/edocs HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n<edXMLEnvelope"


class Stall:
    """One connection that sent part of a request and waits; records when the server closed it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.opened = 0.0
        self.closed: float | None = None
        self.answer = b""
        self.writer: asyncio.StreamWriter | None = None
        self.watch: asyncio.Task[None] | None = None

    async def open(self, port: int, ctx: ssl.SSLContext) -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
        )
        self.opened, self.writer = time.perf_counter(), writer
        writer.write(HALF_HEADERS if self.kind == "headers" else HALF_BODY)
        await writer.drain()
        self.watch = asyncio.create_task(self._until_closed(reader))

    async def _until_closed(self, reader: asyncio.StreamReader) -> None:
        try:
            while chunk := await reader.read(65536):
                self.answer += chunk
        except (ConnectionError, ssl.SSLError):
            pass
        self.closed = time.perf_counter()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def timed(n: int, request: Callable[[int], Awaitable[int]], expect: int) -> list[float]:
    """``n`` requests one after another; their latencies in ms, sorted. A wrong status stops the run."""
    latencies = []
    for i in range(n):
        t = time.perf_counter()
        status = await request(i)
        latencies.append((time.perf_counter() - t) * 1000)
        if status != expect:
            raise SystemExit(f"unexpected HTTP {status} (expected {expect})")
    return sorted(latencies)


def summary(latencies: list[float]) -> str:
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return f"p50 {statistics.median(latencies):6.1f}  p99 {p99:6.1f}  max {latencies[-1]:6.1f} ms"


async def measure(base: str, ctx: ssl.SSLContext, packages: list[bytes], n: int) -> dict[str, list[float]]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=1)) as kept:

        async def inbox(_: int) -> int:
            async with kept.get(base + "/v1/inbox?limit=10") as r:
                await r.read()
                return r.status

        async def fresh(_: int) -> int:
            connector = aiohttp.TCPConnector(ssl=ctx, force_close=True)
            async with (
                aiohttp.ClientSession(connector=connector) as s,
                s.get(base + "/v1/inbox?limit=10") as r,
            ):
                await r.read()
                return r.status

        async def submit(i: int) -> int:
            async with kept.post(base + "/v1/edocs", data=packages.pop()) as r:
                await r.read()
                return r.status

        return {
            "GET /v1/inbox, kept-alive connection": await timed(n, inbox, 200),
            "GET /v1/inbox, new TLS connection": await timed(n // 3, fresh, 200),
            "POST /v1/edocs (13 KB), kept-alive": await timed(n // 3, submit, 202),
        }


async def open_connections(base: str, ctx: ssl.SSLContext) -> int:
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s,
        s.get(base + "/metrics") as r,
    ):
        families = {f.name: f for f in text_string_to_metric_families(await r.text())}
    return int(families["gateway_open_connections"].samples[0].value)


async def run(stalls: int, n: int, timeout: float) -> None:
    home = Path(tempfile.mkdtemp(prefix="gw-bench-slow-"))
    init_home(home, now=datetime.now(UTC))
    set_setting(home, "header_timeout", str(timeout))
    set_setting(home, "body_timeout", str(timeout))
    config = load_config(home)
    creds = issue_operator(config.certs, "BENCH", now=datetime.now(UTC))
    operator = ssl.create_default_context(cafile=str(config.certs / "trust.pem"))
    operator.load_cert_chain(str(creds.certificate), str(creds.key))
    packages = [
        make_package(config, CLIENT, ["000.00.00.G22"], subject=f"Công văn {i} khi có kết nối treo",
                     document_id=f"{CLIENT},2026/12/01,{i}/SLOW")
        for i in range(2 * (n // 3))
    ]  # fmt: skip
    port = free_port()
    base = f"https://localhost:{port}"
    proc = start_gateway(home, "serve", "--port", str(port), log=home / "serve.log")
    ctx = client_context(config, CLIENT)
    held: list[Stall] = []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
            await wait_healthy(s, base, proc, home / "serve.log", timeout=60)
        print(
            f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; server RSS {rss_mb(proc.pid):.0f} MB;"
            f" logs in {home}"
        )
        before = await measure(base, ctx, packages, n)
        rss_before = rss_mb(proc.pid)
        contexts = [client_context(config, code) for code in STALLERS]
        t0 = time.perf_counter()
        held = [Stall("headers" if i % 2 == 0 else "body") for i in range(stalls)]
        for start in range(0, stalls, 50):  # fifty handshakes at a time
            batch = held[start : start + 50]
            await asyncio.gather(
                *(st.open(port, contexts[(start + k) % len(contexts)]) for k, st in enumerate(batch))
            )
        opened_s = time.perf_counter() - t0
        server_open = await open_connections(base, operator)
        print(
            f"opened {stalls} stalled connections in {opened_s:.1f} s; the server counts {server_open} open "
            f"(the operator's own included), RSS {rss_mb(proc.pid):.0f} MB (before: {rss_before:.0f} MB)"
        )
        during = await measure(base, ctx, packages, n)
        measured_s = time.perf_counter() - t0
        still = sum(1 for st in held if st.closed is None)
        print(
            f"measured within {measured_s:.1f} s of the first stall; {still} of {stalls} stalls were still"
            " open then"
        )
        print(f"\n{'request':<40} {'nothing stalled':<38} {stalls} stalled connections held")
        for name in before:
            print(f"{name:<40} {summary(before[name]):<38} {summary(during[name])}")
        await asyncio.wait([st.watch for st in held if st.watch], timeout=timeout + 30)
        print(f"\nclosed by the server (header_timeout = body_timeout = {timeout:g} s):")
        for kind in ("headers", "body"):
            group = [st for st in held if st.kind == kind]
            closed = sorted(st.closed - st.opened for st in group if st.closed is not None)
            answered = sum(1 for st in group if b"408" in st.answer[:20])
            span = f"{closed[0]:.1f}–{closed[-1]:.1f} s after their request began" if closed else "none"
            print(f"  stalled in the {kind:<7}: {len(closed)}/{len(group)} closed, {span}"
                  + (f"; {answered} answered 408 request_timeout" if kind == "body" else ""))  # fmt: skip
    finally:
        for st in held:
            if st.writer is not None:
                st.writer.close()
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stalls", type=int, default=500)
    parser.add_argument(
        "--requests", type=int, default=300, help="inbox requests per phase (a third as many of the others)"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="header_timeout and body_timeout, seconds"
    )
    args = parser.parse_args()
    asyncio.run(run(args.stalls, args.requests, args.timeout))


if __name__ == "__main__":
    main()
