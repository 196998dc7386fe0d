"""One gateway node: the parts wired together from a ``Config``, started and stopped as a unit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from datetime import datetime
from pathlib import Path

from aiohttp import web

from gateway.adapters.devpki import ensure_dev_pki, server_paths
from gateway.adapters.keystore import FileTrust, load_seal_key
from gateway.adapters.network import NetworkAdapter
from gateway.adapters.sqlstore import SqlStore
from gateway.agency import DEMO_AGENCIES, AgencyState, Registry, load_registry, write_registry
from gateway.api import Api, make_app, server_tls_context
from gateway.config import CONFIG_FILE, DEFAULT_CONFIG, Config, load_config
from gateway.courier import Carrier, Courier, ProcessCarrier, ThreadCarrier
from gateway.deadlines import DeadlineWatcher
from gateway.errors import CryptoError
from gateway.intake import Intake
from gateway.levels import Network
from gateway.limits import Limit, SubmissionLimiter
from gateway.mailbox import Mailbox
from gateway.ports import Clock, SystemClock

log = logging.getLogger(__name__)


def init_home(home: Path, *, now: datetime) -> list[str]:
    """Create what is missing in ``home``: config, demo registry, dev PKI. Safe to run twice."""
    created: list[str] = []
    home.mkdir(parents=True, exist_ok=True)
    config_path = home / CONFIG_FILE
    if not config_path.exists():
        config_path.write_text(DEFAULT_CONFIG, encoding="utf-8")
        created.append(str(config_path))
    config = load_config(home)
    if not config.registry.exists():
        write_registry(config.registry, DEMO_AGENCIES)
        created.append(str(config.registry))
    registry = load_registry(config.registry)
    agencies = [(a.code, a.name, a.network) for a in registry if a.state is AgencyState.ACTIVE]
    created += [str(p) for p in ensure_dev_pki(config.certs, agencies=agencies, now=now)]
    return created


def refuse_exposed_keys(certs_dir: Path) -> None:
    """Refuse to start while any private key file can be read by group or others."""
    for path in sorted(certs_dir.rglob("*.key")):
        if path.stat().st_mode & 0o077:
            raise CryptoError(f"private key {path} is readable by others; run: chmod 600 {path}")


class Node:
    """A single-process gateway node serving every network (the embedded default)."""

    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        refuse_exposed_keys(config.certs)
        self.config = config
        self.clock = clock or SystemClock()
        self.registry: Registry = load_registry(config.registry)
        self.trust = FileTrust.from_dir(config.certs, self.registry)
        self.store = SqlStore(config.database_url, synchronous=config.sqlite_synchronous)
        self.adapters = {
            network: NetworkAdapter(load_seal_key(config.certs, network), self.trust, self.clock)
            for network in Network
        }
        carrier: Carrier
        if config.carriers > 0:
            carrier = ProcessCarrier(config.certs, config.registry, workers=config.carriers)
        else:
            carrier = ThreadCarrier(self.adapters, self.clock)
        self.courier = Courier(
            self.store, carrier, self.clock, node=config.node, batch=8, lanes=max(2, config.carriers + 1)
        )
        self.intake = Intake(
            self.registry,
            self.store,
            self.trust,
            self.clock,
            max_bytes=config.max_package_bytes,
            on_accepted=self.courier.wake,
        )
        self.mailbox = Mailbox(
            self.registry, self.store, self.adapters, self.trust, self.clock, on_accepted=self.courier.wake
        )
        limiter = SubmissionLimiter(Limit(config.submit_rate, config.submit_burst), self.clock)
        self.api = Api(self.intake, self.mailbox, self.registry, self.trust, self.store, self.clock, limiter)
        self._runner: web.AppRunner | None = None
        self._courier_task: asyncio.Task[None] | None = None
        self._deadline_task: asyncio.Task[None] | None = None
        self.deadlines = DeadlineWatcher(self.store, self.clock)
        self.port: int = config.port

    def app(self) -> web.Application:
        return make_app(self.api, max_bytes=self.config.max_package_bytes)

    async def start(self, *, port: int | None = None) -> int:
        """Serve HTTPS and start carrying documents; returns the bound port (0 picks a free one)."""
        crt, key = server_paths(self.config.certs)
        ctx = server_tls_context(str(crt), str(key), str(self.config.certs / "trust.pem"))
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.config.host, self.config.port if port is None else port, ssl_context=ctx
        )
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.config.port
        self._courier_task = asyncio.create_task(self.courier.run(), name="courier")
        self._deadline_task = asyncio.create_task(self.deadlines.run(), name="deadlines")
        log.info("gateway node %s listening on https://%s:%d", self.config.node, self.config.host, self.port)
        return self.port

    async def stop(self) -> None:
        for task in (self._courier_task, self._deadline_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._runner is not None:
            await self._runner.cleanup()
        self.courier.close()
        await self.store.close()


async def serve_forever(config: Config, *, port: int | None = None) -> None:
    node = Node(config)
    bound = await node.start(port=port)
    print(
        f"gateway: serving on https://localhost:{bound} (home {config.home}, pid {os.getpid()})", flush=True
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await node.stop()
