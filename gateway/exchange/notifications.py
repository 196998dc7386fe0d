"""Push notifications: telling an agency's system that something landed in its inbox.

An agency registers one HTTPS endpoint (``Endpoints``). Whenever a delivery lands in its inbox
(a document, a status, a receipt) the store queues a notification in the same transaction, so
none is lost to a crash or a restart. ``Notifier`` sends the queue, most urgent first, as a small
JSON body with routing metadata only (never a subject or content, whatever the classification),
signed by the adapter of the recipient's network (a detached JWS, ``gateway.crypto.jws``), over
mutual TLS (``Pusher``, implemented in ``gateway.infra.push``). A failed POST is retried with
bounded exponential back-off; each try is a ``notified`` or ``notify_failed`` record in the
document's trace. Pull stays the way to fetch: a notification that never arrives loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Protocol
from urllib.parse import urlsplit

from gateway.adapters.network import NetworkAdapter
from gateway.crypto.jws import sign_detached
from gateway.domain.clock import Clock
from gateway.domain.vocabulary import Network
from gateway.errors import InvalidEndpoint, PushFailed
from gateway.exchange.ports import Endpoint, NewEvent, NotificationJob, NotificationStore

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Gateway-Signature"
MAX_URL = 2048


def check_endpoint_url(url: object) -> str:
    """``url`` if the gateway may POST notifications to it, else ``InvalidEndpoint`` saying why."""
    if not isinstance(url, str) or not url:
        raise InvalidEndpoint('expected JSON {"url": "https://..."}')
    if len(url) > MAX_URL or not url.isascii() or not url.isprintable() or " " in url:
        raise InvalidEndpoint(f"the endpoint must be a printable ASCII URL of at most {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number in range
    except ValueError as exc:
        raise InvalidEndpoint(f"the endpoint is not a URL: {exc}") from exc
    if parts.scheme != "https":
        raise InvalidEndpoint("the endpoint must be an https:// URL: notifications go over mutual TLS only")
    if not parts.hostname:
        raise InvalidEndpoint("the endpoint URL names no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidEndpoint("the endpoint URL must not carry credentials; the gateway authenticates by TLS")
    if parts.fragment or url.endswith("#"):
        raise InvalidEndpoint("the endpoint URL must not have a #fragment")
    if port == 0:
        raise InvalidEndpoint("the endpoint URL names port 0")
    return url


def endpoint_host(url: str) -> str:
    """What the trace says of an endpoint: its host and port, not its path (which may hold a token)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 443}"


class Endpoints:
    """An agency's own endpoint: register, read, remove. Each change is a delivery-log record."""

    def __init__(self, store: NotificationStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def register(self, agency: str, url: object) -> Endpoint:
        checked = check_endpoint_url(url)
        now = self._clock.now()
        endpoint = await self._store.set_endpoint(agency, checked, now=now)
        detail = {"endpoint": endpoint_host(checked)}
        await self._store.add_events([NewEvent("endpoint_registered", now, None, agency, None, detail)])
        return endpoint

    async def get(self, agency: str) -> Endpoint | None:
        return await self._store.endpoint(agency)

    async def remove(self, agency: str) -> bool:
        dropped = await self._store.remove_endpoint(agency)
        if dropped is None:
            return False
        event = NewEvent("endpoint_removed", self._clock.now(), None, agency, None, {"dropped": dropped})
        await self._store.add_events([event])
        return True


def notification_kind(job: NotificationJob) -> str:
    """``document`` (an edoc), ``receipt`` (a 01, Đã đến) or ``status`` (any other status)."""
    if job.kind == "edoc":
        return "document"
    return "receipt" if job.status_code == "01" else "status"


def notification_body(job: NotificationJob) -> bytes:
    """The JSON body, canonical (sorted keys, no spaces) so it reads the same everywhere.

    What it holds is routing metadata the recipient's inbox shows anyway; ``recipient`` lets the
    receiver refuse a notification meant for someone else, and (``id``, ``recipient``) is unique,
    so a notification that arrives twice (at least once is the promise) is recognised."""
    body = {
        "id": job.document,
        "kind": notification_kind(job),
        "priority": int(job.priority),
        "sender": job.sender,
        "recipient": job.recipient,
        "at": job.created_at.isoformat().replace("+00:00", "Z"),
        "status": job.status_code,
        "about": job.response_for,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")


class Pusher(Protocol):
    """Where notifications go out: an HTTPS POST over mutual TLS (``gateway.infra.push``)."""

    async def push(self, network: Network, url: str, body: bytes, signature: str) -> int:
        """POST ``body`` with its signature; returns the 2xx status, or raises ``PushFailed``."""
        ...


class Notifier:
    """Sends queued notifications until cancelled, most urgent first, each agency's in order.

    An endpoint that fails is left alone for a back-off (1 s, doubling, at most ``max_backoff``)
    during which none of that agency's notifications is tried; then the most urgent goes first.
    A notification still undelivered ``give_up_after`` seconds after its delivery landed is
    dropped with a ``notify_failed`` record saying so (the document itself waits in the inbox).
    """

    def __init__(
        self,
        store: NotificationStore,
        pusher: Pusher,
        adapters: Mapping[Network, NetworkAdapter],
        clock: Clock,
        *,
        node: str,
        batch: int = 32,
        lease_seconds: float = 60.0,
        idle_poll_seconds: float = 1.0,
        first_backoff: float = 1.0,
        max_backoff: float = 300.0,
        give_up_after: float = 86_400.0,
    ) -> None:
        self._store = store
        self._pusher = pusher
        self._adapters = adapters  # the node's own mapping, replaced in place on a key rotation
        self._clock = clock
        self._node = node
        self._batch = batch
        self._lease = lease_seconds
        self._idle = idle_poll_seconds
        self._first_backoff = first_backoff
        self._max_backoff = max_backoff
        self._give_up_after = timedelta(seconds=give_up_after)
        self._down_until: dict[str, datetime] = {}  # agency → when its endpoint may be tried again
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Called when deliveries landed, so the notifier does not wait for its next poll."""
        self._wake.set()

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed try: bounded exponential."""
        return min(self._max_backoff, self._first_backoff * 2.0 ** max(attempts - 1, 0))

    async def run(self) -> None:
        try:
            released = await self._store.release_notifications(node=self._node)
        except Exception:  # the database not answering yet: they come back after their lease
            log.exception("could not take back the notifications this node left claimed; carrying on")
            released = 0
        if released:
            log.info("resuming %d notifications left unsent by the previous run", released)
        while True:
            try:
                busy = await self.run_once()
            except Exception:
                # A store or signing failure must not end the worker: what it claimed comes back
                # after the lease, and the next round tries again.
                log.exception("sending notifications failed; trying again")
                busy = False
            if not busy:
                with contextlib.suppress(TimeoutError):
                    # Not asyncio.wait_for: on Python 3.11 a cancel that arrives as the wake
                    # does is swallowed (wait_for returns the result), and this loop, cancelled
                    # by Node.stop, ran on: `gateway serve` ignored SIGTERM (seen under load).
                    async with asyncio.timeout(self._idle):
                        await self._wake.wait()
                self._wake.clear()

    async def run_once(self) -> bool:
        """Claim and send one batch; returns whether there was anything to send."""
        now = self._clock.now()
        self._down_until = {a: t for a, t in self._down_until.items() if t > now}
        jobs = await self._store.claim_notifications(
            node=self._node, limit=self._batch, now=now, lease_seconds=self._lease, exclude=self._down_until
        )
        if not jobs:
            return False
        per_agency: dict[str, list[NotificationJob]] = {}
        for job in jobs:  # claim order (most urgent first) is kept within each agency
            per_agency.setdefault(job.recipient, []).append(job)
        # One slow endpoint must not hold back another agency's notifications.
        await asyncio.gather(*(self._send_in_order(queue) for queue in per_agency.values()))
        return True

    async def _send_in_order(self, queue: list[NotificationJob]) -> None:
        for i, job in enumerate(queue):
            try:
                status = await self._send(job)
            except PushFailed as exc:
                until = await self._failed(job, exc.message)
                self._down_until[job.recipient] = until
                for later in queue[i + 1 :]:  # not tried: the endpoint is down
                    await self._store.retry_notification(
                        later, not_before=until, reason="the endpoint is down", attempted=False
                    )
                return
            detail = {"attempt": job.attempts + 1, "status": status}
            await self._store.finish_notification(job, events=[self._event("notified", job, detail)])

    async def _send(self, job: NotificationJob) -> int:
        adapter = self._adapters.get(job.network)
        if adapter is None:
            raise PushFailed(f"this node holds no key of the {job.network} adapter to sign with")
        body = notification_body(job)
        seal = adapter.seal_key
        return await self._pusher.push(job.network, job.url, body, sign_detached(body, seal.key, seal.chain))

    async def _failed(self, job: NotificationJob, reason: str) -> datetime:
        """Record a failed try; returns until when the endpoint is left alone."""
        now = self._clock.now()
        attempt = job.attempts + 1
        until = now + timedelta(seconds=self.backoff(attempt))
        if now - job.created_at >= self._give_up_after:
            detail = {"attempt": attempt, "reason": reason, "gave_up": True}
            log.warning("notification of %s to %s dropped: %s", job.document, job.recipient, reason)
            await self._store.finish_notification(job, events=[self._event("notify_failed", job, detail)])
            return until
        detail = {"attempt": attempt, "reason": reason, "next_attempt_at": until.isoformat()}
        log.info("notifying %s of %s failed (%s); again at %s", job.recipient, job.document, reason, until)
        await self._store.retry_notification(
            job,
            not_before=until,
            reason=reason,
            attempted=True,
            events=[self._event("notify_failed", job, detail)],
        )
        return until

    def _event(self, kind: str, job: NotificationJob, detail: Mapping[str, object]) -> NewEvent:
        full = {**detail, "endpoint": endpoint_host(job.url)}
        return NewEvent(kind, self._clock.now(), job.document, job.recipient, job.network.value, full)
