"""Statements of the hot path, compiled once per database and run on the driver's own cursor.

Every accepted document and every carried route runs a dozen single-row statements. Through
``Connection.execute`` each of them pays for SQLAlchemy's cache key, parameter construction and
result wrapping: about 35 µs against the 10 µs SQLite takes (bench/store_writes.py, issue 13),
in the one process whose interpreter lock the event loop shares. ``Prepared`` keeps the SQL
string SQLAlchemy compiled for the dialect, with the order of its parameters and the bind
processors of their types (``UTCDateTime`` stays the one place datetimes become text), and
runs it on the DBAPI cursor of the connection's own transaction: same SQL, same values, same
transaction, without the per-call work.

Driver errors are raised as SQLAlchemy's (``DBAPIError.instance``), so ``in_savepoint`` and
``Database`` see exactly the exceptions they would have seen from ``Connection.execute``.
Statements with an expanding ``IN`` are not for this class (their SQL depends on the list).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.expression import ClauseElement

_Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # every parameter, in the order a positional driver wants them
    positional: bool
    processors: tuple[_Processor, ...]
    fixed: Mapping[str, Any]  # values the statement itself carries (``.values(state="done")``)


class Prepared:
    """One statement, run with ``execute``, ``first`` or ``all`` (one row of parameters) or
    ``run_many`` (several).

    An INSERT is compiled for the columns its caller gives (the others take the table's scalar
    defaults, or the database's); other statements name their parameters with ``bindparam``."""

    def __init__(self, statement: ClauseElement) -> None:
        self._statement = statement
        self._by_dialect: dict[tuple[str, tuple[str, ...]], _Compiled] = {}

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Run with ``params``; how many rows it changed."""
        return int(self._run(conn, params, lambda cursor: cursor.rowcount))

    def first(self, conn: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """Run with ``params``; its first row (a plain tuple, in the statement's column order)."""
        rows = self.all(conn, params)
        return rows[0] if rows else None

    def all(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run with ``params``; every row it returned (read whole: SQLite would otherwise keep
        the statement open into the commit)."""
        return list(self._run(conn, params, lambda cursor: cursor.fetchall()))

    def _run(self, conn: Connection, params: Mapping[str, Any], read: Callable[[Any], Any]) -> Any:
        compiled = self._compiled(conn, params)
        values = _values(compiled, params)
        cursor = conn.connection.cursor()
        try:
            cursor.execute(compiled.sql, values)
            return read(cursor)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _translated(conn, compiled.sql, values, exc) from exc
        finally:
            cursor.close()

    def run_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute once per row of ``rows`` (the driver's ``executemany``)."""
        if not rows:
            return
        compiled = self._compiled(conn, rows[0])
        cursor = conn.connection.cursor()
        values = [_values(compiled, row) for row in rows]
        try:
            cursor.executemany(compiled.sql, values)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _translated(conn, compiled.sql, values, exc) from exc
        finally:
            cursor.close()

    def _compiled(self, conn: Connection, params: Mapping[str, Any]) -> _Compiled:
        dialect = conn.dialect
        keys = tuple(sorted(params)) if isinstance(self._statement, Insert) else ()
        known = self._by_dialect.get((dialect.name, keys))
        if known is not None:
            return known
        compiled = cast(
            SQLCompiler, self._statement.compile(dialect=dialect, column_keys=list(keys) if keys else None)
        )
        # A positional driver (SQLite's ?) takes them in the SQL's order; psycopg takes them by name.
        names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.binds)
        fixed: dict[str, Any] = {}
        for name in names:
            bind = compiled.binds[name]
            if bind.value is not None or not bind.required:
                fixed[name] = bind.effective_value
        if isinstance(self._statement, Insert):
            # Columns the caller leaves out that SQLAlchemy fills from the table's own defaults.
            for column in self._statement.table.columns:
                default = column.default
                if column.key in names and column.key not in keys and default is not None:
                    if not getattr(default, "is_scalar", False):
                        raise TypeError(f"column {column.key} has a default Prepared cannot apply")
                    fixed[column.key] = default.arg  # type: ignore[attr-defined]
        processors = tuple(compiled.binds[name].type.bind_processor(dialect) for name in names)
        made = _Compiled(compiled.string, names, bool(compiled.positional), processors, fixed)
        self._by_dialect[(dialect.name, keys)] = made
        return made


def _values(compiled: _Compiled, params: Mapping[str, Any]) -> Any:
    out = []
    for name, process in zip(compiled.names, compiled.processors, strict=True):
        value = params[name] if name in params else compiled.fixed.get(name)
        try:
            out.append(process(value) if process is not None and value is not None else value)
        except (TypeError, ValueError) as exc:
            # As Connection.execute reports a value its type refuses (a naive datetime, say).
            raise StatementError(f"parameter {name!r} refused: {exc}", compiled.sql, None, exc) from exc
    return tuple(out) if compiled.positional else dict(zip(compiled.names, out, strict=True))


def _translated(conn: Connection, sql: str, values: Any, exc: Exception) -> StatementError:
    return DBAPIError.instance(sql, values, exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect)
