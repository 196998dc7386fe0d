"""The load the HTTP benchmarks put on a gateway: signed packages POSTed over mutual TLS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import aiohttp


async def submit_all(
    session: aiohttp.ClientSession, targets: Sequence[str], packages: Sequence[bytes], concurrency: int
) -> list[float]:
    """Send every package with ``concurrency`` connections, connection k always to
    ``targets[k % len(targets)]`` (each listener takes an equal share); returns the accept
    latencies in seconds, sorted. Anything but 202 stops the benchmark."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for p in packages:
        queue.put_nowait(p)
    latencies: list[float] = []

    async def worker(url: str) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            t = time.perf_counter()
            async with session.post(url + "/v1/edocs", data=body) as r:
                if r.status != 202:
                    raise SystemExit(f"unexpected {r.status}: {await r.text()}")
                await r.read()
            latencies.append(time.perf_counter() - t)

    await asyncio.gather(*(worker(targets[k % len(targets)]) for k in range(concurrency)))
    return sorted(latencies)
