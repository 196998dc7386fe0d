"""The parts a command opens on its own, wired here rather than in each command: the node's store
for one piece of work, the operators' reads over it, the node's trust, the dev CA.

``gateway.runtime.node.Node`` wires a running node; these are the same parts, made the same way,
for the command line (which runs beside a node, on the same home and database).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from gateway.domain.agencies import Registry
from gateway.infra.files.dev_ca import CertOffice
from gateway.infra.files.keys import file_trust
from gateway.infra.files.registry_csv import load_registry
from gateway.infra.sql.reads import SqlOversight
from gateway.infra.sql.store import SqlStore
from gateway.pki.trust import RegistryTrust
from gateway.runtime.config import Config

T = TypeVar("T")


def open_store(config: Config, *, writer: str | None = None) -> SqlStore:
    """The node's database as ``config`` names it; ``writer`` is the node's name (``None``: the
    command line), recorded with every delivery-log record this store writes."""
    return SqlStore(config.database_url, synchronous=config.sqlite_synchronous, writer=writer)


def with_store(config: Config, work: Callable[[SqlStore], Awaitable[T]]) -> T:
    """Open the store, run ``work`` on it, close it: one command's use of the database."""

    async def go() -> T:
        store = open_store(config)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(go())


def with_oversight(config: Config, work: Callable[[SqlOversight], Awaitable[T]]) -> T:
    """``with_store`` for the operators' reads and the delivery log."""
    return with_store(config, lambda store: work(SqlOversight(store.database)))


def registry(config: Config) -> Registry:
    return load_registry(config.registry)


def trust(config: Config, agencies: Registry | None = None) -> RegistryTrust:
    """The node's trust decisions: the home's PKI bound to its agency registry."""
    return file_trust(config.certs, agencies if agencies is not None else registry(config))


def cert_office(config: Config, *, now: datetime, by: str, agencies: Registry | None = None) -> CertOffice:
    """The dev CA of the home, acting at ``now`` on behalf of ``by``."""
    return CertOffice(config.certs, agencies if agencies is not None else registry(config), now=now, by=by)
