"""Waking replicas with PostgreSQL LISTEN/NOTIFY instead of tight polling.

Every transaction that adds work (a new document, a receipt, a re-drive) runs ``NOTIFY
gateway_work``; PostgreSQL delivers it, once per transaction, at commit, to every replica
listening. Each replica listens on one connection of its own, in a daemon thread, and wakes
its courier. SQLite has no such thing and needs none: one process owns the file.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import Connection, text

log = logging.getLogger(__name__)
CHANNEL = "gateway_work"


def notify_work(conn: Connection) -> None:
    """Announce new work; delivered at commit, so never before the work is visible."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"NOTIFY {CHANNEL}"))


class WorkListener:
    """Calls ``wake`` (from its own thread) whenever another transaction announced work."""

    def __init__(self, dsn: str, wake: Callable[[], None]) -> None:
        self._dsn = dsn
        self._wake = wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._wake()  # anything announced while we were not listening
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self._wake()
            except psycopg.Error as exc:
                log.warning("LISTEN connection lost (%s); reconnecting", exc.__class__.__name__)
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def listener_dsn(sqlalchemy_url: str) -> str | None:
    """The libpq DSN of a PostgreSQL SQLAlchemy URL; None for any other database."""
    if not sqlalchemy_url.startswith("postgresql"):
        return None
    return "postgresql://" + sqlalchemy_url.split("://", 1)[1]
