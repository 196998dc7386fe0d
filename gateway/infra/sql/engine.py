"""Engines for the two databases (SQLite in WAL mode with the pragmas the store relies on, or a
PostgreSQL connection pool) and ``Database``, the group-commit writer and readers over one.

This module is the one place where driver errors (``SQLAlchemyError`` and the DBAPI errors it
wraps) become ``gateway.errors.StoreError``: nothing above ``gateway.infra.sql`` sees a driver type.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from gateway.errors import ClientError, StoreError
from gateway.infra.sql.chain import chain_pending_events, drop_events, held_events, hold_events

log = logging.getLogger(__name__)
T = TypeVar("T")


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of an SQLite file."""
    return f"sqlite:///{path}"


def make_engine(url: str, synchronous: str = "FULL") -> Engine:
    """An engine for ``url``; ``synchronous`` is SQLite's durability pragma (FULL: fsync at commit)."""
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:" and not os.path.exists(path):
            # Owner-only from the start: the file holds every package; SQLite gives -wal/-shm the same mode.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        engine = create_engine(url, connect_args={"check_same_thread": False, "isolation_level": None})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.close()

        # pysqlite's own transaction handling breaks SAVEPOINT; take BEGIN into our hands.
        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=4, max_overflow=4, pool_pre_ping=True)


def store_error(what: str, exc: SQLAlchemyError, *, detail: bool = False) -> StoreError:
    """The one translation of a driver error: its class name, and only with ``detail`` its text
    (which may quote statements and values: for the operator's own command, not for a client)."""
    message = f"{what}: {exc.__class__.__name__}" + (f": {exc}" if detail else "")
    error = StoreError(message)
    error.__cause__ = exc
    return error


@contextmanager
def driver_errors(what: str, *, detail: bool = False) -> Iterator[None]:
    """Driver errors raised inside become ``StoreError`` (see ``store_error``)."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise store_error(what, exc, detail=detail) from exc


def in_savepoint(conn: Connection, write: Callable[[], None]) -> Exception | None:
    """Run ``write`` in a SAVEPOINT; a unique or foreign-key constraint it breaks rolls only the
    savepoint back and is returned (the transaction goes on), so the caller can look why. To
    report it as a store error, raise it again: ``Database`` translates it."""
    try:
        with conn.begin_nested():
            write()
    except IntegrityError as exc:
        return exc
    return None


class Database:
    """One database as the store and the operators' reads use it: one writer thread, a small
    pool of readers, and driver errors turned into ``StoreError``.

    Writes go through the writer thread, which commits whatever has queued up in a single
    transaction (group commit): with ``synchronous=FULL`` a document is on disk before its 202,
    and a burst of submissions costs one fsync, not one each. An operation that fails is told
    so and the others commit: when one raises, the batch is run again with each operation in its
    own SAVEPOINT, and the failing one is rolled back with the delivery-log records it appended
    (``gateway.infra.sql.chain``). Operations are therefore run at most twice, and only what
    they wrote in the committed attempt is kept. Reads use connections of their
    own, which WAL lets run beside the writer.
    """

    def __init__(
        self,
        url: str,
        *,
        synchronous: str = "FULL",
        writer: str | None = None,
        prepare: Callable[[Engine], object] | None = None,
    ) -> None:
        """``writer``: the node writing, recorded with each delivery-log record (``None`` for the
        command line). ``prepare`` runs on the engine before any work (the store's migrations)."""
        self.url = url
        self.writer = writer
        with driver_errors(f"cannot open the database {url}"):
            self._engine = make_engine(url, synchronous)
            if prepare is not None:
                prepare(self._engine)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="store-reader")
        self._queue: list[tuple[Callable[[Connection], Any], asyncio.Future[Any]]] = []
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None

    async def write(self, op: Callable[[Connection], T]) -> T:
        """Run ``op`` in the writer's next group commit; its result once the batch is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        # Run the operation in its caller's context, so the request id reaches the records it logs.
        context = contextvars.copy_context()
        self._queue.append((lambda conn: context.run(op, conn), future))
        if not self._flushing:
            self._flushing = True
            self._flusher = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    outcomes = await loop.run_in_executor(
                        self._writer, self._run_batch, [op for op, _ in batch]
                    )
                except BaseException as exc:
                    # Nothing of this batch is known to be stored: say so to every caller, then stop.
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(
                                exc
                                if isinstance(exc, Exception)
                                else StoreError("the database writer stopped")
                            )
                    raise
                for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        finally:
            self._flushing = False

    def _run_batch(self, ops: list[Callable[[Connection], Any]]) -> list[tuple[bool, Any]]:
        # Almost every batch succeeds whole: run it without a savepoint per operation (two
        # statements each, a tenth of the writer's time in bench/store_writes.py). If any
        # operation raises, nothing of that attempt is kept, and the batch runs again with one
        # savepoint per operation, so that only the failing one is rolled back.
        outcomes = self._run_whole(ops)
        return outcomes if outcomes is not None else self._run_each_in_savepoint(ops)

    def _run_whole(self, ops: list[Callable[[Connection], Any]]) -> list[tuple[bool, Any]] | None:
        with self._engine.connect() as conn:
            try:
                transaction = conn.begin()
                hold_events(conn, self.writer)
                results = [op(conn) for op in ops]
            except Exception:
                conn.rollback()
                return None  # run again, each operation in its own savepoint
            try:
                chain_pending_events(conn)
                transaction.commit()
            except SQLAlchemyError as exc:
                # The commit itself failed: nothing of this batch is stored, so nobody may be told it is.
                log.error("store commit failed: %s", exc)
                error = store_error("database commit failed", exc)
                return [(False, error) for _ in ops]
        return [(True, result) for result in results]

    def _run_each_in_savepoint(self, ops: list[Callable[[Connection], Any]]) -> list[tuple[bool, Any]]:
        outcomes: list[tuple[bool, Any]] = []
        try:
            with self._engine.connect() as conn, conn.begin():
                hold_events(conn, self.writer)
                for op in ops:
                    mark = held_events(conn)
                    try:
                        with conn.begin_nested():
                            outcomes.append((True, op(conn)))
                    except ClientError as exc:
                        drop_events(conn, mark)  # its savepoint is gone: so are its records
                        outcomes.append((False, exc))
                    except SQLAlchemyError as exc:
                        drop_events(conn, mark)
                        log.error("store operation failed: %s", exc.__class__.__name__)
                        outcomes.append((False, store_error("database error", exc)))
                    except Exception as exc:
                        # A bug in one operation: it alone is rolled back and told; the rest of
                        # the batch commits (and nobody waits for ever on a future never set).
                        drop_events(conn, mark)
                        log.exception("store operation failed")
                        outcomes.append((False, exc))
                chain_pending_events(conn)
        except SQLAlchemyError as exc:
            # The commit itself failed: nothing of this batch is stored, so nobody may be told it is.
            log.error("store commit failed: %s", exc)
            error = store_error("database commit failed", exc)
            return [(False, error) for _ in ops]
        return outcomes

    async def read(self, op: Callable[[Connection], T]) -> T:
        """Run ``op`` on a reader connection (WAL: beside the writer)."""

        def run() -> T:
            with driver_errors("database error"), self._engine.connect() as conn:
                return op(conn)

        return await asyncio.get_running_loop().run_in_executor(self._readers, run)

    async def close(self) -> None:
        """Wait for the writes queued, then stop the threads and close every connection."""
        while self._flushing or self._queue:
            await asyncio.sleep(0.01)
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self._engine.dispose()
