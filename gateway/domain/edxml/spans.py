"""Where an attachment's base64 text lies in the raw bytes of a package, and decoding that text
piece by piece, so that one attachment can be served from the stored package without parsing
it or holding it whole.

lxml gives no byte offsets, so the raw bytes are scanned for the ContentTransferEncoded elements
(any namespace prefix). A span found that way is only a candidate: the caller trusts it only
once decoding it gives exactly the digest of the attachment as read from the signed tree
(``gateway.domain.edxml.attachments.attachment_facts``); a CDATA section, a character
reference or a comment inside the text makes it differ, and the attachment then has no span.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable, Iterator

# XML white space (the only white space a base64 text in XML can hold as raw bytes).
XML_SPACE = b" \t\r\n"
PIECE = 1024 * 1024  # how much raw text is decoded at a time: the bound on memory

_START_TAG = re.compile(rb"<(?:[A-Za-z_][A-Za-z0-9_.\-]*:)?ContentTransferEncoded(?=[\s/>])")


class Base64Pieces:
    """Decodes base64 given in pieces of any size: XML white space is dropped, the characters
    left over past a multiple of four are carried into the next piece, and anything that is not
    strict base64 (another character, data after the padding, a truncated end) raises
    ``binascii.Error`` — the caller says what that means where it decodes."""

    def __init__(self) -> None:
        self._carry = b""
        self._ended = False  # padding seen: nothing may follow

    def feed(self, piece: bytes) -> bytes:
        data = self._carry + piece.translate(None, XML_SPACE)
        cut = len(data) - len(data) % 4
        self._carry = data[cut:]
        if not cut:
            return b""
        if self._ended:
            raise binascii.Error("data after the base64 padding")
        self._ended = data[cut - 1] == ord("=")
        return binascii.a2b_base64(data[:cut], strict_mode=True)

    def finish(self) -> None:
        """The text has ended: refuse a remainder that is not a whole group of four."""
        if self._carry:
            raise binascii.Error("the base64 text ends in the middle of a group of four")


def decoded(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """The decoded bytes of a base64 text given in pieces (empty pieces left out)."""
    decoder = Base64Pieces()
    for piece in pieces:
        out = decoder.feed(piece)
        if out:
            yield out
    decoder.finish()


def raw_pieces(raw: bytes, offset: int, length: int) -> Iterator[bytes]:
    """``raw[offset:offset + length]`` in pieces of at most ``PIECE`` bytes."""
    for start in range(offset, offset + length, PIECE):
        yield raw[start : min(start + PIECE, offset + length)]


def encoded_spans(raw: bytes) -> list[tuple[int, int]]:
    """(offset, length) of the text of each ContentTransferEncoded element in ``raw``, in
    document order, up to the first ``<`` after its start tag (an empty element: length 0).

    One linear scan. Candidates only: one inside a comment, an element of another namespace or
    an attribute holding ``>`` gives a wrong span, which the digest check then refuses."""
    spans = []
    for match in _START_TAG.finditer(raw):
        close = raw.find(b">", match.end())
        if close < 0:
            break
        start = close + 1
        if raw[close - 1 : close] == b"/":
            spans.append((start, 0))
            continue
        end = raw.find(b"<", start)
        if end < 0:
            break
        spans.append((start, end - start))
    return spans
