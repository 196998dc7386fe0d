"""Request bodies spooled to disk as they arrive (issue 13): the spool's files and their clean-up,
and the hardened parser reading a spooled file with the same checks as bytes."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.domain.body import PART_BYTES, Spooled, body_bytes
from gateway.domain.xmlsafe import XmlLimits, parse_xml, parse_xml_file
from gateway.errors import GatewayError, PackageTooLarge, StoreError
from gateway.infra.files.spool import Spool


async def arriving(data: bytes, piece: int = 100_000) -> AsyncIterator[bytes]:
    for at in range(0, len(data), piece):
        yield data[at : at + piece]


async def test_a_small_body_stays_in_memory_and_a_large_one_is_spooled_owner_only(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", in_memory=1000)
    assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o700
    with spool.upload() as upload:
        small = await upload.take(arriving(b"x" * 1000), limit=10_000, expected=1000)
        assert small == b"x" * 1000 and list(spool.directory.iterdir()) == []
    data = os.urandom(250_001)
    with spool.upload() as upload:
        # Sent without a Content-Length (chunked): spooled once past the threshold.
        body = await upload.take(arriving(data), limit=300_000, expected=None)
        assert isinstance(body, Spooled) and body.size == len(data)
        assert body.sha256 == hashlib.sha256(data).hexdigest() and body_bytes(body) == data
        assert stat.S_IMODE(os.stat(body.path).st_mode) == 0o600
        Path(body.derived(".enc")).write_bytes(b"ciphertext")  # as a checker writes one beside it
    assert list(spool.directory.iterdir()) == []  # the request ended: its files went with it


async def test_an_agencys_upload_is_never_on_disk_in_clear(tmp_path: Path) -> None:
    """A package sent to the API may be classified plaintext: its spool file holds it sealed with a
    key of its own (AES-256-GCM records), so neither the file nor what a kill leaves can be read."""
    spool = Spool(tmp_path / "spool", in_memory=1000)
    marker = "Tài liệu Tối mật: kế hoạch".encode()
    data = (marker + os.urandom(1000)) * (2 * PART_BYTES // 1000 + 7)  # three records, the last short
    with spool.upload() as upload:
        body = await upload.take(arriving(data, piece=300_000), limit=len(data), expected=len(data))
        assert isinstance(body, Spooled) and body.key is not None
        on_disk = Path(body.path).read_bytes()
        assert marker not in on_disk and len(on_disk) == len(data) + 3 * 16
        assert body_bytes(body) == data
        assert body.key.hex() not in repr(body)  # the key is never printed with the file
    # A transfer from a peer is never classified plaintext: spooled as it came.
    with spool.upload() as upload:
        plain = await upload.take(arriving(data), limit=len(data), expected=len(data), sealed=False)
        assert isinstance(plain, Spooled) and plain.key is None
        assert Path(plain.path).read_bytes() == data


@pytest.mark.parametrize("change", ["flip", "swap", "cut"])
async def test_a_sealed_spool_file_changed_on_disk_is_refused(tmp_path: Path, change: str) -> None:
    spool = Spool(tmp_path / "spool", in_memory=1000)
    data = os.urandom(2 * PART_BYTES + 5000)
    with spool.upload() as upload:
        body = await upload.take(arriving(data, piece=PART_BYTES), limit=len(data), expected=len(data))
        assert isinstance(body, Spooled)
        raw = bytearray(Path(body.path).read_bytes())
        record = PART_BYTES + 16
        if change == "flip":
            raw[record + 10] ^= 1
        elif change == "swap":  # two whole records in each other's place
            raw[:record], raw[record : 2 * record] = raw[record : 2 * record], raw[:record]
        else:
            del raw[2 * record :]
        Path(body.path).write_bytes(bytes(raw))
        with pytest.raises(StoreError):
            body_bytes(body)


async def test_a_body_over_the_limit_is_refused_as_it_arrives_and_leaves_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", in_memory=1000)
    seen = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal seen
        while True:
            seen += 1
            yield b"y" * 50_000

    with pytest.raises(PackageTooLarge), spool.upload() as upload:
        await upload.take(endless(), limit=200_000)
    assert seen == 5 and list(spool.directory.iterdir()) == []  # stopped at the first byte too many


def test_what_a_killed_run_left_is_cleared_at_start(tmp_path: Path) -> None:
    (tmp_path / "spool").mkdir()
    for name in ("up-1", "up-1.enc", "up-2"):
        (tmp_path / "spool" / name).write_bytes(b"half a package")
    assert Spool(tmp_path / "spool").clear() == 3
    assert list((tmp_path / "spool").iterdir()) == []


GOOD = b'<?xml version="1.0" encoding="UTF-8"?>\n<!-- a note --><a xmlns="urn:x"><b c="1">t\xc3\xa9</b></a>'
BAD = {
    "doctype": b'<?xml version="1.0"?><!-- x --><!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>',
    "utf16": "<a/>".encode("utf-16"),
    "nul": b"<a>\x00</a>",
    "latin1": b'<?xml version="1.0" encoding="ISO-8859-1"?><a/>',
    "pi": b"<a><?php x ?></a>",
    "deep": b"<a>" * 10 + b"</a>" * 10,
    "empty": b"  \n",
    "malformed": b"<a><b></a>",
    "large": b"<a>" + b"x" * 5000 + b"</a>",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_spooled_file_is_refused_exactly_as_the_same_bytes_are(tmp_path: Path, case: str) -> None:
    limits = XmlLimits(max_depth=8, max_bytes=4096)
    path = tmp_path / "up-x"
    path.write_bytes(BAD[case])
    with pytest.raises(GatewayError) as from_bytes:
        parse_xml(BAD[case], limits=limits)
    with pytest.raises(GatewayError) as from_file:
        parse_xml_file(str(path), limits=limits)
    assert (type(from_file.value), from_file.value.message) == (
        type(from_bytes.value),
        from_bytes.value.message,
    )


def test_a_spooled_file_parses_as_the_same_bytes_do(tmp_path: Path) -> None:
    path = tmp_path / "up-y"
    path.write_bytes(GOOD)
    from_file = parse_xml_file(str(path))
    assert from_file.tag == "{urn:x}a" and from_file[0].text == "té" and from_file[0].get("c") == "1"
