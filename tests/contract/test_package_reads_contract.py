"""Reading a stored package in pieces (``package_chunks``) and the attachments recorded with a
document, against every ``Store``: in memory, SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import os

import pytest

from gateway.domain.edxml import AttachmentFacts
from gateway.domain.vocabulary import Classification
from gateway.errors import StoreError
from gateway.exchange.ports import Store
from tests.contract import test_store_contract as contract
from tests.contract.test_store_contract import document

store = contract.store  # the same fixture: memory, SQLite and PostgreSQL

MIB = 1024 * 1024


async def pieces(store: Store, doc_id: str, start: int = 0, end: int | None = None) -> list[bytes]:
    return [piece async for piece in store.package_chunks(doc_id, start, end)]


async def test_a_package_is_read_in_pieces_of_at_most_a_mebibyte_over_any_range(store: Store) -> None:
    package = os.urandom(2 * MIB + 123)
    doc = document(package=package)
    await store.accept(doc)
    whole = await pieces(store, doc.id)
    assert b"".join(whole) == package and [len(p) for p in whole] == [MIB, MIB, 123]
    for start, end in [
        (0, 10),
        (10, 20),
        (MIB - 3, MIB + 5),
        (5, 2 * MIB + 1),
        (7, None),
        (0, 2 * MIB + 123),
    ]:
        got = await pieces(store, doc.id, start, end)
        assert b"".join(got) == package[start:end], (start, end)
        assert all(0 < len(p) <= MIB for p in got)
    assert b"".join(await pieces(store, doc.id, 2 * MIB, 10 * MIB)) == package[2 * MIB :]  # past the end
    assert await pieces(store, doc.id, 3 * MIB) == []
    assert await pieces(store, doc.id, 20, 20) == []
    assert await pieces(store, "0" * 32) == []  # no such document: nothing


def facts(position: int, *, span: tuple[int, int] | None = (100, 8)) -> AttachmentFacts:
    return AttachmentFacts(
        position, str(position), f"tệp {position}.pdf", "application/pdf", 6, "ab" * 32, span
    )


async def test_the_attachments_recorded_with_a_document_are_read_back_by_position(store: Store) -> None:
    recorded = (facts(2, span=None), facts(1))
    doc = dataclasses.replace(document(), attachments=recorded)
    await store.accept(doc)
    assert await store.attachments(doc.id) == [facts(1), facts(2, span=None)]
    plain = document()
    await store.accept(plain)
    assert await store.attachments(plain.id) == []
    assert await store.attachments("0" * 32) == []


@pytest.mark.parametrize("problem", ["classified", "repeated position"])
async def test_attachments_that_cannot_be_recorded_store_nothing_of_the_document(
    store: Store, problem: str
) -> None:
    doc = document()
    if problem == "classified":  # a classified attachment's name is never stored in clear
        doc = dataclasses.replace(doc, classification=Classification.MAT, attachments=(facts(1),))
    else:
        doc = dataclasses.replace(doc, attachments=(facts(1), facts(1)))
    with pytest.raises(StoreError):
        await store.accept(doc)
    assert await store.document(doc.id) is None
    assert await store.attachments(doc.id) == []
    assert await store.events(doc.id) == []
