"""A package's bytes as the node holds them: in memory (small packages, receipts, tests), or in a
spool file the node wrote as the request body arrived (issue 13: one 50 MB package must not cost
the node several copies of itself). Either way it is read in pieces of at most ``PART_BYTES``.

The one module of ``gateway.domain`` that reads a file: a spool file is only ever read through
:func:`body_pieces` and :func:`body_bytes`, so every use case treats the two forms alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import StoreError

PART_BYTES = 1 << 20  # a stored part, a piece read or streamed: at most this many bytes at once


@dataclass(frozen=True)
class Spooled:
    """A body in a spool file (owner-only, removed when its request ends): its path, its size and
    the SHA-256 (hex) of its bytes, counted as they were written."""

    path: str
    size: int
    sha256: str
    # With a key, the file holds the body sealed with AES-256-GCM in records of PART_BYTES (see
    # :class:`RecordSealer`): a package sent to the API may be classified plaintext, which must
    # never lie readable on disk, not even for the length of its request or after a kill. The
    # key is made for this one file and lives only in memory (the node's, and a checker's while
    # it reads the file); it is never printed.
    key: bytes | None = field(default=None, repr=False)

    def derived(self, suffix: str) -> str:
        """The path of a file made from this one (the ciphertext of a classified package): beside
        it, named after it, so that what removes the request's files removes that one too."""
        return self.path + suffix


Body = bytes | Spooled


def body_size(body: Body) -> int:
    return len(body) if isinstance(body, bytes) else body.size


def body_sha256(body: Body) -> str:
    """The SHA-256 (hex) of the body: a spool file's was counted as it was written."""
    return hashlib.sha256(body).hexdigest() if isinstance(body, bytes) else body.sha256


def body_pieces(body: Body, size: int = PART_BYTES) -> Iterator[bytes]:
    """The body in order, ``size`` bytes at a time (the last piece shorter). A spool file that is
    no longer what was counted as it was written (its size or its SHA-256) raises a store error
    after its last piece: whoever stores the pieces rolls back, nothing is kept of it."""
    if isinstance(body, bytes):
        view = memoryview(body)
        for at in range(0, len(view), size):
            yield bytes(view[at : at + size])
        return
    if body.key is not None:
        yield from _opened_records(body)
        return
    seen, digest = 0, hashlib.sha256()
    with open(body.path, "rb") as file:
        while (piece := file.read(size)) and seen + len(piece) <= body.size:
            seen += len(piece)
            digest.update(piece)
            yield piece
    if seen != body.size or piece or digest.hexdigest() != body.sha256:
        raise StoreError(_CHANGED)


_CHANGED = "a spool file changed after it was written; nothing was stored from it"
_TAG = 16


def _nonce(index: int) -> bytes:
    # One key per file, so the record's index is a nonce never used twice with it.
    return index.to_bytes(12, "big")


class RecordSealer:
    """Seals a body as it is written to its spool file: AES-256-GCM over records of ``PART_BYTES``
    of plaintext (the last shorter), each with its index as nonce and in its associated data, so
    that a record cannot be moved, dropped or altered unseen; the size and SHA-256 recorded with
    the file catch a truncated end. :func:`body_pieces` opens them again."""

    def __init__(self) -> None:
        self.key = AESGCM.generate_key(bit_length=256)
        self._aead = AESGCM(self.key)
        self._index = 0
        self._held = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The sealed records ``data`` completes (none until a record's worth has come)."""
        self._held += data
        out = []
        while len(self._held) >= PART_BYTES:
            out.append(self._seal(bytes(self._held[:PART_BYTES])))
            del self._held[:PART_BYTES]
        return out

    def finish(self) -> list[bytes]:
        """The last, shorter record (none if the body ended on a record's boundary)."""
        if not self._held:
            return []
        record, self._held = self._seal(bytes(self._held)), bytearray()
        return [record]

    def _seal(self, plaintext: bytes) -> bytes:
        nonce = _nonce(self._index)
        self._index += 1
        return self._aead.encrypt(nonce, plaintext, nonce)


def _opened_records(body: Spooled) -> Iterator[bytes]:
    assert body.key is not None
    aead, seen, digest, index = AESGCM(body.key), 0, hashlib.sha256(), 0
    with open(body.path, "rb") as file:
        while seen < body.size:
            record = file.read(min(PART_BYTES, body.size - seen) + _TAG)
            try:
                piece = aead.decrypt(_nonce(index), record, _nonce(index))
            except InvalidTag:
                raise StoreError(_CHANGED) from None
            index += 1
            seen += len(piece)
            digest.update(piece)
            yield piece
        rest = file.read(1)
    if seen != body.size or rest or digest.hexdigest() != body.sha256:
        raise StoreError(_CHANGED)


def body_bytes(body: Body) -> bytes:
    """The whole body in memory: for small bodies, and for the stores and tools that keep it so."""
    if isinstance(body, bytes):
        return body
    if body.key is not None:
        return b"".join(body_pieces(body))
    # One read into one bytes object: joining pieces would hold the body twice for a moment.
    with open(body.path, "rb") as file:
        data = file.read(body.size + 1)
    if len(data) != body.size or hashlib.sha256(data).hexdigest() != body.sha256:
        raise StoreError(_CHANGED)
    return data


def body_range(body: Body, offset: int, length: int, size: int = PART_BYTES) -> Iterator[bytes]:
    """``length`` bytes of the body from ``offset``, ``size`` at a time: a part of a body already
    read whole (and so checked) once, such as the CipherValue text of an EncryptedData. A spool
    file without a key only: a sealed one is read whole, through :func:`body_pieces`."""
    if isinstance(body, bytes):
        for at in range(offset, offset + length, size):
            yield body[at : min(at + size, offset + length)]
        return
    if body.key is not None:
        raise StoreError("a sealed spool file is read whole, not by range")
    with open(body.path, "rb") as file:
        file.seek(offset)
        left = length
        while left > 0:
            piece = file.read(min(size, left))
            if not piece:
                raise StoreError(_CHANGED)
            left -= len(piece)
            yield piece
