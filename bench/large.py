"""Large packages through a real ``gateway serve``: 1, 10 and 50 MB, plain and Tối mật.

For each size and level, on a fresh server: one package with a scanned attachment (random bytes,
so nothing compresses) is sent over mutual TLS, and the bench reports the time to accept
(POST → 202), to deliver (until no route is pending), to fetch and open the whole delivery on
the recipient's side (seal, digest, decryption, the sender's signature) and to fetch one
attachment (``GET …/attachments/cid:1``; for Tối mật, from the decrypted package); then the
server's peak RSS above its idle RSS (its checker processes apart) and the client's, each also
as a multiple of the package size, and the attachment step's own peak above the server's RSS
when it began.

    .venv/bin/python bench/large.py [--sizes 1,10,50]

A benchmark, not a test: it never fails on slowness.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from gateway.agency_side.client import AgencyKeys, AsyncAgencyClient
from gateway.agency_side.packages import sign_package
from gateway.domain.edxml import Attachment, NewEdoc, Organ, build_edoc
from gateway.domain.vocabulary import Classification
from gateway.runtime.config import load_config
from gateway.runtime.node import init_home
from tests.conftest import client_context, set_setting
from tests.processes import free_port, start_gateway, wait_healthy

SENDER, RECIPIENT = "000.00.00.G22", "000.00.00.A01"
MB = 1_000_000


def _status_kb(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


async def case(size_mb: int, level: Classification) -> str:
    home = Path(tempfile.mkdtemp(prefix="gw-large-"))
    init_home(home, now=datetime.now(UTC))
    set_setting(home, "submit_rate", "0")
    config = load_config(home)
    scan = os.urandom(int(size_mb * MB * 0.74))  # base64 in the package: about size_mb MB in all
    doc = NewEdoc(
        sender=Organ(SENDER),
        recipients=[Organ(RECIPIENT)],
        document_id=f"{SENDER},2026/12/04,{size_mb}/LARGE",
        subject="Hồ sơ scan",
        classification=level,
        attachments=(Attachment("scan.pdf", "application/pdf", scan),),
    )
    package = sign_package(config.certs, SENDER, build_edoc(doc, now=datetime.now(UTC)))
    del doc
    port = free_port()
    base = f"https://localhost:{port}"
    proc = start_gateway(home, "serve", "--port", str(port), log=home / "serve.log")
    try:
        sender = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context(config, SENDER)))
        reader = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context(config, RECIPIENT)))
        keys = AgencyKeys.from_dev_pki(config.certs, RECIPIENT, config.registry)
        async with sender, reader, AsyncAgencyClient(base, keys, timeout=600) as agency:
            await wait_healthy(sender, base, proc, home / "serve.log")
            server_idle = _status_kb(proc.pid, "VmRSS")
            headers = {"X-Classification": level.slug} if level is not Classification.NONE else {}
            start = time.perf_counter()
            async with sender.post(base + "/v1/edocs", data=io.BytesIO(package), headers=headers) as r:
                body = await r.json()
                assert r.status == 202, body
            accepted = time.perf_counter() - start
            phases = [_status_kb(proc.pid, "VmHWM")]
            while True:
                async with sender.get(base + "/healthz") as r:
                    if (await r.json())["pending_routes"] == 0:
                        break
                await asyncio.sleep(0.01)
            delivered = time.perf_counter() - start
            phases.append(_status_kb(proc.pid, "VmHWM"))
            await agency.inbox()  # the connection and the keys are ready before the clock starts
            Path("/proc/self/clear_refs").write_text("5")  # the client's peak from here on
            client_idle = _status_kb("self", "VmRSS")
            start = time.perf_counter()
            delivery = await agency.fetch(body["id"], acknowledge=False)
            fetched = time.perf_counter() - start
            client_peak = _status_kb("self", "VmHWM")
            phases.append(_status_kb(proc.pid, "VmHWM"))
            # The peaks above are cumulative; the attachment step's own is measured from a reset
            # peak (clear_refs 5), so that it is not hidden under the fetch's.
            Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
            before_attachment = _status_kb(proc.pid, "VmRSS")
            start = time.perf_counter()
            if level is Classification.NONE:
                async with reader.get(f"{base}/v1/edocs/{body['id']}/attachments/cid:1") as r:
                    one = await r.read()
            else:
                one = delivery.attachments[0].data
            attachment = time.perf_counter() - start
            assert one == scan
            attachment_alone = _status_kb(proc.pid, "VmHWM") - before_attachment
            server_peak = max(phases[-1], _status_kb(proc.pid, "VmHWM"))
            checkers = max((_status_kb(c, "VmHWM") for c in _children(proc.pid)), default=0)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    size = len(package) / MB
    grown_server = (server_peak - server_idle) / 1000
    grown_client = max(0, client_peak - client_idle) / 1000
    return (
        f"{size:6.1f} MB {level.slug:<7} accept {accepted:6.2f} s  deliver {delivered:6.2f} s  "
        f"fetch+open {fetched:6.2f} s  attachment {attachment:5.2f} s  "
        f"server +{grown_server:5.0f} MB ({grown_server / size:4.1f}x)  "
        f"checker peak {checkers / 1000:4.0f} MB  "
        f"client +{grown_client:5.0f} MB ({grown_client / size:4.1f}x)  "
        f"server peak after accept/deliver/fetch/attachment +"
        + "/".join(f"{(kb - server_idle) / 1000:.0f}" for kb in (*phases, server_peak))
        + f" MB  attachment step alone +{attachment_alone / 1000:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,50")
    parser.add_argument("--levels", default="none,toi-mat", help="secrecy levels (slugs), comma-separated")
    args = parser.parse_args()
    levels = [Classification.from_slug(slug) for slug in args.levels.split(",")]
    for size in (int(s) for s in args.sizes.split(",")):
        for level in levels:
            print(asyncio.run(case(size, level)), flush=True)


if __name__ == "__main__":
    main()
