"""Accept latency under a fixed offered rate (an open loop), not a closed loop of C connections.

Documents (about 12 KB, signed in advance by 000.00.00.G22 for 000.00.00.A01) are POSTed to a
real ``gateway serve`` at RATE per second for SECONDS, each at its scheduled moment whether or not
earlier ones were answered (a closed loop hides queueing: it slows down with the server). Reports
the achieved rate and the accept latency p50/p99/max, measured from each request's scheduled
moment (so a client that falls behind counts against the result, not for it).

    .venv/bin/python bench/openloop.py [--rate 300] [--seconds 10]

A benchmark, not a test: it never fails on slowness.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from bench.throughput import SENDER, signed_packages
from gateway.runtime.config import load_config
from gateway.runtime.node import init_home
from tests.conftest import client_context, set_setting
from tests.processes import free_port, start_gateway, wait_healthy

RECIPIENT = "000.00.00.A01"


async def run(rate: float, seconds: float) -> None:
    home = Path(tempfile.mkdtemp(prefix="gw-openloop-"))
    init_home(home, now=datetime.now(UTC))
    set_setting(home, "submit_rate", "0")
    config = load_config(home)
    n = int(rate * seconds)
    packages = signed_packages(config, n, [RECIPIENT], "OPEN")
    port = free_port()
    base = f"https://localhost:{port}"
    proc = start_gateway(home, "serve", "--port", str(port), log=home / "serve.log")
    try:
        connector = aiohttp.TCPConnector(ssl=client_context(config, SENDER), limit=512)
        async with aiohttp.ClientSession(connector=connector) as session:
            await wait_healthy(session, base, proc, home / "serve.log")
            # Warm the connection pool, so TLS handshakes are not counted as the server's latency.
            await asyncio.gather(*(session.get(base + "/healthz") for _ in range(64)))
            latencies: list[float] = []
            first_second: list[float] = []  # a node just started: what its first clients see
            refused = 0
            reasons: Counter[str] = Counter()
            start = time.perf_counter()

            async def one(i: int, due: float) -> None:
                nonlocal refused
                async with session.post(base + "/v1/edocs", data=packages[i]) as r:
                    said = await r.read()
                    if r.status != 202:
                        refused += 1
                        reasons[f"{r.status} {json.loads(said).get('error')}"] += 1
                latencies.append(time.perf_counter() - due)
                if i < rate:
                    first_second.append(latencies[-1])

            # Each request is started at its time by one dispatcher: 3,000 tasks made up front,
            # each sleeping to its turn, cost the client tens of milliseconds at the start, and
            # the first requests' latency (counted from their due time) carried it.
            sent: list[asyncio.Task[None]] = []
            for i in range(n):
                due = start + i / rate
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                sent.append(asyncio.create_task(one(i, due)))
            await asyncio.gather(*sent)
            elapsed = time.perf_counter() - start
        latencies.sort()
        print(
            f"open loop: {n} docs offered at {rate:.0f}/s for {seconds:.0f} s: achieved {n / elapsed:.0f}/s, "
            f"{refused} refused {dict(reasons)}, accept p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
            f"p99 {_p99(latencies) * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms; "
            f"first second p99 {_p99(sorted(first_second)) * 1000:.1f} ms"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _p99(ordered: list[float]) -> float:
    return ordered[int(len(ordered) * 0.99)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(run(args.rate, args.seconds))


if __name__ == "__main__":
    main()
