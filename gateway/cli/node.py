"""The node commands: ``init``, ``serve``, ``db upgrade``, ``deliveries retry``."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

from gateway.domain.vocabulary import Network
from gateway.errors import ConfigError, NotFound
from gateway.infra.sql.store import SqlStore
from gateway.operators import logs
from gateway.runtime import listening, wiring
from gateway.runtime.config import CONFIG_FILE, Config
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
    _refuse_a_lone_network_node(config, args)
    logs.configure(json_lines=args.log_format == "json")
    if config.network is not None:
        peers = ", ".join(f"{n.value} at {url}" for n, url in sorted(config.peers.items())) or "none"
        print(f"gateway: node {config.node} of the {config.network.value} network; peers: {peers}")
    hint = _first_send(config, args)
    if hint:
        print(f"gateway: home {config.home}; send a first document from another terminal with:")
        print(f"  {hint}")
    # Recorded in the home while it runs, so that the next command here reaches this port.
    where = listening.record_path(config.home, Path(args.config) if args.config else None)
    try:
        asyncio.run(
            serve_forever(config, port=args.port, on_listening=lambda url: listening.record(where, url))
        )
    finally:
        listening.clear(where)
    return 0


def _refuse_a_lone_network_node(config: Config, args: argparse.Namespace) -> None:
    """A network's node without peers could never hand a document to another network: it would
    start, accept, and let those routes fail after ``give_up_after``. Say so before anything runs."""
    if config.network is None:
        return
    others = [n.value for n in Network if n is not config.network]
    where = args.config or str(config.home / CONFIG_FILE)
    if not config.peers:
        raise ConfigError(
            f"this would be the {config.network.value} network's node, but {where} has no [peers]: "
            f"documents for {' and '.join(others)} could never leave it. Write a node config with "
            "`network`, `port` and a [peers] table (README: One node per network) and start it with "
            "`gateway --config FILE serve`"
        )
    missing = [n for n in others if Network(n) not in config.peers]
    if missing:
        print(
            f"gateway: warning: {where} names no peer for {' and '.join(missing)}: documents for "
            f"{' and '.join(missing)} wait, then fail after give_up_after ({config.give_up_after:g} s)",
            file=sys.stderr,
        )


def _first_send(config: Config, args: argparse.Namespace) -> str | None:
    """The command that sends a first document through this node: from one of its own agencies
    (an agency uses its own network's node) to one elsewhere, with the same --home and --config,
    so that it reaches this node and no other."""
    agencies = [a for a in wiring.registry(config) if a.active and a.parent is None]
    if config.network is None:
        sender, recipient = "000.00.00.G22", "000.00.00.A01"
    else:
        mine = [a.code for a in agencies if a.network is config.network]
        theirs = [a.code for a in agencies if a.network in config.peers]
        if not mine or not theirs:
            return None
        sender, recipient = mine[0], theirs[0]
    where = f"--home {shlex.quote(str(config.home))}"
    if args.config:
        where += f" --config {shlex.quote(str(Path(args.config).resolve()))}"
    return f'gateway {where} send --as {sender} --to {recipient} --subject "Thử nghiệm liên thông"'


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
