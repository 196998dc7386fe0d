"""Streamed decryption (gateway.crypto.xmlenc.read_encrypted / decrypt_streamed): the same result
as decrypt_element for every size and every way the raw bytes are cut into pieces, the same
refusals, and no plaintext handed out or kept when the tag fails. Real keys made at test time."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from lxml import etree

import gateway.crypto.xmlenc as xmlenc
from gateway.crypto.pki import KeyType
from gateway.crypto.xmlenc import (
    AES256_GCM,
    STREAM_FROM,
    XENC,
    PieceReader,
    Skeleton,
    decrypt_element,
    decrypt_streamed,
    encrypt_element,
    read_encrypted,
)
from gateway.domain.xmlsafe import parse_xml
from gateway.errors import AlgorithmRefused, DecryptionFailed, MalformedEncryptedData
from tests.test_xmlenc import Agency, Pki

MIB = 1024 * 1024
SECRET = "Tuyệt mật"


@pytest.fixture(scope="module")
def dev_pki() -> Pki:
    return Pki.fresh()


@pytest.fixture(scope="module")
def g22(dev_pki: Pki) -> Agency:
    return dev_pki.leaf(KeyType.RSA2048, "000.00.00.G22")


@pytest.fixture(scope="module")
def a01(dev_pki: Pki) -> Agency:
    return dev_pki.leaf(KeyType.P256, "000.00.00.A01")


@pytest.fixture(params=["rsa", "ec"])
def addressee(request: pytest.FixtureRequest, g22: Agency, a01: Agency) -> Agency:
    return g22 if request.param == "rsa" else a01


def of_size(size: int) -> etree._Element:
    """An element whose UTF-8 serialization is exactly ``size`` bytes (20 or more), Vietnamese in it."""
    head = f"<c>{SECRET}".encode()
    tail = b"</c>"
    filler = size - len(head) - len(tail)
    assert filler >= 0
    return parse_xml(head + b"x" * filler + tail)


def raw_of(element: etree._Element, recipients: list[Agency]) -> bytes:
    """The EncryptedData as it travels: ``encrypt_element``'s tree, serialized as the node stores it."""
    encrypted = encrypt_element(element, [r.recipient for r in recipients])
    return bytes(etree.tostring(encrypted, encoding="UTF-8"))


def reader(raw: bytes, piece: int) -> PieceReader:
    """``raw`` read in pieces of ``piece`` bytes, as a spool file or a slow network gives them."""

    def read(offset: int, length: int) -> Iterator[bytes]:
        for at in range(offset, offset + length, piece):
            yield raw[at : min(at + piece, offset + length)]

    return read


def streamed(raw: bytes, who: Agency, piece: int = MIB) -> bytearray:
    skeleton = read_encrypted(reader(raw, piece), len(raw))
    return decrypt_streamed(skeleton, private_key=who.key, certificate=who.cert)


def one_shot(raw: bytes, who: Agency) -> bytes:
    element = decrypt_element(parse_xml(raw, max_bytes=len(raw)), private_key=who.key, certificate=who.cert)
    return bytes(etree.tostring(element, encoding="UTF-8"))


def cipher_text_span(raw: bytes) -> tuple[int, int]:
    """Where the EncryptedData's own (last) CipherValue text lies in ``raw``."""
    *_, last = re.finditer(rb"<xenc:CipherValue>([^<]*)</xenc:CipherValue>", raw)
    return last.start(1), last.end(1)


# --- the same bytes as one-shot decryption --------------------------------------------------------


@pytest.mark.parametrize("size", [20, 21, 40, 3000, STREAM_FROM, MIB - 1, MIB, MIB + 1, 3 * MIB + 7])
def test_streamed_decryption_gives_the_bytes_one_shot_decryption_gives(addressee: Agency, size: int) -> None:
    element = of_size(size)
    plaintext = etree.tostring(element, encoding="UTF-8", xml_declaration=False, with_tail=False)
    raw = raw_of(element, [addressee])
    pieces = [MIB, 4093] if size > 4 * STREAM_FROM else [MIB, 1, 7, 4093]
    for piece in pieces:
        got = streamed(raw, addressee, piece)
        assert got == plaintext, piece
    # What the agency keeps is these bytes as they are: serializing the parsed tree again, as the
    # one-shot path did, gives exactly them (encrypt_element wrote them with lxml, UTF-8, no declaration).
    assert one_shot(raw, addressee) == plaintext


@pytest.mark.parametrize("size", [0, 1, 11, 12, 13, 15, 16, 17, 100, MIB - 1, MIB + 1])
def test_gcm_in_pieces_opens_what_aesgcm_sealed_for_every_split(size: int) -> None:
    key = AESGCM.generate_key(bit_length=256)
    iv = os.urandom(12)
    plaintext = os.urandom(size)
    sealed = iv + AESGCM(key).encrypt(iv, plaintext, None)
    for piece in (1, 5, 12, 16, 17, 28, 65536, len(sealed)):
        if size > 4096 and piece < 4096:
            continue
        out = bytearray()
        xmlenc._open_gcm(key, (sealed[at : at + piece] for at in range(0, len(sealed), piece)), out)
        assert out == plaintext, piece


# --- tampering: refused, and nothing of the plaintext kept ----------------------------------------


@pytest.mark.parametrize("where", ["iv", "first", "middle", "last", "tag-first", "tag-last"])
def test_a_flipped_byte_anywhere_in_the_content_is_refused_and_nothing_is_kept(
    g22: Agency, where: str
) -> None:
    key = AESGCM.generate_key(bit_length=256)
    iv = os.urandom(12)
    sealed = bytearray(iv + AESGCM(key).encrypt(iv, os.urandom(MIB + 3), None))
    index = {"iv": 0, "first": 12, "middle": len(sealed) // 2, "last": -17, "tag-first": -16, "tag-last": -1}
    sealed[index[where]] ^= 0x01
    out = bytearray()
    with pytest.raises(DecryptionFailed, match="ciphertext or its tag was altered"):
        xmlenc._open_gcm(key, (bytes(sealed[at : at + 4093]) for at in range(0, len(sealed), 4093)), out)
    assert out == bytearray()  # the unauthenticated plaintext was wiped, not handed out


@pytest.mark.parametrize("where", ["first", "middle", "last", "tag"])
def test_a_flipped_byte_in_the_cipher_value_text_is_refused(addressee: Agency, where: str) -> None:
    raw = raw_of(of_size(2 * MIB), [addressee])
    start, end = cipher_text_span(raw)
    sealed = bytearray(base64.b64decode(raw[start:end]))
    sealed[{"first": 12, "middle": len(sealed) // 2, "last": -17, "tag": -1}[where]] ^= 0x80
    tampered = raw[:start] + base64.b64encode(bytes(sealed)) + raw[end:]
    with pytest.raises(DecryptionFailed, match="ciphertext or its tag was altered") as info:
        streamed(tampered, addressee)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("inserted", "match"),
    [
        (b"<![CDATA[AAAA]]>", "not its CipherValue alone"),
        (b"<!-- a note -->", "not its CipherValue alone"),
        (b"&#65;", "entity or character reference"),
        (b"&amp;", "entity or character reference"),
        (b"<xenc:CipherValue>AAAA</xenc:CipherValue>", "not its CipherValue alone"),
        (b"!!!!", "empty or not base64"),
    ],
)
def test_markup_or_references_inside_the_cipher_value_are_refused(
    g22: Agency, inserted: bytes, match: str
) -> None:
    raw = raw_of(of_size(MIB), [g22])
    start, end = cipher_text_span(raw)
    middle = start + (end - start) // 2 // 4 * 4
    with pytest.raises(MalformedEncryptedData, match=match):
        streamed(raw[:middle] + inserted + raw[middle:], g22)


def test_a_second_long_cipher_value_is_refused(g22: Agency) -> None:
    raw = raw_of(of_size(MIB), [g22])
    start, end = cipher_text_span(raw)
    text = raw[start:end]
    # The content's CipherValue twice, in two CipherData: one-shot decryption refuses it as well.
    close = raw.index(b"</xenc:CipherData>") + len(b"</xenc:CipherData>")
    doubled = (
        raw[:close] + b"<xenc:CipherData><xenc:CipherValue>" + text + b"</xenc:CipherValue></xenc:CipherData>"
    )
    doubled += raw[close:]
    with pytest.raises(MalformedEncryptedData, match="second long CipherValue"):
        streamed(doubled, g22)
    with pytest.raises(MalformedEncryptedData, match="exactly one"):
        one_shot(doubled, g22)


def test_a_long_cipher_value_text_elsewhere_is_refused(g22: Agency) -> None:
    raw = raw_of(of_size(100), [g22])  # the content's own is short: not left out
    filler = base64.b64encode(os.urandom(STREAM_FROM))
    hidden = raw.replace(
        b"</xenc:EncryptedData>",
        b"<!--<xenc:CipherValue>" + filler + b"</xenc:CipherValue>-->" + b"</xenc:EncryptedData>",
    )
    with pytest.raises(MalformedEncryptedData, match="not its CipherValue alone"):
        streamed(hidden, g22)


def test_the_one_shot_refusals_hold_for_a_streamed_reading(g22: Agency) -> None:
    raw = raw_of(of_size(MIB), [g22])
    # The last CipherData is the EncryptedData's own (the others are its EncryptedKeys').
    last = raw.rindex(b"</xenc:CipherData>")
    reference = raw[:last] + b'<xenc:CipherReference URI="http://example.invalid/c"/>' + raw[last:]
    with pytest.raises(MalformedEncryptedData, match="CipherReference"):
        streamed(reference, g22)
    cbc = raw.replace(AES256_GCM.encode(), f"{XENC}aes256-cbc".encode(), 1)
    with pytest.raises(AlgorithmRefused, match="padding-oracle"):
        streamed(cbc, g22)
    assert isinstance(read_encrypted(reader(raw, MIB), len(raw)), Skeleton)


def test_the_skeleton_holds_no_long_text_and_parses_within_the_default_limits(g22: Agency) -> None:
    raw = raw_of(of_size(3 * MIB), [g22])
    skeleton = read_encrypted(reader(raw, MIB), len(raw))
    assert len(etree.tostring(skeleton.element)) < 8 * 1024  # the 4 MB text is not in it
    assert skeleton.element.tag == f"{{{XENC}}}EncryptedData"
    start, end = cipher_text_span(raw)
    assert skeleton.span == (start, end - start)
