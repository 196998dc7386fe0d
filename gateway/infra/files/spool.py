"""The spool: request bodies written to disk as they arrive, so a 50 MB package is never held in
the node whole (issue 13).

Each upload gets owner-only files named after it in the node's spool directory (its body, and
the ciphertext of a classified package beside it), removed when its request ends, whatever
happens; those of a node that was killed are removed when it starts again (:meth:`Spool.clear`).
A body up to ``in_memory`` bytes stays in memory: for a 12 KB package a file costs more than the
copy it saves.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

from gateway.domain.body import PART_BYTES, Body, RecordSealer, Spooled
from gateway.domain.transfer import split_head
from gateway.errors import DeliveryError, PackageTooLarge

log = logging.getLogger(__name__)

IN_MEMORY_BYTES = PART_BYTES  # bodies up to this size are not spooled
_PREFIX = "up-"
_WRITE_IN_THREAD = 64 * 1024  # chunks from this size are hashed and written off the event loop


class Spool:
    """The node's spool directory (owner-only); every file in it belongs to one running request."""

    def __init__(self, directory: Path, *, in_memory: int = IN_MEMORY_BYTES) -> None:
        self.directory = directory
        self._in_memory = in_memory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)

    def clear(self) -> int:
        """Remove what uploads of a previous run left (the node was killed mid-request); at start,
        before any request is served. Returns how many files went."""
        removed = 0
        for path in self.directory.glob(_PREFIX + "*"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        if removed:
            log.info("removed %d spool files left by the previous run", removed)
        return removed

    @contextlib.contextmanager
    def upload(self) -> Iterator[Upload]:
        """One request's files: gone when the block ends (answer, refusal, disconnect, cancel)."""
        upload = Upload(self.directory / f"{_PREFIX}{secrets.token_hex(16)}", self._in_memory)
        try:
            yield upload
        finally:
            upload.remove()


class Upload:
    """The files of one request: its body (``path``) and any made from it (``path`` + suffix)."""

    def __init__(self, path: Path, in_memory: int) -> None:
        self.path = path
        self._in_memory = in_memory
        self._spooled = False  # nothing on disk (a small body): nothing to remove, no syscall

    async def take(
        self, chunks: AsyncIterator[bytes], *, limit: int, expected: int | None = None, sealed: bool = True
    ) -> Body:
        """The body from ``chunks``, refused past ``limit`` bytes as it arrives: in memory when it
        is small (``expected``, its Content-Length, says so, or it ends before the threshold),
        else in this upload's file, with its SHA-256 counted as it is written, and sealed with a
        key of its own (``sealed``; see ``gateway.domain.body.RecordSealer``) unless the body can
        never be classified plaintext (a peer's transfer: the sender's unclassified package or
        the recipients' ciphertext)."""
        digest, size = hashlib.sha256(), 0
        held: list[bytes] = []
        fd: int | None = None
        spool = expected is None or expected > self._in_memory
        sealer = RecordSealer() if sealed else None
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise PackageTooLarge(f"the body is over {limit} bytes, the limit")
                if fd is None and (not spool or size <= self._in_memory):
                    held.append(chunk)
                    continue
                if fd is None:
                    self._spooled = True
                    fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    for piece in held:
                        _write(fd, digest, piece, sealer)
                    held.clear()
                if len(chunk) >= _WRITE_IN_THREAD:
                    await asyncio.to_thread(_write, fd, digest, chunk, sealer)
                else:
                    _write(fd, digest, chunk, sealer)
            if fd is not None and sealer is not None:
                _write_all(fd, sealer.finish())
        finally:
            if fd is not None:
                os.close(fd)
        if fd is None:
            return b"".join(held)
        return Spooled(str(self.path), size, digest.hexdigest(), sealer.key if sealer else None)

    async def take_framed(
        self, read: Callable[[int], Awaitable[bytes]], *, limit: int, max_sealed: int
    ) -> tuple[bytes, Body]:
        """A sealed header and its package as one body (``gateway.domain.transfer.framing``), read
        with ``read(n)`` (up to ``n`` bytes; empty at the end) as it arrives: the header into
        memory, the package into this upload (spooled when large, its SHA-256 counted on the way
        in, so that checking it against the seal needs no second pass), then exactly the closing
        boundary. A package over ``limit`` bytes is refused before any of it is taken. Never
        classified plaintext (a sender's unclassified package, or ciphertext): not sealed."""
        buffer = b""
        while (head := split_head(buffer, max_sealed=max_sealed)) is None:
            chunk = await read(64 * 1024)
            if not chunk:
                raise DeliveryError("the delivery ended before its package")
            buffer += chunk
        sealed, size, tail, at = head
        if size > limit:
            raise PackageTooLarge(f"the delivered package is {size} bytes; the limit is {limit}")
        rest = buffer[at:]
        del buffer

        async def package_bytes() -> AsyncIterator[bytes]:
            nonlocal rest
            remaining = size
            if rest:
                first, rest = rest[:remaining], rest[remaining:]
                remaining -= len(first)
                yield first
            while remaining > 0:
                chunk = await read(min(remaining, PART_BYTES))
                if not chunk:
                    raise DeliveryError("part 2 of the delivery is not as long as it says")
                remaining -= len(chunk)
                yield chunk

        package = await self.take(package_bytes(), limit=size, expected=size, sealed=False)
        while len(rest) <= len(tail) and (chunk := await read(len(tail) + 1 - len(rest))):
            rest += chunk
        if rest != tail:
            raise DeliveryError("part 2 of the delivery is not as long as it says, or bytes follow it")
        return sealed, package

    def remove(self) -> None:
        """Remove the body's file and those made from it (only a spooled body has any)."""
        if not self._spooled:
            return
        for path in self.path.parent.glob(self.path.name + "*"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _write(fd: int, digest: hashlib._Hash, data: bytes, sealer: RecordSealer | None) -> None:
    digest.update(data)
    _write_all(fd, sealer.feed(data) if sealer is not None else [data])


def _write_all(fd: int, pieces: list[bytes]) -> None:
    for data in pieces:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
