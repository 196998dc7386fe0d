"""Writing in a gateway home: the one atomic file writer, and owner-only directories.

A file is replaced whole: a reader (a running gateway, another command) sees the old file or
the new one, never a part, and a crash leaves one of them, never a half-written file (temp
file beside it, fsync, rename, fsync of the directory).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from gateway.errors import ConfigError


def make_dirs(path: Path) -> None:
    """Create ``path`` and missing parents as 0700 and tighten ``path`` itself to owner-only."""
    try:
        missing = [p for p in (path, *path.parents) if not p.exists()]
        for p in reversed(missing):
            try:
                p.mkdir(mode=0o700)
            except FileExistsError:
                continue  # made meanwhile by another process (two nodes of one home starting at once)
            os.chmod(p, 0o700)  # mkdir's mode is filtered by the umask; be exact
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, mode & ~0o077)
    except OSError as exc:
        raise ConfigError(f"cannot create or secure directory {path}: {exc.strerror}") from exc


def write_atomic(
    path: Path, data: bytes, mode: int | None = None, *, private_dir: bool = False, what: str = ""
) -> None:
    """Replace ``path`` with ``data``, atomically and durably.

    ``mode`` gives a new file's permissions (the umask applies, as to any new file); ``None``
    keeps those of the file replaced, exactly (0644 if there is none), so an operator's edit of
    the permissions survives and the gateway is never locked out of its own file.
    ``private_dir`` first makes the directory owner-only (:func:`make_dirs`), as the PKI
    directory is. Raises ``ConfigError`` "cannot write <what> <path>: <reason>".
    """
    if private_dir:
        make_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600 if mode is None else mode)
            try:
                if mode is None:
                    os.fchmod(fd, path.stat().st_mode & 0o777 if path.exists() else 0o644)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable, so a crash cannot bring back the old file
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise ConfigError(f"cannot write {what + ' ' if what else ''}{path}: {exc.strerror or exc}") from exc
