"""End-to-end throughput of a real `gateway serve` process on this machine.

N ordinary (unclassified) documents of about 13 KB, signed in advance by 000.00.00.G22
(government network), are sent over mutual TLS with C concurrent connections to
000.00.00.A01 (party network): every one is verified, sealed by the government adapter,
bridged into the party network (verify, hop, re-seal) and verified again before delivery.

    .venv/bin/python bench/throughput.py [N] [--concurrency C] [--recipients K]

Reports accepted documents/s, delivered documents/s (first send to last delivery),
p50/p99 accept latency and the server's peak memory. A benchmark, not a test: it never fails
on slowness.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from bench.load import submit_all
from gateway.agency_side.packages import sign_package
from gateway.domain.edxml import NewEdoc, Organ, build_edoc
from gateway.runtime.config import Config, load_config
from gateway.runtime.node import init_home
from tests.conftest import client_context, set_setting
from tests.processes import free_port, start_gateway, wait_healthy

SENDER = "000.00.00.G22"
RECIPIENTS = ["000.00.00.A01", "000.00.00.I01", "000.00.00.H41", "000.00.00.G12"]
BODY = "Nội dung văn bản hành chính về triển khai chính quyền địa phương hai cấp. " * 100


def signed_packages(config: Config, n: int, recipients: list[str], series: str) -> list[bytes]:
    """``n`` ordinary documents (about 12 KB) from SENDER to ``recipients``, signed in advance."""
    now = datetime.now(UTC)
    return [
        sign_package(
            config.certs,
            SENDER,
            build_edoc(
                NewEdoc(
                    sender=Organ(SENDER, "Văn phòng Chính phủ"),
                    recipients=[Organ(r) for r in recipients],
                    document_id=f"{SENDER},2026/11/22,{i}/{series}",
                    subject=f"Công văn số {i} về việc thử tải",
                    content=BODY,
                ),
                now=now,
            ),
        )
        for i in range(n)
    ]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of one process so far (/proc/PID/stat, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of the node's main process and of its children by kind (checkers, carriers)."""
    spent = {"main": cpu_seconds(pid), "checkers": 0.0, "others": 0.0}
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in children.read_text().split() if children.exists() else []:
        try:
            kind = "checkers" if b"checkers" in Path(f"/proc/{child}/cmdline").read_bytes() else "others"
            spent[kind] += cpu_seconds(int(child))
        except FileNotFoundError:
            continue
    return spent


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(n: int, concurrency: int, recipients: list[str]) -> None:
    home = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    init_home(home, now=datetime.now(UTC))
    set_setting(home, "submit_rate", "0")  # one sender is the whole load here: no per-agency limit
    config = load_config(home)
    t0 = time.perf_counter()
    packages = signed_packages(config, n, recipients, "BENCH")
    print(f"prepared {n} signed documents of {len(packages[0])} bytes in {time.perf_counter() - t0:.1f} s")
    port = free_port()
    base = f"https://localhost:{port}"
    proc = start_gateway(home, "serve", "--port", str(port), log=home / "serve.log")
    try:
        ctx = client_context(config, SENDER)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=concurrency)) as s:
            await wait_healthy(s, base, proc, home / "serve.log")
            cpu_before = process_cpu(proc.pid)
            start = time.perf_counter()
            latencies = await submit_all(s, [base], packages, concurrency)
            accepted_s = time.perf_counter() - start
            while True:
                async with s.get(base + "/healthz") as r:
                    if (await r.json())["pending_routes"] == 0:
                        break
                await asyncio.sleep(0.01)
            delivered_s = time.perf_counter() - start
            cpu = {k: v - cpu_before[k] for k, v in process_cpu(proc.pid).items()}
        print(
            f"gateway: {n} docs of {len(packages[0])} bytes to {len(recipients)} recipient(s), "
            f"concurrency {concurrency}: accepted {n / accepted_s:.0f} docs/s, "
            f"delivered {n / delivered_s:.0f} docs/s end to end, "
            f"accept p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
            f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms, "
            f"server peak RSS {peak_rss_mb(proc.pid):.0f} MB"
        )
        # CPU per document holds up when other work shares the cores, unlike documents/s; the
        # main process is the one an interpreter lock bounds.
        print(
            "server CPU per document: "
            + ", ".join(f"{kind} {seconds / n * 1e6:.0f} µs" for kind, seconds in cpu.items())
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--recipients", type=int, default=1, choices=range(1, len(RECIPIENTS) + 1))
    args = parser.parse_args()
    asyncio.run(run(args.n, args.concurrency, RECIPIENTS[: args.recipients]))


if __name__ == "__main__":
    main()
