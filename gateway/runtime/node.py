"""One gateway node: the parts wired together from a ``Config``, started and stopped as a unit."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from aiohttp import web
from cryptography import x509

from gateway.adapters.network import NetworkAdapter
from gateway.audit.signer import HeadSigner
from gateway.crypto.pki import PrivateKey
from gateway.domain.agencies import DEMO_AGENCIES, AgencyState, Registry
from gateway.domain.clock import Clock, SystemClock
from gateway.domain.vocabulary import Network
from gateway.errors import CryptoError, GatewayError
from gateway.exchange.courier import Carrier, Courier, Outcome
from gateway.exchange.deadlines import DeadlineWatcher
from gateway.exchange.inbound import Inbound
from gateway.exchange.intake import Intake
from gateway.exchange.mailbox import Mailbox
from gateway.exchange.notifications import Endpoints, Notifier
from gateway.exchange.ports import RouteJob
from gateway.exchange.ratelimit import Limit, SubmissionLimiter
from gateway.http.api import Api, UploadBudget, make_app, server_tls_context
from gateway.http.console import Console
from gateway.http.edge import EdgeLimits, EdgeSite, bind_listeners
from gateway.infra.files.dev_ca import CertOffice
from gateway.infra.files.keys import load_seal_key
from gateway.infra.files.pki_dir import (
    ADAPTER_ROLES,
    inventory_path,
    load_key_pair,
    load_trust_anchors,
    read_inventory,
    server_paths,
)
from gateway.infra.files.pki_init import ensure_dev_pki
from gateway.infra.files.registry_csv import load_registry, write_registry
from gateway.infra.files.spool import Spool
from gateway.infra.peers import PeerLinks
from gateway.infra.push import PushLinks
from gateway.infra.sql.notify import WorkListener, listener_dsn
from gateway.infra.sql.reads import SqlOversight
from gateway.operators.logs import EventLines
from gateway.operators.metrics import EventFeed, Metrics
from gateway.pki.inventory import FOUND_BY
from gateway.pki.problems import DEFAULT_WARNING, CertificateWatch, Problem
from gateway.runtime import wiring
from gateway.runtime.carriers import ProcessCarrier, ThreadCarrier
from gateway.runtime.checkers import CheckerPool
from gateway.runtime.config import CONFIG_FILE, DEFAULT_CONFIG, Config, load_config
from gateway.runtime.supervise import start_every

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
    pki = ensure_dev_pki(config.certs, agencies=agencies, now=now, adapter_roles=ADAPTER_ROLES)
    created += [str(p) for p in pki]
    if CertOffice(config.certs, registry, now=now, by=FOUND_BY).record_existing():
        created.append(str(inventory_path(config.certs)))
    return created


def refuse_exposed_keys(certs_dir: Path) -> None:
    """Refuse to start while any private key file can be read by group or others."""
    for path in sorted(certs_dir.rglob("*.key")):
        if path.stat().st_mode & 0o077:
            raise CryptoError(f"private key {path} is readable by others; run: chmod 600 {path}")


class RenewableCarrier:
    """Carrier processes load the adapters' seal keys once, when they start. After a rotation new
    batches go to a fresh pool; the old pool closes once the batches it holds are done (nothing
    in flight is cancelled, and its seals, made with the predecessor, verify during the overlap)."""

    def __init__(self, make: Callable[[], ProcessCarrier]) -> None:
        self._make = make
        self._current = make()
        self._busy: dict[Carrier, int] = {}
        self._closing: list[threading.Thread] = []

    async def warm(self) -> None:
        await self._current.warm()

    async def carry(self, jobs: list[RouteJob]) -> list[Outcome]:
        carrier = self._current
        self._busy[carrier] = self._busy.get(carrier, 0) + 1
        try:
            return await carrier.carry(jobs)
        except BrokenProcessPool:
            # A worker died (killed, out of memory): that pool refuses every batch from now on.
            # The next batch goes to a fresh one; this batch's routes come back after their lease.
            if carrier is self._current:
                log.error("a carrier process died; starting a new pool")
                self.renew()
            raise
        finally:
            self._busy[carrier] -= 1
            if carrier is not self._current and not self._busy[carrier]:
                self._retire(carrier)

    def renew(self) -> None:
        old, self._current = self._current, self._make()
        if not self._busy.get(old):
            self._retire(old)

    def _retire(self, carrier: Carrier) -> None:
        self._busy.pop(carrier, None)
        # Shutting a pool down waits for its processes: not on the event loop.
        closing = threading.Thread(target=carrier.close, name="carrier-retire", daemon=True)
        closing.start()
        self._closing.append(closing)

    def close(self) -> None:
        self._current.close()
        for closing in self._closing:
            closing.join()


class Node:
    """A gateway node: by default one process serving every network (embedded); with
    ``network`` set in its config, the node of that network only, federated with its peers."""

    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        refuse_exposed_keys(config.certs)
        self.config = config
        self.clock = clock or SystemClock()
        self.registry: Registry = wiring.registry(config)
        self.trust = wiring.trust(config, self.registry)
        self.store = wiring.open_store(config, writer=config.node)
        # A per-network node holds only its own adapter's keys; the embedded node holds all three.
        served = (config.network,) if config.network else tuple(Network)
        self.adapters = {
            network: NetworkAdapter(load_seal_key(config.certs, network), self.trust, self.clock)
            for network in served
        }
        self.peers = PeerLinks(config.network, config.peers, config.certs) if config.network else None
        carrier: Carrier
        if config.carriers > 0:
            carrier = RenewableCarrier(
                lambda: ProcessCarrier(
                    config.certs, config.registry, workers=config.carriers, networks=served
                )
            )
        else:
            carrier = ThreadCarrier(self.adapters, self.clock)  # shares self.adapters: sees reloads
        self._carrier = carrier
        # Push notifications of what landed in an inbox, signed and presented by the adapter of
        # the recipient's network; the queue is in the store, so a restart loses none.
        self.pushes = PushLinks(config.certs, served, extra_ca=config.notify_ca)
        self.notifier = Notifier(
            self.store,
            self.pushes,
            self.adapters,
            self.clock,
            node=config.node,
            lease_seconds=config.lease_seconds,
            max_backoff=config.notify_max_backoff,
            give_up_after=config.notify_give_up_after,
        )
        self.courier = Courier(
            self.store,
            carrier,
            self.clock,
            node=config.node,
            batch=8,
            lanes=max(2, config.carriers + 1),
            lease_seconds=config.lease_seconds,
            peers=self.peers,
            give_up_after=config.give_up_after,
            on_delivered=self.notifier.wake,
        )
        # Off the event loop, within a CPU budget: one package cannot stall everyone's requests.
        self.checkers = CheckerPool(
            workers=config.submit_checkers,
            queue=config.submit_queue,
            cpu_seconds=config.submit_cpu_seconds,
            memory_mb=config.submit_memory_mb,
            max_bytes=config.max_package_bytes,
        )
        self.intake = Intake(
            self.registry,
            self.store,
            self.trust,
            self.clock,
            max_bytes=config.max_package_bytes,
            limits=config.xml_limits,
            work=self.checkers,
            on_accepted=self.courier.wake,
        )
        self.mailbox = Mailbox(
            self.registry, self.store, self.adapters, self.trust, self.clock, on_accepted=self.courier.wake
        )
        limiter = SubmissionLimiter(Limit(config.submit_rate, config.submit_burst), self.clock)
        inbound = None
        if config.network is not None:
            inbound = Inbound(
                self.adapters[config.network],
                set(config.peers),
                self.registry,
                self.store,
                self.trust,
                self.clock,
                on_delivered=self.notifier.wake,
            )
        self.spool = Spool(config.spool_dir)
        self.spool.clear()  # what a killed run left: no request of this node holds them any more
        self.api = Api(
            self.intake,
            self.mailbox,
            self.registry,
            self.trust,
            self.store,
            self.clock,
            limiter,
            network=config.network,
            inbound=inbound,
            endpoints=Endpoints(self.store, self.clock),
            uploads=UploadBudget(config.max_upload_bytes_in_flight),
            spool=self.spool,
        )
        self._runner: web.AppRunner | None = None
        self._courier_task: asyncio.Task[None] | None = None
        self._notifier_task: asyncio.Task[None] | None = None
        self._deadline_task: asyncio.Task[None] | None = None
        self._listener: WorkListener | None = None
        self.deadlines = DeadlineWatcher(self.store, self.clock)
        self.port: int = config.port
        self._tls: ssl.SSLContext | None = None
        self._cert_generation = self.trust.generation()
        self._cert_tasks: list[asyncio.Task[None]] = []
        self.certificates = CertificateWatch(
            self._inspect_certificates, self.store, self.clock, records=lambda: read_inventory(config.certs)
        )
        self._wire_oversight(served)

    def _wire_oversight(self, served: tuple[Network, ...]) -> None:
        """The delivery log's signer, the metrics and JSON event lines fed from the log, the console."""
        self.oversight = SqlOversight(self.store.database)
        # The head is signed by the adapter of the government network (of this network, when federated).
        sealer = self.config.network or Network.GOVERNMENT

        def signing_key() -> tuple[PrivateKey, x509.Certificate]:
            seal = load_seal_key(self.config.certs, sealer)
            return seal.key, seal.chain[0]

        self.head_signer = HeadSigner(
            self.oversight,
            signing_key,
            load_trust_anchors(self.config.certs),
            self.clock,
            node=self.config.node,
        )
        links = [(a.value, b.value) for a in served for b in served if a is not b]
        self.metrics = Metrics(links)
        self.feed = EventFeed(self.oversight, [self.metrics.observe, EventLines()], writer=self.config.node)
        self.console = Console(
            self.oversight,
            self.trust,
            self.clock,
            metrics=self.metrics,
            feed=self.feed,
            certs_dir=self.config.certs,
        )
        self._oversight_tasks: list[asyncio.Task[None]] = []

    def _inspect_certificates(self, now: datetime) -> list[Problem]:
        office = wiring.cert_office(self.config, now=now, by="gateway serve", agencies=self.registry)
        return office.inspect(within=DEFAULT_WARNING)

    async def reload_certificates(self, *, force: bool = False) -> bool:
        """Put issued, rotated and revoked certificates to use without a restart: the adapters'
        seal keys, the HTTPS server's certificate, the carrier processes. Revocations need none of
        this (``RegistryTrust`` reads them at once). Called every second and on SIGHUP; returns whether
        anything was reloaded."""
        if force:
            self.trust.reload()
        generation = self.trust.generation()
        if generation == self._cert_generation:
            return False
        try:
            # The inventory is written after the files: what is read now is at least that new.
            seals = await asyncio.to_thread(
                lambda: {n: load_seal_key(self.config.certs, n) for n in self.adapters}
            )
            if self._tls is not None:
                crt, key = server_paths(self.config.certs)
                # A matching pair first: a mismatch would leave the live context without a key.
                await asyncio.to_thread(load_key_pair, crt, key)
                # On the loop's thread, where every handshake on this context happens.
                self._tls.load_cert_chain(str(crt), str(key))
        except (GatewayError, OSError) as exc:
            log.error("certificates changed but cannot be loaded yet (%s); trying again", exc)
            return False
        for network, seal in seals.items():
            # Replaced in place: the thread carrier and the mailbox hold this very mapping.
            self.adapters[network] = NetworkAdapter(seal, self.trust, self.clock)
        if isinstance(self._carrier, RenewableCarrier):
            self._carrier.renew()
        self._cert_generation = generation
        log.info("certificates reloaded: new work uses the active seal keys and TLS certificate")
        return True

    def app(self) -> web.Application:
        app = make_app(
            self.api,
            max_bytes=self.config.max_package_bytes,
            body_timeout=self.config.body_timeout,
            edge_counts=self.metrics.edge,
        )
        self.console.install(app)
        return app

    def edge_limits(self) -> EdgeLimits:
        """The HTTP edge's deadlines and connection caps, from the config."""
        c = self.config
        return EdgeLimits(
            tls_handshake_timeout=c.tls_handshake_timeout,
            header_timeout=c.header_timeout,
            body_timeout=c.body_timeout,
            max_connections=c.max_connections,
            max_connections_per_client=c.max_connections_per_client,
        )

    async def warm(self) -> None:
        """Start the checker and carrier processes now, not for the first documents: started
        lazily, four interpreters came up on two cores under the first second's load, and most of
        its requests waited or got 503 (``bench/openloop.py``). ``serve`` warms before it listens,
        so a node that answers is ready; a node made in-process (tests) starts them on demand."""
        starting = [self.checkers.warm()]
        if isinstance(self._carrier, RenewableCarrier):  # a carrier thread needs no start
            starting.append(self._carrier.warm())
        await asyncio.gather(*starting)

    async def start(self, *, port: int | None = None, sockets: Sequence[socket.socket] = ()) -> int:
        """Serve HTTPS and start carrying documents; returns the bound port (0 picks a free one).
        ``sockets``: listeners bound beforehand (``bind_listeners``), served instead of binding."""
        crt, key = server_paths(self.config.certs)
        ctx = server_tls_context(str(crt), str(key), str(self.config.certs / "trust.pem"))
        self._tls = ctx  # load_cert_chain on this live context serves a rotated certificate
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = EdgeSite(
            self._runner,
            self.config.host,
            self.config.port if port is None else port,
            ssl_context=ctx,
            limits=self.edge_limits(),
            counts=self.metrics.edge,
            sockets=sockets,
        )
        await site.start()
        self.port = site.port
        dsn = listener_dsn(self.config.database_url)
        if dsn is not None:  # replicas on one PostgreSQL wake each other on new work
            loop = asyncio.get_running_loop()

            def wake() -> None:
                loop.call_soon_threadsafe(self.courier.wake)
                loop.call_soon_threadsafe(self.notifier.wake)  # another replica may have delivered

            self._listener = WorkListener(dsn, wake)
            self._listener.start()
        self._courier_task = asyncio.create_task(self.courier.run(), name="courier")
        self._notifier_task = asyncio.create_task(self.notifier.run(), name="notifier")
        deadlines, certificates, feed, signer = self.deadlines, self.certificates, self.feed, self.head_signer
        self._deadline_task = start_every(
            "deadlines", deadlines.interval, deadlines.check_once,
            failure="deadline check failed; trying again at the next interval",
        )  # fmt: skip
        self._cert_tasks = [
            start_every(
                "certificate-reload", 1.0, self.reload_certificates, first="sleep",  # just loaded
                failure="reloading certificates failed; trying again",
            ),
            start_every(
                "certificate-expiry", certificates.interval, certificates.check_once,
                failure="certificate check failed; trying again at the next interval",
            ),
        ]  # fmt: skip
        await feed.poll()  # metrics and event lines count from here on
        self._oversight_tasks = [
            start_every(
                "event-feed", feed.interval, feed.poll,
                failure="reading the delivery log for metrics and logs failed; trying again",
            ),
            start_every(
                "audit-head", signer.interval, signer.sign_once, first="sleep",  # and once more at stop
                failure="signing the audit head failed; trying again at the next interval",
            ),
        ]  # fmt: skip
        log.info("gateway node %s listening on https://%s:%d", self.config.node, self.config.host, self.port)
        return self.port

    async def stop(self) -> None:
        tasks = (self._courier_task, self._notifier_task, self._deadline_task, *self._cert_tasks)
        for task in (*tasks, *self._oversight_tasks):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._runner is not None:
            await self._runner.cleanup()
        if self.peers is not None:
            await self.peers.close()
        await self.pushes.close()
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)
        self.courier.close()
        await self.checkers.close()
        if self._oversight_tasks:  # started: log the last events, sign what the log holds now
            try:
                await self.feed.poll()
                await self.head_signer.sign_once()
            except Exception:
                log.exception("logging the last events or signing the audit head at stop failed")
        await self.store.close()


async def serve_forever(
    config: Config, *, port: int | None = None, on_listening: Callable[[str], None] | None = None
) -> None:
    """Run a node until SIGINT or SIGTERM; ``on_listening`` is given its URL once it listens."""
    # The port first: a second `serve` on a busy port is refused before it opens (and migrates)
    # the database.
    listeners = bind_listeners(config.host, config.port if port is None else port)
    try:
        node = Node(config)
    except BaseException:
        for s in listeners:
            s.close()
        raise
    try:
        await node.warm()
    except BaseException:
        for s in listeners:
            s.close()
        await node.stop()
        raise
    # What start-up made (modules, the registry, schemas, keys) lives as long as the process: out
    # of the collector's sight, a full collection walks only what came since. It walked all of
    # it before, 50-90 ms with the event loop stopped, every few seconds under load.
    gc.freeze()
    bound = await node.start(sockets=listeners)
    url = replace(config, port=bound).url
    print(f"gateway: serving on {url} (home {config.home}, pid {os.getpid()})", flush=True)
    if on_listening is not None:
        on_listening(url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[bool]] = set()

    def on_sighup() -> None:
        task = asyncio.create_task(node.reload_certificates(force=True))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    try:
        await stop.wait()
    finally:
        await node.stop()
