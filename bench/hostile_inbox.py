"""Another agency's inbox while one agency sends its most expensive allowed package in a loop.

A real `gateway serve` on loopback. 000.00.00.G22 sends, over C connections at once and for S
seconds, the most expensive package the parser's limits allow: validly signed, every element it
may hold, each with every attribute it may carry, in content the schema carries unread (the
costliest shape measured: canonicalising attributes). Meanwhile 000.00.00.A01, whose inbox holds
50 documents, asks for GET /v1/inbox 20 times a second on a fixed schedule; each latency counts
from when the request was due, so a stalled event loop is not hidden by requests never sent.

    PYTHONPATH=. .venv/bin/python bench/hostile_inbox.py [--seconds S] [--hostile C] [--inline]
                                 [--elements N [--distinct K]]

``--inline`` serves with the CPU phase of a submission on the event loop, as before the package
checkers (the same code and package otherwise). ``--elements`` sends a smaller package (one
within the budgets, which is then accepted; ``--distinct`` K of them in turn, so that each is
stored and carried, not answered as a resend). Reports the inbox's p50, p99 and worst latency
before and during the hostile loop, and the hostile loop's rate and answers. A benchmark, not a
test: it never fails on slowness.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from lxml import etree

from gateway.agency_side.packages import sign_package
from gateway.domain.edxml import NewEdoc, Organ, build_edoc, q
from gateway.exchange.checking import check_package
from gateway.runtime.config import Config, load_config
from gateway.runtime.node import init_home
from tests.conftest import client_context, make_package, set_setting
from tests.processes import free_port, start_gateway, wait_healthy

HOSTILE = "000.00.00.G22"
POLLER = "000.00.00.A01"
FILLER = "000.00.00.H41"
POLL_EVERY = 0.05


def hostile_package(config: Config, elements: int | None, number: int = 1) -> bytes:
    """Every element and attribute the node's parser allows, in OtherInfo/ReplyFors (carried unread)."""
    limits = config.xml_limits
    root = build_edoc(
        NewEdoc(
            sender=Organ(HOSTILE),
            recipients=[Organ(POLLER)],
            document_id=f"{HOSTILE},2026/11/22,{number}/NANG",
            subject="Gói tin đắt nhất",
        ),
        now=datetime.now(UTC),
    )
    other = root.find(f".//{q('OtherInfo')}")
    assert other is not None
    inert = etree.SubElement(other, q("ReplyFors"))
    # Room for the elements the signature adds (about 15) under the document's element limit.
    count = elements or limits.max_elements - sum(1 for _ in root.iter()) - 32
    attributes = {f"a{i}": "v" for i in range(limits.max_attributes_per_element)}
    for _ in range(count):
        etree.SubElement(inert, q("R"), attributes)
    return sign_package(config.certs, HOSTILE, root)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


async def poll_inbox(session: aiohttp.ClientSession, base: str, seconds: float) -> list[float]:
    """GET /v1/inbox every POLL_EVERY s for ``seconds``; latencies from when each was due."""
    latencies: list[float] = []

    async def one(due: float) -> None:
        async with session.get(base + "/v1/inbox") as r:
            await r.read()
            if r.status != 200:
                raise SystemExit(f"inbox answered {r.status}")
        latencies.append(time.perf_counter() - due)

    start = time.perf_counter()
    tasks = []
    for k in range(int(seconds / POLL_EVERY)):
        due = start + k * POLL_EVERY
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    return latencies


async def hostile_loop(
    session: aiohttp.ClientSession, base: str, packages: list[bytes], until: float, answers: Counter[str]
) -> None:
    while time.perf_counter() < until:
        package = packages.pop(0)
        packages.append(package)  # distinct ones in turn: each accepted one is stored and carried
        # A stream: aiohttp would warn that a body this large, as bytes, blocks its own loop.
        async with session.post(base + "/v1/edocs", data=io.BytesIO(package)) as r:
            body = await r.json()
            code = body.get("error", "accepted")
            if code == "too_expensive":  # which budget ran out
                code += " (memory)" if "memory" in body["message"] else " (CPU)"
            answers[f"{r.status} {code}"] += 1


def start_server(home: Path, port: int, *, inline: bool) -> subprocess.Popen[bytes]:
    if not inline:
        return start_gateway(home, "serve", "--port", str(port), log=home / "serve.log")
    with (home / "serve.log").open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bench.hostile_inbox", "--serve-inline", str(home), str(port)],
            stdout=out,
            stderr=out,
        )


def serve_inline(home: Path, port: int) -> None:
    """`gateway serve` as it was before the package checkers: the CPU phase on the event loop."""
    from gateway.exchange.checking import InlineWork
    from gateway.runtime import node

    class OnTheLoop(InlineWork):
        def __init__(self, **_: object) -> None:
            pass

        async def close(self) -> None:
            pass

    node.CheckerPool = OnTheLoop  # type: ignore[attr-defined,assignment]
    asyncio.run(node.serve_forever(load_config(home), port=port))


async def run(seconds: float, hostile: int, elements: int | None, distinct: int, inline: bool) -> None:
    home = Path(tempfile.mkdtemp(prefix="gw-hostile-"))
    init_home(home, now=datetime.now(UTC))
    set_setting(home, "submit_rate", "0")  # the worst case: no rate limit slows the hostile agency
    config = load_config(home)
    t = time.perf_counter()
    package = hostile_package(config, elements)
    # A package within the budgets is accepted: send distinct ones, or all but the first would be
    # answered as resends of it (nothing stored, nothing carried).
    packages = [package] + [hostile_package(config, elements, i) for i in range(2, distinct + 1)]
    built = time.perf_counter() - t
    t = time.process_time()
    verdict = check_package(package, config.xml_limits)  # within every limit, and validly signed
    cost = time.process_time() - t
    print(
        f"hostile package: {len(package) / 1e6:.1f} MB, {len(packages)} built and signed in {built:.1f} s; "
        f"its check costs {cost:.2f} CPU s here (signed by {verdict.package.sender}); "
        f"budget {config.submit_cpu_seconds:g} CPU s, {config.submit_checkers} checkers"
    )
    port = free_port()
    base = f"https://localhost:{port}"
    proc = start_server(home, port, inline=inline)

    def session(code: str, limit: int) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_context(config, code), limit=limit)
        )

    try:
        async with (
            session(POLLER, 100) as poller,
            session(HOSTILE, hostile) as attacker,
            session(FILLER, 4) as filler,
        ):
            await wait_healthy(poller, base, proc, home / "serve.log")
            for i in range(50):
                raw = make_package(config, FILLER, [POLLER], document_id=f"{FILLER},2026/11/22,{i}/DAY")
                async with filler.post(base + "/v1/edocs", data=raw) as r:
                    assert r.status == 202, await r.text()
            while True:
                async with poller.get(base + "/healthz") as r:
                    if (await r.json())["pending_routes"] == 0:
                        break
                await asyncio.sleep(0.05)
            idle = await poll_inbox(poller, base, 5.0)
            answers: Counter[str] = Counter()
            start = time.perf_counter()
            until = start + seconds
            loops = [
                asyncio.create_task(hostile_loop(attacker, base, packages, until, answers))
                for _ in range(hostile)
            ]
            await asyncio.sleep(1.0)  # the hostile loop under way before the inbox is measured
            during = await poll_inbox(poller, base, seconds - 1.0)
            await asyncio.gather(*loops)
            elapsed = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    mode = "CPU phase on the event loop (before)" if inline else "package checkers (after)"
    print(f"{mode}: {hostile} hostile connection(s), {seconds:.0f} s")
    for name, values in (("idle", idle), ("during the hostile loop", during)):
        print(
            f"  GET /v1/inbox {name}: {len(values)} requests, p50 {percentile(values, 0.5) * 1000:.0f} ms, "
            f"p99 {percentile(values, 0.99) * 1000:.0f} ms, worst {max(values) * 1000:.0f} ms"
        )
    total = sum(answers.values())
    print(
        f"  hostile loop: {total} packages in {elapsed:.1f} s ({total / elapsed:.2f}/s, "
        f"{total * len(package) / elapsed / 1e6:.1f} MB/s); answers {dict(answers)}"
    )


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-inline":
        serve_inline(Path(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--hostile", type=int, default=4, help="connections the hostile agency uses at once")
    parser.add_argument("--elements", type=int, default=None, help="fewer elements than the limit allows")
    parser.add_argument("--distinct", type=int, default=1, help="distinct packages sent in turn")
    parser.add_argument("--inline", action="store_true", help="the CPU phase on the event loop (before)")
    args = parser.parse_args()
    asyncio.run(run(args.seconds, args.hostile, args.elements, args.distinct, args.inline))


if __name__ == "__main__":
    main()
