"""The CPU phase of a submission runs in checker processes, within a CPU budget per package.

On a real node with a tiny budget (a quarter of a CPU second, about 200 times what an ordinary
package costs): a valid package within every parser limit but expensive to canonicalise is
refused with ``400 too_expensive``, its checker is ended and nothing is stored, while the node
goes on answering; an ordinary package is still accepted. Past the queue: ``503 checkers_busy``
with Retry-After. A free checker serves the agencies in turn. Memory is bounded like CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import pickle
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from lxml import etree

from gateway.agency_side.packages import sign_package
from gateway.domain.edxml import NewEdoc, Organ, build_edoc, q
from gateway.domain.vocabulary import Priority
from gateway.domain.xmlsafe import DEFAULT_LIMITS
from gateway.errors import CheckersBusy, PackageTooExpensive
from gateway.exchange.checking import Checked, check_package
from gateway.runtime.checkers import CheckerPool, _Answers
from gateway.runtime.config import Config, load_config
from gateway.runtime.node import Node
from tests.api_contract import contract_session
from tests.conftest import A01, G22, H41, client_context, make_package, set_setting
from tests.processes import alive, children

BUDGET = 0.25


@pytest.fixture
def config(home: Path) -> Config:
    set_setting(home, "submit_cpu_seconds", str(BUDGET))
    return load_config(home)


def expensive_package(config: Config, sender: str, *, elements: int = 12_000) -> bytes:
    """Valid and signed, within every parser limit, and costly: thousands of elements with 31
    attributes each in content the schema carries unread (about 0.7 CPU seconds to check here)."""
    root = build_edoc(
        NewEdoc(
            sender=Organ(sender),
            recipients=[Organ(A01)],
            document_id=f"{sender},2026/11/22,1/NANG",
            subject="Văn bản nặng",
        ),
        now=datetime.now(UTC),
    )
    other = root.find(f".//{q('OtherInfo')}")
    assert other is not None
    inert = etree.SubElement(other, q("ReplyFors"))
    for _ in range(elements):
        etree.SubElement(inert, q("Ref"), {f"a{i}": "giá trị" for i in range(31)})
    return sign_package(config.certs, sender, root)


def documents(config: Config) -> int:
    with sqlite3.connect(config.database_url.removeprefix("sqlite:///")) as db:
        return int(db.execute("select count(*) from documents").fetchone()[0])


def checker_processes() -> list[int]:
    found = []
    for pid in children(os.getpid()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"gateway.runtime.checkers" in cmdline:
            found.append(pid)
    return alive(found)


async def test_an_expensive_package_is_refused_at_its_budget_while_the_node_answers(
    node: Node, config: Config, agency
) -> None:
    heavy = expensive_package(config, G22)
    # Valid, signed and within every limit of the parser: what refuses it is its cost alone.
    assert check_package(heavy, DEFAULT_LIMITS).package.sender == G22
    g22, a01 = agency(G22), agency(A01)
    status, body = await g22.send(make_package(config, G22, [A01], subject="Trước"))
    assert status == 202, body  # a checker is up, and an ordinary package is well within budget
    before = checker_processes()
    assert before

    # A body above 1 MiB goes as a stream: aiohttp warns that bytes that large block its loop.
    sending = asyncio.create_task(g22.call("POST", "/v1/edocs", io.BytesIO(heavy)))
    answered_meanwhile = 0
    while not sending.done():
        status, health = await a01.call("GET", "/healthz")
        assert status == 200 and health["status"] == "ok"
        answered_meanwhile += 0 if sending.done() else 1
    status, body = await sending

    assert (status, body["error"]) == (400, "too_expensive"), body
    assert f"{BUDGET:g} s" in body["message"]
    assert answered_meanwhile > 0  # the loop went on serving while the package was checked
    assert documents(config) == 1  # only the ordinary one
    for _ in range(100):  # the checker that ran out of budget was ended, not left running
        if not set(before) & set(checker_processes()):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"checker processes {before} still run after the budget ran out")

    status, body = await g22.send(make_package(config, G22, [A01], subject="Sau"))
    assert status == 202, body  # a fresh checker takes the next package
    assert documents(config) == 2


async def test_past_the_queue_a_package_is_refused_with_retry_after(home: Path) -> None:
    set_setting(home, "submit_cpu_seconds", str(BUDGET))
    set_setting(home, "submit_checkers", "1")
    set_setting(home, "submit_queue", "2")  # so one agency may hold one waiting package
    config = load_config(home)
    heavy = expensive_package(config, G22)
    node = Node(config)
    await node.start(port=0)
    base = f"https://localhost:{node.port}"
    try:
        async with (
            contract_session(client_context(config, G22)) as g22,
            contract_session(client_context(config, H41)) as h41,
        ):

            async def send(session: aiohttp.ClientSession, raw: bytes) -> tuple[int, str, str | None]:
                async with session.post(base + "/v1/edocs", data=io.BytesIO(raw)) as r:
                    return r.status, (await r.json())["error"], r.headers.get("Retry-After")

            answers = await asyncio.gather(*(send(g22, heavy) for _ in range(3)))
            light = await h41.post(base + "/v1/edocs", data=make_package(config, H41, [A01]))
            assert light.status == 202, await light.text()  # G22's queue does not shut others out
    finally:
        await node.stop()
    # One checked (over its budget), one waited for it, the third found G22's share of the queue taken.
    assert sorted(answers) == [(400, "too_expensive", None)] * 2 + [(503, "checkers_busy", "1")], answers
    assert documents(config) == 1


async def test_a_free_checker_takes_the_next_agency_in_turn(config: Config) -> None:
    pool = CheckerPool(
        workers=1, queue=10, cpu_seconds=BUDGET, memory_mb=2048, max_bytes=config.max_package_bytes
    )
    heavy = [expensive_package(config, G22)] * 3
    light = make_package(config, H41, [A01])
    finished: list[str] = []

    async def check(name: str, raw: bytes, agency: str) -> None:
        with contextlib.suppress(PackageTooExpensive):
            await pool.check(raw, DEFAULT_LIMITS, agency=agency)
        finished.append(name)

    try:
        first = asyncio.create_task(check("G22 first", heavy[0], G22))
        await asyncio.sleep(0)  # G22's first holds the checker; its other two wait, then H41's
        queued = [asyncio.create_task(check(f"G22 {i}", heavy[i], G22)) for i in (1, 2)]
        await asyncio.sleep(0)
        late = asyncio.create_task(check("H41", light, H41))
        await asyncio.gather(first, *queued, late)
    finally:
        await pool.close()
    assert finished == ["G22 first", "G22 1", "H41", "G22 2"]


async def test_a_closed_pool_refuses_with_retry_after(config: Config) -> None:
    pool = CheckerPool(
        workers=1, queue=1, cpu_seconds=BUDGET, memory_mb=2048, max_bytes=config.max_package_bytes
    )
    await pool.close()
    with pytest.raises(CheckersBusy) as refused:
        await pool.check(make_package(config, G22, [A01]), DEFAULT_LIMITS, agency=G22)
    assert refused.value.retry_after == BUDGET


async def test_a_package_that_needs_too_much_memory_is_refused(config: Config) -> None:
    # 12 MB of elements with 31 attributes each take the check past 256 MiB (about 490 MB
    # in one process here); an ordinary package needs a tenth of that. The CPU budget is ample
    # here: memory alone refuses it.
    pool = CheckerPool(workers=1, queue=1, cpu_seconds=30, memory_mb=256, max_bytes=config.max_package_bytes)
    try:
        with pytest.raises(PackageTooExpensive, match="256 MiB of memory"):
            await pool.check(expensive_package(config, G22, elements=24_000), DEFAULT_LIMITS, agency=G22)
        checked = await pool.check(make_package(config, G22, [A01]), DEFAULT_LIMITS, agency=G22)
    finally:
        await pool.close()
    assert checked.package.sender == G22


class _Exploit:
    """What a checker taken over by a hostile package could send: a pickle that calls a function."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.getenv, ("HOME",))


def test_a_checkers_answer_builds_values_only(config: Config) -> None:
    checked = check_package(make_package(config, G22, [A01]), DEFAULT_LIMITS)
    answer = pickle.dumps(("ok", checked, 0.01, False), protocol=5)
    assert _Answers(io.BytesIO(answer)).load()[1] == checked  # the gateway's values come through
    refused = pickle.dumps(("refused", PackageTooExpensive("too much"), 0.01, False), protocol=5)
    assert isinstance(_Answers(io.BytesIO(refused)).load()[1], PackageTooExpensive)
    with pytest.raises(pickle.UnpicklingError, match=r"os\.getenv"):
        _Answers(io.BytesIO(pickle.dumps(("ok", _Exploit(), 0.01, False)))).load()


class _ByGetattr:
    """An enum member as Python 3.11.2 pickles it: ``getattr(cls, name)``."""

    def __init__(self, cls: object, name: object) -> None:
        self.cls, self.name = cls, name

    def __reduce__(self) -> tuple[object, tuple[object, object]]:
        return (getattr, (self.cls, self.name))


def test_an_enum_member_pickled_by_getattr_comes_through_and_nothing_else_does() -> None:
    def load(value: object) -> object:
        return _Answers(io.BytesIO(pickle.dumps(("ok", value, 0.01, False), protocol=5))).load()[1]

    assert load(_ByGetattr(Priority, Priority.HOA_TOC.name)) is Priority.HOA_TOC
    for cls, name in [(Priority, "_missing_"), (Priority, "__class__"), (Priority, "NO_SUCH"), (Priority, 1)]:
        with pytest.raises(pickle.UnpicklingError, match="not a gateway enum member"):
            load(_ByGetattr(cls, name))
    with pytest.raises(pickle.UnpicklingError, match="not a gateway enum member"):
        load(_ByGetattr(Checked, "__init__"))  # a gateway class, but not an enum
