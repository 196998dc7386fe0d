"""The delivery log's chain in SQL: records are appended with a write and chained at its commit.

Every insert into ``events`` goes through ``append_events``. The records are held with the
transaction (in ``Connection.info``) and ``chain_pending_events`` writes them at the head of the
chain, the last statement before COMMIT (``Database`` calls it): the one lock that orders the
chain is so held for a single insert and the commit, not for the whole batch, and PostgreSQL
replicas sharing a database take turns only for that moment. ``gateway.audit.log`` says how a
record is hashed and how the chain is checked.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence

from sqlalchemy import Connection, func, select

from gateway.audit.log import GENESIS, record_hash, utc_text
from gateway.exchange.ports import NewEvent
from gateway.infra.sql.prepared import Prepared
from gateway.infra.sql.rows import E
from gateway.operators.logs import current_request_id

_CHAIN_LOCK = 0x65645843  # the delivery log's advisory lock key on PostgreSQL ('edXC')
_PENDING_EVENTS = "gateway_pending_events"  # conn.info key: this transaction's records, not yet chained
_WRITER = "gateway_writer"  # conn.info key: the node whose store is writing (events.writer)
# Run at every commit that writes records (prepared: see ``gateway.infra.sql.prepared``).
_HEAD = Prepared(select(E.c.seq, E.c.hash).order_by(E.c.seq.desc()).limit(1))
_INSERT = Prepared(E.insert())


def hold_events(conn: Connection, writer: str | None) -> None:
    """Open the transaction's list of records to chain at commit, written as ``writer``'s."""
    conn.info[_PENDING_EVENTS] = []  # a pooled connection may carry a failed batch's
    conn.info[_WRITER] = writer


def held_events(conn: Connection) -> int:
    """How many records the transaction holds: the mark ``drop_events`` rolls back to."""
    return len(conn.info[_PENDING_EVENTS])


def drop_events(conn: Connection, mark: int) -> None:
    """Forget the records held since ``mark``: the savepoint that appended them is gone."""
    del conn.info[_PENDING_EVENTS][mark:]


def append_events(conn: Connection, events: Sequence[NewEvent]) -> None:
    """Append events to the tamper-evident delivery log: each record will carry the hash of the
    record before it. The request id is the caller's (operations run in their caller's context,
    see ``Database.write``); background work gets one id per call, so its records group."""
    if not events:
        return
    held = conn.info.get(_PENDING_EVENTS)
    if held is None:  # outside Database.write nothing would ever chain and write them
        raise RuntimeError("delivery-log records are appended only inside a store write")
    request_id = current_request_id() or f"job-{secrets.token_hex(6)}"
    held.extend((ev, request_id) for ev in events)


def chain_pending_events(conn: Connection) -> None:
    """Write the transaction's held records at the head of the chain: the last statement before
    COMMIT. SQLite has one writer (this store's thread, under BEGIN IMMEDIATE), so the head cannot
    move under us; PostgreSQL replicas serialise on a transaction-scoped advisory lock, held to
    commit, so seqs are also committed in order (the metrics feed relies on that). It is taken
    after every row lock of the transaction, and its holder waits for nothing else, so it can
    take part in no deadlock."""
    pending: list[tuple[NewEvent, str]] = conn.info.pop(_PENDING_EVENTS, [])
    if not pending:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(_CHAIN_LOCK)))
    head = _HEAD.first(conn, {})
    seq, prev = (int(head[0]), str(head[1])) if head is not None else (0, GENESIS)
    rows = []
    for ev, request_id in pending:
        seq += 1
        detail = json.dumps(ev.detail, ensure_ascii=False, sort_keys=True)
        digest = record_hash(ev.kind, utc_text(ev.at), ev.document, ev.recipient, ev.network, request_id,
                             detail, prev)  # fmt: skip
        rows.append(
            {
                "seq": seq,
                "kind": ev.kind,
                "at": ev.at,
                "document": ev.document,
                "recipient": ev.recipient,
                "network": ev.network,
                "detail": detail,
                "request_id": request_id,
                "prev_hash": prev,
                "hash": digest,
                "writer": conn.info.get(_WRITER),
            }
        )
        prev = digest
    _INSERT.run_many(conn, rows)
