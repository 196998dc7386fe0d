"""Where a running node listens, recorded in its home so the next command there reaches it.

``gateway serve --port 9555`` (or a port from its config) writes ``HOME/run/<config>.url``: the
URL on the first line, the serving process's id on the second; it removes the file when it
stops. A client command in the same home with the same config reads it, unless told otherwise
(``--url``, ``GATEWAY_URL``). A file left by a process that is gone (killed) is ignored.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from gateway.infra.files.atomic import write_atomic

RUN_DIR = "run"


def record_path(home: Path, config_file: Path | None) -> Path:
    """The record of the node that runs in ``home`` with ``config_file`` (default: gateway.toml)."""
    name = config_file.name if config_file is not None else "gateway.toml"
    return home / RUN_DIR / f"{name}.url"


def record(path: Path, url: str) -> None:
    write_atomic(path, f"{url}\n{os.getpid()}\n".encode(), 0o644, private_dir=True)


def clear(path: Path) -> None:
    """Remove the record if it is this process's own (a second node may have taken the name)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        if int(path.read_text().split()[1]) == os.getpid():
            path.unlink()


def recorded(path: Path) -> str | None:
    """The URL a live node recorded at ``path``, or None."""
    try:
        url, pid = path.read_text().split()[:2]
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return None  # the node was killed without removing its record
    except PermissionError:
        return url  # it exists, under another user
    except (OSError, ValueError):
        return None
    return url
