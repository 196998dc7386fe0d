"""The node commands: ``init``, ``serve``, ``db upgrade``, ``deliveries retry``."""

from __future__ import annotations

import argparse
import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

from gateway.errors import NotFound
from gateway.infra.sql.store import SqlStore
from gateway.operators import logs
from gateway.runtime import listening, wiring
from gateway.runtime.config import Config
from gateway.runtime.node import init_home, serve_forever


def init(home: Path) -> int:
    created = init_home(home, now=datetime.now(UTC))
    for path in created:
        print(f"created {path}")
    if not created:
        print(f"{home} is already initialised; nothing to do")
    print(f"next: gateway --home {home} serve")
    return 0


def serve(config: Config, args: argparse.Namespace) -> int:
    logs.configure(json_lines=args.log_format == "json")
    print(f"gateway: home {config.home}; send a first document from another terminal with:")
    print(
        f"  gateway --home {config.home} send --as 000.00.00.G22 --to 000.00.00.A01 "
        '--subject "Thử nghiệm liên thông"'
    )
    # Recorded in the home while it runs, so that the next command here reaches this port.
    where = listening.record_path(config.home, Path(args.config) if args.config else None)
    try:
        asyncio.run(
            serve_forever(config, port=args.port, on_listening=lambda url: listening.record(where, url))
        )
    finally:
        listening.clear(where)
    return 0


def db(config: Config, args: argparse.Namespace) -> int:
    """``gateway db upgrade``: apply the migrations; replicas starting together wait on one lock."""
    from gateway.infra.sql.schema import upgrade_database

    before, after = upgrade_database(config.database_url, config.sqlite_synchronous)
    print(f"database {config.database_url}: revision {before or '(empty)'} → {after}")
    return 0


def deliveries(config: Config, args: argparse.Namespace) -> int:
    """``gateway deliveries retry ID``: failed routes back to pending; the running node carries them."""

    async def redrive(store: SqlStore) -> int:
        return await store.redrive(args.id, now=datetime.now(UTC), by=os.environ.get("USER", "operator"))

    count = wiring.with_store(config, redrive)
    if not count:
        raise NotFound(f"document {args.id} has no failed delivery on this node")
    print(f"{args.id}: {count} failed route(s) re-driven; the node carries them again")
    return 0
