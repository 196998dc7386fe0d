"""A package's bytes as the node holds them: in memory (small packages, receipts, tests), or in a
spool file the node wrote as the request body arrived (issue 13: one 50 MB package must not cost
the node several copies of itself). Either way it is read in pieces of at most ``PART_BYTES``.

The one module of ``gateway.domain`` that reads a file: a spool file is only ever read through
:func:`body_pieces` and :func:`body_bytes`, so every use case treats the two forms alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from gateway.errors import StoreError

PART_BYTES = 1 << 20  # a stored part, a piece read or streamed: at most this many bytes at once


@dataclass(frozen=True)
class Spooled:
    """A body in a spool file (owner-only, removed when its request ends): its path, its size and
    the SHA-256 (hex) of its bytes, counted as they were written."""

    path: str
    size: int
    sha256: str

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
    seen, digest = 0, hashlib.sha256()
    with open(body.path, "rb") as file:
        while (piece := file.read(size)) and seen + len(piece) <= body.size:
            seen += len(piece)
            digest.update(piece)
            yield piece
    if seen != body.size or piece or digest.hexdigest() != body.sha256:
        raise StoreError("a spool file changed after it was written; nothing was stored from it")


def body_bytes(body: Body) -> bytes:
    """The whole body in memory: for small bodies, and for the stores and tools that keep it so."""
    return body if isinstance(body, bytes) else b"".join(body_pieces(body))
