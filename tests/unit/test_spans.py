"""An attachment's base64 text found in the raw package bytes, and decoded piece by piece."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from gateway.agency_side.packages import sign_package
from gateway.domain.clock import ManualClock
from gateway.domain.edxml import Attachment, NewEdoc, Organ, build_edoc
from gateway.domain.edxml.spans import Base64Pieces, decoded, encoded_spans, raw_pieces
from gateway.errors import StoreError
from gateway.exchange.memory import MemoryStore
from gateway.runtime.config import Config
from tests.conftest import A01, G22
from tests.unit.conftest import build_exchange


def test_any_split_of_the_text_decodes_to_the_same_bytes() -> None:
    data = os.urandom(10_000)
    text = base64.encodebytes(data).replace(b"\n", b"\r\n\t ")  # white space as XML may hold it
    for size in (1, 3, 4, 5, 77, 1024, len(text)):
        pieces = [text[i : i + size] for i in range(0, len(text), size)]
        assert b"".join(decoded(pieces)) == data
    assert b"".join(decoded([b"QQ", b"==", b" "])) == b"A"
    assert b"".join(decoded([])) == b""


@pytest.mark.parametrize(
    "pieces",
    [
        [b"QUJD", b"&#65;"],  # a character reference is not base64
        [b"QUJD<![CDATA[QUJD]]>"],
        [b"QQ==", b"QUJD"],  # data after the padding, in the next piece
        [b"QQ==QUJD"],  # or in the same one
        [b"QUJDR"],  # a truncated group at the end
    ],
)
def test_what_is_not_strict_base64_is_refused(pieces: list[bytes]) -> None:
    with pytest.raises(binascii.Error):
        b"".join(decoded(pieces))


def test_the_decoder_carries_what_is_past_a_group_of_four() -> None:
    decoder = Base64Pieces()
    assert (decoder.feed(b"QU"), decoder.feed(b"JD QQ"), decoder.feed(b"==")) == (b"", b"ABC", b"A")
    decoder.finish()  # nothing left over
    decoder.feed(b"Q")
    with pytest.raises(binascii.Error):
        decoder.finish()


def test_spans_are_found_with_any_prefix_and_empty_elements_are_empty() -> None:
    raw = (
        b'<?xml version="1.0"?><edXML xmlns:e="urn:x">'
        b"<e:ContentTransferEncoded>QUJD</e:ContentTransferEncoded>"
        b"<ContentTransferEncodedX>no</ContentTransferEncodedX>"
        b'<ContentTransferEncoded a="1">\n QQ==\n</ContentTransferEncoded><ContentTransferEncoded/>'
        b"<ContentTransferEncoded >AA<![CDATA[AA]]></ContentTransferEncoded></edXML>"
    )
    spans = encoded_spans(raw)
    assert [raw[o : o + n] for o, n in spans] == [b"QUJD", b"\n QQ==\n", b"", b"AA"]
    assert [b"".join(raw_pieces(raw, *span)) for span in spans[:2]] == [b"QUJD", b"\n QQ==\n"]


def test_raw_pieces_cut_a_span_into_pieces_of_at_most_a_mebibyte() -> None:
    raw = os.urandom(3 * 1024 * 1024 + 10)
    pieces = list(raw_pieces(raw, 5, len(raw) - 7))
    assert [len(p) for p in pieces] == [1024 * 1024] * 3 + [len(raw) - 7 - 3 * 1024 * 1024]
    assert b"".join(pieces) == raw[5:-2]


class ChangingStore(MemoryStore):
    """A store whose package changes at rest after its first read (between the mailbox's check
    of a span and the sending of it)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def package_chunks(
        self, doc_id: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        self.reads += 1
        async for piece in super().package_chunks(doc_id, start, end):
            yield piece if self.reads == 1 else piece.replace(b"A", b"B", 1)


async def test_a_span_that_changes_while_it_is_sent_ends_in_a_store_error(
    shared_config: Config, clock: ManualClock
) -> None:
    store = ChangingStore()
    exchange = build_exchange(shared_config, clock, store=store)
    data = os.urandom(30_000)
    doc = NewEdoc(
        sender=Organ(G22),
        recipients=[Organ(A01)],
        document_id=f"{G22},2026/12/04,1/SPAN",
        subject="Hồ sơ",
        attachments=(Attachment("scan.pdf", "application/pdf", data),),
    )
    raw = sign_package(shared_config.certs, G22, build_edoc(doc, now=datetime.now(UTC)))
    accepted = await exchange.intake.submit(G22, raw)
    await exchange.carry_all()
    served = await exchange.mailbox.attachment(A01, accepted.id, "cid:1")  # checked: as accepted
    assert (served.size, store.reads) == (len(data), 1)
    with pytest.raises(StoreError, match="changed since it was accepted"):
        async for _ in served.pieces:
            pass
