"""Throughput of one and of two replicas of one node sharing one PostgreSQL database.

As bench/throughput.py: N ordinary documents of about 12 KB, signed in advance by 000.00.00.G22
(government), go over mutual TLS with C concurrent connections to 000.00.00.A01 (party): each is
verified, sealed, bridged and verified again. Here the node is R `gateway serve` processes
(replicas r1, r2, as in tests/test_replicas.py) on one fresh PostgreSQL database, dropped after
the run, and the connections are spread evenly over the replicas' listeners.

    .venv/bin/python bench/replicas.py [N] [--replicas 1 2] [--concurrency C] [--recipients K] [--carriers W]

Reports accepted documents/s, delivered documents/s (first send to last delivery), p50/p99
accept latency, the deliveries each replica carried (routes.carried_by), whether any was
delivered twice (counted in the database), and how busy the CPUs were with what. A benchmark,
not a test: it never fails on slowness. It talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from bench.load import submit_all
from gateway.runtime.config import DEFAULT_CARRIERS, load_config
from gateway.runtime.node import init_home
from tests.conftest import client_context, make_package
from tests.processes import free_port, start_gateway, wait_healthy

SENDER = "000.00.00.G22"
RECIPIENTS = ["000.00.00.A01", "000.00.00.I01", "000.00.00.H41", "000.00.00.G12"]
BODY = "Nội dung văn bản hành chính về triển khai chính quyền địa phương hai cấp. " * 100
PENDING = "select count(*) from routes where state = 'pending'"
# Delivered and other deliveries, 'delivered' records in the delivery log, and distinct (document,
# recipient) among them: a route carried twice would log its deliveries twice (the deliveries
# table's unique key alone could not show it).
COUNTS = """select (select count(*) from deliveries where state = 'delivered'),
    (select count(*) from deliveries where state <> 'delivered'),
    (select count(*) from events where kind = 'delivered'),
    (select count(distinct (document, recipient)) from events where kind = 'delivered')"""
PG = "postgresql://postgres@127.0.0.1:5432/"  # by address, not "localhost": never leave 127.0.0.1


def cpu_seconds() -> tuple[float, float, float]:
    """CPU seconds so far of (the whole machine; this client and the replicas it waited for, which
    waited for their carriers; PostgreSQL, whose postmaster waits for its backends). Differences
    over a run say how much of the machine the run had: other work may be running on it."""
    tick = os.sysconf("SC_CLK_TCK")
    cpu = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    own = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    postgres = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):
            text = stat.read_text()
            if text[text.index("(") + 1 : text.rindex(")")] == "postgres":
                postgres += sum(int(x) for x in text[text.rindex(")") + 2 :].split()[11:15])  # u, s, cu, cs
    machine = sum(cpu) - cpu[3] - cpu[4]  # all but idle and iowait
    return machine / tick, sum(r.ru_utime + r.ru_stime for r in own), postgres / tick


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty database for one run (the replicas migrate it at start), dropped afterwards."""
    name = f"gw_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG + "postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(PG + "postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_replica(home: Path, name: str, port: int, database: str, carriers: int) -> subprocess.Popen[bytes]:
    # As tests/test_replicas.py: one config per replica, one home (PKI, registry), one database;
    # no per-agency limit (one sender is the whole load); carriers as `gateway init` writes them.
    config = home / f"{name}.toml"
    config.write_text(
        "[gateway]\n"
        f'node = "{name}"\nhost = "127.0.0.1"\nport = {port}\n'
        f'database = "postgresql+psycopg://postgres@127.0.0.1:5432/{database}"\n'
        'registry = "registry.csv"\ncerts = "certs_dev"\n'
        f"carriers = {carriers}\nsubmit_rate = 0\n"
    )
    return start_gateway(home, "--config", str(config), "serve", log=home / f"{name}.log")


def prepare(home: Path, n: int, recipients: list[str]) -> list[bytes]:
    config = load_config(home)  # documents like those of bench/throughput.py
    subject, doc_id = "Công văn số {} về việc thử tải", f"{SENDER},2026/11/22,{{}}/BENCH"
    return [
        make_package(
            config, SENDER, recipients, subject=subject.format(i), document_id=doc_id.format(i), content=BODY
        )
        for i in range(n)
    ]


async def run(
    home: Path, packages: list[bytes], replicas: int, concurrency: int, carriers: int
) -> dict[str, Any]:
    names = [f"r{i + 1}" for i in range(replicas)]
    load = os.getloadavg()[0]
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    with fresh_database() as database:
        ports = {name: free_port() for name in names}
        urls = {name: f"https://127.0.0.1:{port}" for name, port in ports.items()}
        procs = [start_replica(home, name, port, database, carriers) for name, port in ports.items()]
        try:
            ctx = client_context(load_config(home), SENDER)
            connector = aiohttp.TCPConnector(ssl=ctx, limit=concurrency)
            async with aiohttp.ClientSession(connector=connector) as s:
                for proc, (name, url) in zip(procs, urls.items(), strict=True):
                    await wait_healthy(s, url, proc, home / f"{name}.log", timeout=60)
                targets = list(urls.values())
                with psycopg.connect(PG + database, autocommit=True) as db:
                    start = time.perf_counter()
                    latencies = await submit_all(s, targets, packages, concurrency)
                    accepted_s = time.perf_counter() - start
                    # Routes are written with the document, before its 202: none pending means all carried.
                    # Asked of the database directly, so that no replica's API is asked more than the other.
                    while db.execute(PENDING).fetchone() != (0,):
                        await asyncio.sleep(0.01)
                    delivered_s = time.perf_counter() - start
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=60)
        wall = (time.perf_counter() - wall0) * (os.cpu_count() or 1) / 100  # one CPU-second in %
        machine, own, postgres = (round((b - a) / wall) for a, b in zip(cpu0, cpu_seconds(), strict=True))
        with psycopg.connect(PG + database, autocommit=True) as db:
            share: dict[str, int] = dict(
                db.execute(
                    "select r.carried_by, count(*) from deliveries d join routes r on r.id = d.route"
                    " where d.state = 'delivered' group by r.carried_by order by 1"
                ).fetchall()
            )
            counts = db.execute(COUNTS).fetchone() or (0, 0, 0, 0)
    return {
        "replicas": replicas,
        "n": len(packages),
        "accepted": len(packages) / accepted_s,
        "delivered": len(packages) / delivered_s,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[int(len(latencies) * 0.99)] * 1000,
        "share": {name: share.get(name, 0) for name in names},
        "counts": counts,
        "load": load,
        "cpu": (machine, own, postgres),  # % of all CPUs, from the replicas' start to their exit
    }


def report(rows: list[dict[str, Any]], recipients: int) -> None:
    print()
    print("replicas      N  accepted/s  delivered/s  p50 ms  p99 ms  load  carried by     exactly once")
    for row in rows:
        total = sum(row["share"].values()) or 1
        share = " ".join(f"{k} {v} ({100 * v / total:.0f}%)" for k, v in row["share"].items())
        delivered, other, logged, distinct = row["counts"]
        once = delivered == logged == distinct == row["n"] * recipients and not other
        check = f"{'yes' if once else 'NO'}: {delivered}/{row['n'] * recipients}, {logged - distinct} twice"
        print(
            f"{row['replicas']:>8} {row['n']:>6} {row['accepted']:>11.0f} {row['delivered']:>12.0f}"
            f" {row['p50']:>7.1f} {row['p99']:>7.1f} {row['load']:>5.2f}  {share:<20} {check}"
        )


async def main_async(args: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="gw-bench-replicas-"))
    init_home(home, now=datetime.now(UTC))
    recipients = RECIPIENTS[: args.recipients]
    t0 = time.perf_counter()
    packages = prepare(home, args.n, recipients)  # signed once, sent again to each run's fresh database
    print(
        f"prepared {args.n} signed documents of {len(packages[0])} bytes in {time.perf_counter() - t0:.1f} s"
        f" for {len(recipients)} recipient(s); {os.cpu_count()} CPUs; concurrency {args.concurrency} over"
        f" the replicas; {args.carriers} carrier process(es) per replica; logs in {home}"
    )
    rows = []
    for replicas in args.replicas:
        rows.append(await run(home, packages, replicas, args.concurrency, args.carriers))
        machine, own, postgres = rows[-1]["cpu"]
        print(
            f"{replicas} replica(s): all CPUs {machine}% busy: gateway and client {own}%, PostgreSQL "
            f"{postgres}%, other work {machine - own - postgres}%; load {rows[-1]['load']:.2f} before",
            flush=True,
        )
    report(rows, len(recipients))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=1000)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2], choices=[1, 2, 3, 4])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--recipients", type=int, default=1, choices=range(1, len(RECIPIENTS) + 1))
    parser.add_argument("--carriers", type=int, default=DEFAULT_CARRIERS, help="per replica, as gateway init")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
