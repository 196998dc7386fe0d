"""Real `gateway` processes for the tests and benchmarks that need them: started with the very
command an operator (or docker-compose.yml) runs, on a free loopback port, and watched through
/proc so that a test can tell which processes outlive a kill."""

from __future__ import annotations

import asyncio
import errno
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hold_closed_port() -> tuple[int, list[socket.socket]]:
    """A loopback port that refuses every connection for as long as the sockets are kept: bound
    on 127.0.0.1 (and ::1 when there is IPv6) but never listening, so nothing else can take it.
    Test homes use it as their configured port: a command run without a server then finds no
    server, whatever runs on this machine (README's own on 8443 included)."""
    for _ in range(20):
        v4 = socket.socket()
        v4.bind(("127.0.0.1", 0))
        port = int(v4.getsockname()[1])
        held = [v4]
        if socket.has_ipv6:
            v6 = socket.socket(socket.AF_INET6)
            try:
                v6.bind(("::1", port))
                held.append(v6)
            except OSError as exc:
                v6.close()
                if exc.errno != errno.EADDRNOTAVAIL:  # taken on ::1: try another port
                    v4.close()
                    continue
        return port, held
    raise RuntimeError("no loopback port free on both 127.0.0.1 and ::1")


def start_gateway(home: Path, *args: str, log: Path) -> subprocess.Popen[bytes]:
    """``gateway --home HOME ARGS…`` with stdout and stderr appended to ``log``."""
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "--home", str(home), *args], stdout=out, stderr=out
        )


async def wait_healthy(
    session: aiohttp.ClientSession,
    base: str,
    proc: subprocess.Popen[bytes],
    log: Path,
    *,
    timeout: float = 30,
) -> None:
    """Until ``base``/healthz answers 200; fails with the process's log if it exits first."""
    for _ in range(int(timeout / 0.05)):
        if proc.poll() is not None:
            raise AssertionError(f"{base} exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            async with session.get(base + "/healthz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"{base} did not become healthy in {timeout:.0f} s")


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if Path(f"/proc/{pid}").exists() and not zombie(pid)]
