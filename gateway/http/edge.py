"""The HTTP edge: what the gateway does with a connection before and around the API's handlers.

A client that connects and stalls costs a socket and a little memory, and nothing else would ever
close it: so every stage has a deadline, and no one client certificate (nor all of them together)
may hold more than its share of connections.

- TLS handshake: ``tls_handshake_timeout`` (asyncio's ``ssl_handshake_timeout``).
- Request headers: ``header_timeout``, from the end of the handshake or of the last answer until
  the headers are complete. This is aiohttp's ``keepalive_timeout``: its timer is not reset by
  bytes that arrive, only by a complete request, so a client that sends half its headers is
  closed when it runs out, and so is an idle keep-alive connection.
- Request body: ``body_timeout`` from the headers to the body's last byte (``watch_body``): late,
  the read fails with ``RequestTimeout``, answered ``408`` and closed.
- Caps: ``max_connections`` in total (over it: ``503 server_busy``) and
  ``max_connections_per_client`` per client certificate (over it: ``429 too_many_connections``);
  connections without a certificate share one such budget, so anonymous clients cannot crowd
  out the agencies. The answer is sent when the client's first bytes arrive (or after a short
  grace), so that it reads an answer rather than a reset, and the connection is closed.

``EdgeProtocol`` also answers malformed HTTP with the API's JSON error body (aiohttp's own page
echoes part of the request back) and logs it at INFO, not as an error.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, BadStatusLine, InvalidHeader, LineTooLong

from gateway.errors import ConfigError, RequestTimeout, ServerBusy, TooManyConnections
from gateway.operators.logs import clean_request_id
from gateway.operators.metrics import EdgeCounts

log = logging.getLogger("gateway.http.edge")

# How long a refused connection waits for the client's first bytes before it is answered anyway.
_REFUSAL_GRACE = 1.0
# aiohttp reads and drops the rest of a body its handler did not read, so that the client can
# read the answer instead of a reset; bounded, so that a stalled body is not held for long.
_LINGER = 2.0
_MALFORMED = (
    (BadHttpMethod, "the request method is not a valid HTTP method"),
    (BadStatusLine, "the request line is not an HTTP/1.1 request line"),
    (LineTooLong, "the request line or a header is too long"),
    (InvalidHeader, "a request header is malformed"),
)


@dataclass(frozen=True)
class EdgeLimits:
    """The edge's deadlines (seconds) and caps, as ``gateway.toml`` sets them."""

    tls_handshake_timeout: float = 10.0
    header_timeout: float = 20.0
    body_timeout: float = 120.0
    max_connections: int = 2000
    max_connections_per_client: int = 200


class ConnectionGate:
    """Counts open connections, in total and per client (the SHA-256 of its certificate, or
    ``b""`` for every connection without one), and says which cap a new one would exceed."""

    def __init__(self, limits: EdgeLimits, counts: EdgeCounts) -> None:
        self._limits = limits
        self._counts = counts
        self._per_client: dict[bytes, int] = {}

    def admit(self, client: bytes) -> str | None:
        """Take a slot for ``client``; returns the cap it would exceed (``"total"`` or
        ``"per_client"``) instead, taking nothing."""
        held = self._per_client.get(client, 0)
        if self._counts.open_connections >= self._limits.max_connections:
            return "total"
        if held >= self._limits.max_connections_per_client:
            return "per_client"
        self._per_client[client] = held + 1
        self._counts.open_connections += 1
        return None

    def release(self, client: bytes) -> None:
        held = self._per_client.pop(client, 0) - 1
        if held > 0:
            self._per_client[client] = held
        self._counts.open_connections -= 1


def client_key(transport: asyncio.BaseTransport) -> bytes:
    """Whom a connection counts against: the SHA-256 of its TLS client certificate, or ``b""``."""
    ssl_object = transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if isinstance(ssl_object, ssl.SSLObject) else None
    return hashlib.sha256(der).digest() if der else b""


def peer_gone(request: web.BaseRequest) -> bool:
    """Whether the connection of ``request`` is closed or closing (the client went away)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def watch_body(request: web.BaseRequest, seconds: float, counts: EdgeCounts) -> asyncio.TimerHandle | None:
    """Fail the read of ``request``'s body with ``RequestTimeout`` if its last byte has not
    arrived ``seconds`` from now; cancel the returned handle when the request is answered."""
    if not request.body_exists:
        return None
    body = request.content

    def late() -> None:
        if not body.is_eof():  # is_eof: every byte received, whether or not the handler read it
            counts.timeouts["body"] += 1
            body.set_exception(
                RequestTimeout(f"the request body did not arrive within {seconds:g} s; connection closed")
            )

    return asyncio.get_running_loop().call_later(seconds, late)


def error_body(code: str, message: str, request_id: str) -> bytes:
    """The API's JSON error body (``gateway.http.api``), for answers written outside a handler."""
    return json.dumps({"error": code, "message": message, "request_id": request_id}).encode()


class EdgeProtocol(web.RequestHandler):
    """aiohttp's HTTP/1.1 protocol with the caps of a ``ConnectionGate`` and the gateway's own
    answer to malformed requests."""

    def __init__(
        self, manager: web.Server, *, loop: asyncio.AbstractEventLoop, gate: ConnectionGate,
        counts: EdgeCounts, **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(manager, loop=loop, **kwargs)
        self._gate = gate
        self._counts = counts
        self._client: bytes | None = None  # set while this connection holds a slot of the gate
        self._refused: tuple[asyncio.Transport, bytes] | None = None  # where to write the refusal
        self._grace: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Called once the TLS handshake is done: the client certificate is known.
        client = client_key(transport)
        cap = self._gate.admit(client)
        if cap is None:
            self._client = client
            super().connection_made(transport)
            return
        self._counts.refused[cap] += 1
        request_id = clean_request_id(None)
        error: TooManyConnections | ServerBusy
        if cap == "total":
            error = ServerBusy("the gateway holds its maximum of open connections; connect again later")
        else:
            error = TooManyConnections(
                "this client certificate holds its maximum of open connections; reuse one of them"
            )
        log.info("connection refused (%s cap reached), answered %d %s", cap, error.status, error.code,
                 extra={"request_id": request_id})  # fmt: skip
        body = error_body(error.code, error.message, request_id)
        head = (
            f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\n"
            "Content-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nX-Request-Id: {request_id}\r\n"
            "Connection: close\r\n\r\n"
        )
        self._refused = (cast(asyncio.Transport, transport), head.encode() + body)
        self._grace = self._loop.call_later(_REFUSAL_GRACE, self._answer_refused)

    def _answer_refused(self) -> None:
        if self._refused is None:
            return
        transport, answer = self._refused
        self._refused = None
        if self._grace is not None:
            self._grace.cancel()
        if not transport.is_closing():
            transport.write(answer)
            transport.close()  # after the buffered answer (and TLS close_notify) are sent

    def data_received(self, data: bytes) -> None:
        if self._client is None:  # refused: what the client sends is not read, only answered
            self._answer_refused()
            return
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._client is None:
            self._refused = None
            if self._grace is not None:
                self._grace.cancel()
            return
        self._gate.release(self._client)
        self._client = None
        super().connection_lost(exc)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The answer to a request that never reached the API's handlers (malformed HTTP):
        the API's JSON error body, with nothing of the request in it or in the log."""
        if request.writer.output_size > 0:  # an answer was already under way: only closing is left
            raise ConnectionError("the connection broke while its answer was being sent")
        request_id = clean_request_id(None)
        if status == 400:
            self._counts.malformed += 1
            what = next(
                (text for kind, text in _MALFORMED if isinstance(exc, kind)), "its headers or framing"
            )
            log.info("malformed HTTP request (%s), answered 400 bad_request", type(exc).__name__,
                     extra={"request_id": request_id})  # fmt: skip
            body = error_body("bad_request", f"not a well-formed HTTP/1.1 request: {what}", request_id)
        else:  # not reached through the API, whose middleware answers every error itself
            log.error("error %d outside the API's handlers", status, exc_info=exc,
                      extra={"request_id": request_id})  # fmt: skip
            body = error_body("internal", f"internal error; quote request id {request_id}", request_id)
        response = web.Response(body=body, status=status, content_type="application/json")
        response.headers["X-Request-Id"] = request_id
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        # After a 408 aiohttp reads on in the body and meets the RequestTimeout again; after a
        # disconnect it meets the lost connection. Both were answered and counted already.
        if isinstance(kw.get("exc_info"), RequestTimeout | ConnectionError):
            log.debug("connection closed after %s", type(kw["exc_info"]).__name__)
            return
        super().log_exception(*args, **kw)


BACKLOG = 1024  # a burst of connects waits in the kernel's queue rather than being refused there


def bind_listeners(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address ``host`` names (as asyncio's ``create_server`` would:
    ``SO_REUSEADDR``, IPv6 sockets IPv6 only), bound now.

    ``gateway serve`` calls this before it opens the database, so that a port already in use
    (a second ``serve``) is refused before any migration runs; the node then serves on these very
    sockets. A busy port or an unusable host is a ``ConfigError`` saying what to change."""
    where = f"{host or '*'}:{port}"
    try:
        found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {where}: {exc.strerror}; check `host` in gateway.toml") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(found):  # one socket per address
            s = socket.socket(family, kind, proto)
            sockets.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:  # the port the first address got, on all of them
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            s.bind(address)
            s.listen(BACKLOG)
            s.setblocking(False)
    except OSError as exc:
        for s in sockets:
            s.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"cannot listen on {where}: the port is in use (another `gateway serve`?); stop it, "
                "or choose another port with `gateway serve --port N` or `port =` in the config"
            ) from None
        raise ConfigError(f"cannot listen on {where}: {exc.strerror}; check `host` and `port`") from None
    return sockets


class EdgeSite(web.BaseSite):
    """A TLS listener whose connections are ``EdgeProtocol``s (aiohttp's ``TCPSite`` has no
    handshake timeout and makes plain ``RequestHandler``s). It serves on ``sockets`` when given
    (bound beforehand by ``bind_listeners``), else binds ``host``:``port`` when it starts."""

    __slots__ = ("_counts", "_host", "_limits", "_more", "_port", "_sockets", "port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext,
        limits: EdgeLimits,
        counts: EdgeCounts,
        sockets: Sequence[socket.socket] = (),
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=BACKLOG)
        self._host, self._port = host, port
        self._limits, self._counts = limits, counts
        self._sockets = list(sockets)
        self._more: list[asyncio.AbstractServer] = []  # one server per further address of the host
        self.port = sockets[0].getsockname()[1] if sockets else port  # the bound port once started

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None  # BaseSite refuses a runner that was not set up
        gate, counts, limits = ConnectionGate(self._limits, self._counts), self._counts, self._limits

        def protocol() -> EdgeProtocol:
            return EdgeProtocol(
                server, loop=loop, gate=gate, counts=counts, access_log=None,
                keepalive_timeout=limits.header_timeout, lingering_time=min(_LINGER, limits.body_timeout),
            )  # fmt: skip

        sockets, self._sockets = self._sockets or bind_listeners(self._host, self._port), []
        servers: list[asyncio.AbstractServer] = []
        try:
            for s in sockets:
                servers.append(
                    await loop.create_server(
                        protocol, sock=s, ssl=self._ssl_context,
                        ssl_handshake_timeout=limits.tls_handshake_timeout,
                    )
                )  # fmt: skip
        except BaseException:
            for started in servers:
                started.close()
            for s in sockets[len(servers) :]:
                s.close()
            raise
        self._server, self._more = servers[0], servers[1:]
        self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for more in self._more:
            more.close()
        self._more = []
        await super().stop()
