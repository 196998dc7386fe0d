"""Carrier worker processes, for real: a pool whose worker is killed is replaced, not left broken."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.domain import transfer as tr
from gateway.domain.vocabulary import Classification, Network, Priority
from gateway.exchange.ports import Carried, DocumentRecord, RouteJob
from gateway.runtime.carriers import ProcessCarrier
from gateway.runtime.config import Config
from gateway.runtime.node import RenewableCarrier
from tests.conftest import A01, G22
from tests.processes import alive, children

pytestmark = pytest.mark.slow


def route(n: int) -> RouteJob:
    """A route of an accepted document from G22 to A01, named by its digest as the courier names it."""
    digest = hashlib.sha256(f"package {n}".encode()).hexdigest()
    document = DocumentRecord(
        id=f"doc-{n}", kind="edoc", sender=G22, sender_network=Network.GOVERNMENT,
        document_id=f"{G22},2026/12/08,{n}/CARRY", response_for=None, status_code=None,
        signed_digest=digest, signer=G22, subject=None, priority=Priority.THUONG,
        classification=Classification.NONE, size=1000, accepted_at=datetime.now(UTC),
        package_sha256=digest,
    )  # fmt: skip
    ref = tr.PackageRef(base64.b64encode(bytes.fromhex(digest)).decode("ascii"), 1000, encrypted=False)
    return RouteJob(n, document, Network.PARTY, ((A01, A01),), 0, package_ref=ref)


def workers() -> list[int]:
    found = []
    for pid in alive(children(os.getpid())):
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


async def test_a_killed_carrier_process_is_replaced_by_a_fresh_pool(config: Config) -> None:
    carrier = RenewableCarrier(lambda: ProcessCarrier(config.certs, config.registry, workers=1))
    try:
        await carrier.warm()
        (first,) = await carrier.carry([route(1)])
        assert isinstance(first[1], Carried)
        (worker,) = workers()
        os.kill(worker, signal.SIGKILL)
        with pytest.raises(BrokenProcessPool):  # the batch in hand: its routes come back after the lease
            await carrier.carry([route(2)])
        (again,) = await carrier.carry([route(2)])  # a fresh pool, with the adapters' keys loaded
        assert isinstance(again[1], Carried)
        assert worker not in workers()
    finally:
        carrier.close()
