"""The v1 HTTP API for agency document systems (aiohttp, behind mutual TLS).

Every error a client can cause leaves as JSON ``{"error": code, "message": text,
"request_id": id}`` with the status of its ``ClientError`` class; anything
else is a 500 that names only the request id (the log has the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from gateway.adapters.ports import Trust
from gateway.domain.agencies import Registry
from gateway.domain.body import PART_BYTES, Body
from gateway.domain.clock import Clock
from gateway.domain.transfer import framing
from gateway.domain.vocabulary import Classification, Network
from gateway.errors import (
    BadRequest,
    CheckersBusy,
    ClientError,
    DeliveryError,
    DuplicateHeader,
    Forbidden,
    NotFound,
    PackageTooLarge,
    RequestTimeout,
    StoreError,
    TooManyRequests,
    Unauthenticated,
    UploadsBusy,
)
from gateway.exchange.inbound import Inbound
from gateway.exchange.intake import Accepted, Intake
from gateway.exchange.mailbox import Mailbox, changes
from gateway.exchange.notifications import Endpoints
from gateway.exchange.ports import Endpoint, EventRecord, InboxItem, Store
from gateway.exchange.ratelimit import SubmissionLimiter, retry_after_header
from gateway.http.edge import peer_gone, watch_body
from gateway.http.openapi import contract_bytes
from gateway.infra.files.spool import Spool, Upload
from gateway.operators import logs
from gateway.operators.logs import clean_request_id
from gateway.operators.metrics import EdgeCounts

log = logging.getLogger("gateway.http.api")

REQUEST_ID = web.RequestKey("request_id", str)
MAX_BYTES = web.AppKey("max_bytes", int)
BODY_TIMEOUT = web.AppKey("body_timeout", float)
EDGE_COUNTS = web.AppKey("edge_counts", EdgeCounts)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, code: str, message: str, request_id: str) -> web.Response:
    return web.json_response({"error": code, "message": message, "request_id": request_id}, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = clean_request_id(request.headers.get("X-Request-Id"))
    request[REQUEST_ID] = request_id
    # Every log line and delivery-log record written for this request names it (gateway.operators.logs).
    context = (logs.REQUEST_ID.set(request_id), logs.DOCUMENT.set(request.match_info.get("id")))
    # From the headers on, the body has body_timeout seconds to arrive, whoever reads it.
    deadline = watch_body(request, request.app[BODY_TIMEOUT], request.app[EDGE_COUNTS])
    try:
        response = await _handle(request, handler, request_id)
    finally:
        if deadline is not None:
            deadline.cancel()
        logs.REQUEST_ID.reset(context[0])
        logs.DOCUMENT.reset(context[1])
    response.headers["X-Request-Id"] = request_id
    return response


async def _handle(request: web.Request, handler: Handler, request_id: str) -> web.StreamResponse:
    try:
        response = await handler(request)
    except ClientError as exc:
        log.info(
            "%s %s -> %d %s: %s",
            request.method,
            request.path,
            exc.status,
            exc.code,
            exc.message,
            extra={"request_id": request_id},
        )
        response = _error(exc.status, exc.code, exc.message, request_id)
        if isinstance(exc, TooManyRequests):
            response.headers["Retry-After"] = retry_after_header(exc.retry_after)
        if isinstance(exc, RequestTimeout):
            response.force_close()  # the rest of a late body is not waited for
    except (CheckersBusy, UploadsBusy) as exc:  # load, not the client's fault: 503, retry after a while
        log.info("%s %s -> 503 %s", request.method, request.path, exc.code, extra={"request_id": request_id})
        response = _error(exc.status, exc.code, exc.message, request_id)
        response.headers["Retry-After"] = retry_after_header(exc.retry_after)
    except web.HTTPRequestEntityTooLarge:
        too_large = PackageTooLarge(f"the request body exceeds the limit of {request.app[MAX_BYTES]} bytes")
        response = _error(too_large.status, too_large.code, too_large.message, request_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "bad_request")
        response = _error(exc.status, code, exc.reason, request_id)
    except asyncio.CancelledError:
        if peer_gone(request):
            _client_went_away(request, request_id)
        raise
    except Exception as exc:
        if not (isinstance(exc, ConnectionError) and peer_gone(request)):
            log.exception(
                "unhandled error on %s %s", request.method, request.path, extra={"request_id": request_id}
            )
            return _error(500, "internal", f"internal error; quote request id {request_id}", request_id)
        # The client closed its connection (mid-body, most often): nobody will read this answer.
        _client_went_away(request, request_id)
        response = _error(400, "bad_request", "the connection closed before the answer", request_id)
    return response


def _client_went_away(request: web.Request, request_id: str) -> None:
    # An INFO line and a counter: a client that drops connections must not fill the error log.
    request.app[EDGE_COUNTS].disconnects += 1
    log.info(
        "%s %s: the connection closed before the answer",
        request.method,
        request.path,
        extra={"request_id": request_id},
    )


class Api:
    """Request handlers; each authenticates the calling agency from its TLS client certificate."""

    def __init__(
        self,
        intake: Intake,
        mailbox: Mailbox,
        registry: Registry,
        trust: Trust,
        store: Store,
        clock: Clock,
        limiter: SubmissionLimiter | None = None,
        *,
        network: Network | None = None,
        inbound: Inbound | None = None,
        endpoints: Endpoints | None = None,
        uploads: UploadBudget | None = None,
        spool: Spool | None = None,
    ) -> None:
        self._spool = spool
        self._endpoints = endpoints
        self._uploads = uploads or UploadBudget(None)
        self._limiter = limiter
        self._network = network
        self._inbound = inbound
        self._intake = intake
        self._mailbox = mailbox
        self._registry = registry
        self._trust = trust
        self._store = store
        self._clock = clock

    def agency_of(self, request: web.Request) -> str:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if isinstance(ssl_object, ssl.SSLObject) else None
        if not der:
            raise Unauthenticated("no client certificate: connect with your agency's TLS certificate")
        identity = self._trust.client(der, at=self._clock.now())
        agency = self._registry.get(identity.code)
        if agency is None or agency.state != "active":
            raise Forbidden(f"{identity.code} is not an active agency of this gateway")
        if self._network is not None and agency.network is not self._network:
            raise Forbidden(
                f"agency {agency.code} belongs to the {agency.network} network; "
                f"this is the {self._network} node"
            )
        return agency.code

    def _peer_cert(self, request: web.Request) -> bytes:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if isinstance(ssl_object, ssl.SSLObject) else None
        if not der:
            raise Unauthenticated(
                "no client certificate: a peer node connects with its adapter's TLS certificate"
            )
        return bytes(der)

    async def receive_transfer(self, request: web.Request) -> web.Response:
        """A peer node hands over a sealed transfer for this network (the crossing of a bridge)."""
        if self._inbound is None:
            raise Forbidden("this node serves every network itself and takes no transfers from peers")
        identity = self._trust.client(self._peer_cert(request), at=self._clock.now())
        from_network = self._inbound.peer_network(identity)
        # The header and the package it names, framed as one multipart body. A classified package
        # travels as its ciphertext, larger than the package the sender sent: twice the limit.
        limit = 2 * request.app[MAX_BYTES] + (1 << 20)
        with self._upload() as upload:
            try:
                sealed, package = await _framed_transfer(request, upload, limit)
            except DeliveryError as exc:
                raise BadRequest(f"transfer refused: {exc.message}") from None
            taken = await self._inbound.take_over(sealed, package, from_network=from_network)
        return web.json_response({"id": taken.id, "stored": True}, status=201 if taken.created else 200)

    @contextlib.contextmanager
    def _upload(self) -> Iterator[Upload]:
        """This request's spool files, removed when it ends, however it ends (the node's spool;
        an Api built without one, as a test may, spools to a temporary folder of its own)."""
        if self._spool is None:
            self._spool = Spool(Path(tempfile.mkdtemp(prefix="gateway-spool-")))
        with self._spool.upload() as upload:
            yield upload

    def _admit(self, agency: str) -> None:
        wait = self._limiter.take(agency) if self._limiter else 0.0
        if wait > 0:
            raise TooManyRequests(
                f"agency {agency} is over its submission limit; nothing was stored, send again in "
                f"{retry_after_header(wait)} s",
                retry_after=wait,
            )

    async def submit(self, request: web.Request) -> web.Response:
        agency = self.agency_of(request)
        self._admit(agency)
        declared = _one_header(request, "X-Classification")
        try:
            level = Classification.from_slug(declared.strip()) if declared else None
        except BadRequest as exc:
            raise BadRequest(f"X-Classification header: {exc.message}") from None
        with self._uploads.hold(_upload_size(request)), self._upload() as upload:
            body = await _body(request, upload)
            accepted = await self._intake.submit(agency, body, declared=level)
        return web.json_response(_accepted_view(accepted), status=202)

    async def post_status(self, request: web.Request) -> web.Response:
        agency = self.agency_of(request)
        with self._uploads.hold(_upload_size(request)), self._upload() as upload:
            body = await _body(request, upload)
            accepted = await self._intake.submit(agency, body, about=request.match_info["id"])
        return web.json_response(_accepted_view(accepted), status=202)

    async def inbox(self, request: web.Request) -> web.Response:
        agency = self.agency_of(request)
        include_fetched = (_one_query(request, "all") or "") in ("1", "true", "yes")
        limit = _int_query(request, "limit", 500, 1, 5000)
        items = await self._mailbox.inbox(agency, include_fetched=include_fetched, limit=limit)
        return web.json_response({"agency": agency, "documents": [_inbox_view(i) for i in items]})

    async def fetch(self, request: web.Request) -> web.StreamResponse:
        agency = self.agency_of(request)
        sealed, package = await self._mailbox.delivery(agency, request.match_info["id"])
        # The package is as its sender signed it; that a replacement has since superseded it is
        # the gateway's word, so it travels beside the package, not in it.
        newer = await self._mailbox.superseded_by(agency, request.match_info["id"])
        framed = framing(sealed, package.size)
        # Streamed, so prepared here: the middleware cannot add its header once the body is going.
        response = web.StreamResponse(
            headers={"Content-Type": framed.content_type, "X-Request-Id": request[REQUEST_ID]}
        )
        response.content_length = framed.length(package.size)
        if newer is not None:
            response.headers["X-Superseded-By"] = newer
        await response.prepare(request)
        await response.write(framed.head)
        # The stored parts one at a time, each awaited until the socket took it: the package is
        # never whole in the node (issue 13).
        sent = 0
        async for piece in package.pieces():
            sent += len(piece)
            await _write_in_slices(response, piece)
        if sent != package.size:  # cannot happen unless the store lies: never end a short body well
            raise StoreError(f"document {request.match_info['id']} is stored shorter than its size")
        await response.write(framed.tail)
        await response.write_eof()
        return response

    async def attachment(self, request: web.Request) -> web.StreamResponse:
        """One decoded attachment of an unclassified document, by its ContentId, with its type, a
        safe file name and its SHA-256 (``X-Content-SHA256``, hex) to check it by; streamed."""
        agency = self.agency_of(request)
        found = await self._mailbox.attachment(agency, request.match_info["id"], request.match_info["cid"])
        headers = {
            "Content-Type": found.content_type if _MEDIA_TYPE.fullmatch(found.content_type) else _OCTETS,
            "Content-Disposition": content_disposition(found.name),
            "X-Content-SHA256": found.sha256,
            "X-Content-Type-Options": "nosniff",  # never rendered as what it claims: it is a file
            "X-Request-Id": request[REQUEST_ID],
        }
        response = web.StreamResponse(headers=headers)
        response.content_length = found.size
        await response.prepare(request)
        try:
            async for piece in found.pieces:
                await _write_in_slices(response, piece)
        except StoreError as exc:
            # The stored bytes changed while they were sent. The status line is gone, so the one
            # refusal left is to cut the connection short of Content-Length (an error answer
            # written now would read as more of the body).
            log.error(
                "%s %s: %s", request.method, request.path, exc, extra={"request_id": request[REQUEST_ID]}
            )
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response

    async def report_failure(self, request: web.Request) -> web.Response:
        """A recipient's system reports that it could not decrypt or verify what it fetched."""
        agency = self.agency_of(request)
        try:
            body = await request.json()
            stage, reason = str(body["stage"]), str(body["reason"])
        except (ValueError, KeyError, TypeError):
            raise BadRequest('expected JSON {"stage": "...", "reason": "..."}') from None
        await self._mailbox.report_failure(agency, request.match_info["id"], stage=stage, reason=reason)
        return web.json_response({"recorded": True}, status=202)

    async def receipts(self, request: web.Request) -> web.Response:
        agency = self.agency_of(request)
        return web.json_response(await self._mailbox.receipts(agency, request.match_info["id"]))

    async def trace(self, request: web.Request) -> web.Response:
        agency = self.agency_of(request)
        events = await self._mailbox.trace(agency, request.match_info["id"])
        return web.json_response({"id": request.match_info["id"], "events": [event_view(e) for e in events]})

    async def agencies(self, request: web.Request) -> web.Response:
        self.agency_of(request)
        network = _one_query(request, "network")
        limit = _int_query(request, "limit", 1000, 1, 200_000)
        offset = _int_query(request, "offset", 0, 0, 10_000_000)
        rows = [a for a in self._registry if network is None or a.network.value == network]
        return web.json_response(
            {"total": len(rows), "agencies": [agency_view(a) for a in rows[offset : offset + limit]]}
        )

    def _endpoint_book(self) -> Endpoints:
        if self._endpoints is None:
            raise NotFound("push notifications are not offered by this gateway")
        return self._endpoints

    async def put_endpoint(self, request: web.Request) -> web.Response:
        """The calling agency's push-notification endpoint: ``{"url": "https://..."}``."""
        agency = self.agency_of(request)
        try:
            body = await request.json()
        except ValueError:
            raise BadRequest('expected JSON {"url": "https://..."}') from None
        url = body.get("url") if isinstance(body, dict) else None
        endpoint = await self._endpoint_book().register(agency, url)
        return web.json_response(_endpoint_view(endpoint))

    async def get_endpoint(self, request: web.Request) -> web.Response:
        agency = self.agency_of(request)
        endpoint = await self._endpoint_book().get(agency)
        if endpoint is None:
            raise NotFound(f"agency {agency} has no notification endpoint; PUT one to register it")
        return web.json_response(_endpoint_view(endpoint))

    async def delete_endpoint(self, request: web.Request) -> web.Response:
        agency = self.agency_of(request)
        if not await self._endpoint_book().remove(agency):
            raise NotFound(f"agency {agency} has no notification endpoint")
        return web.Response(status=204)

    async def openapi(self, request: web.Request) -> web.Response:
        """This API's OpenAPI contract: for any active agency, as every /v1 route (it is also in the
        source tree, gateway/http/openapi.json, for an integrator without a certificate yet)."""
        self.agency_of(request)
        return web.Response(body=contract_bytes(), content_type="application/json", charset="utf-8")

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "pending_routes": await self._store.pending_routes()})


class UploadBudget:
    """How many bytes of request bodies may be read at once (``max_upload_bytes_in_flight``):
    past it, an upload is answered ``503 uploads_busy`` with Retry-After before its body is read,
    so that concurrent 50 MB uploads cannot exhaust the node's memory. One upload is always let
    in when none is held, so a budget below one package cannot refuse everything. Each upload
    holds its Content-Length (the package limit when it sends none) until its answer."""

    def __init__(self, limit: int | None) -> None:
        self._limit = limit
        self._held = 0

    @property
    def held(self) -> int:
        return self._held

    @contextlib.contextmanager
    def hold(self, size: int) -> Iterator[None]:
        if self._limit is not None and self._held and self._held + size > self._limit:
            raise UploadsBusy(
                f"the gateway is reading {self._held} bytes of uploads, its budget is {self._limit}; "
                "nothing was stored, send again in 1 s",
                retry_after=1.0,
            )
        self._held += size
        try:
            yield
        finally:
            self._held -= size


async def _write_in_slices(response: web.StreamResponse, data: bytes) -> None:
    """Slices of ``data``, one at a time, each awaited until the socket took it: written whole, a
    50 MB package sat in TLS's write backlog twice over (plain and encrypted; bench/large.py)."""
    view = memoryview(data)
    for at in range(0, len(view), _WRITE_CHUNK):
        await response.write(view[at : at + _WRITE_CHUNK])


def _upload_size(request: web.Request) -> int:
    return request.content_length if request.content_length is not None else request.app[MAX_BYTES]


_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}")
_OCTETS = "application/octet-stream"
_WRITE_CHUNK = 256 * 1024


def content_disposition(name: str) -> str:
    """``attachment`` with the file name twice: plain ASCII (anything else, quotes, slashes and
    controls as ``_``) for old clients, and RFC 5987 UTF-8 for the rest; never a path."""
    plain = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\/;' else "_" for ch in name) or "attachment"
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"


async def _body(request: web.Request, upload: Upload) -> Body:
    """The request body (a package), refused past the package limit as it arrives: in memory
    when small, else spooled to the upload's file with its SHA-256 counted on the way in."""
    limit = request.app[MAX_BYTES]
    if request.content_length is not None and request.content_length > limit:
        raise PackageTooLarge(f"the body is {request.content_length} bytes; the limit is {limit}")
    chunks = request.content.iter_chunked(PART_BYTES)
    return await upload.take(chunks, limit=limit, expected=request.content_length)


_MAX_SEALED = 1 << 20  # a sealed transfer header is a few KB; its part is refused past this


async def _framed_transfer(request: web.Request, upload: Upload, limit: int) -> tuple[bytes, Body]:
    """A peer's multipart body (``gateway.domain.transfer.framing``) read as it arrives: the
    sealed header into memory, the package into the upload (spooled when large, its digest
    counted as it comes; never classified plaintext, so not sealed: the node can parse an
    unclassified one from the file for its subject), then exactly the closing boundary. Past
    ``limit``: refused. The same reading as the agency side's fetch (``Upload.take_framed``)."""
    if request.content_length is not None and request.content_length > limit:
        raise PackageTooLarge(f"the body is {request.content_length} bytes; the limit is {limit}")
    return await upload.take_framed(request.content.read, limit=limit, max_sealed=_MAX_SEALED)


def _one_header(request: web.Request, name: str) -> str | None:
    """The value of a header the gateway acts on; sent twice, it is refused rather than guessed."""
    values = request.headers.getall(name, [])
    if len(values) > 1:
        raise DuplicateHeader(f"the {name} header came {len(values)} times; send it once")
    return values[0] if values else None


def _one_query(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise BadRequest(f"query parameter {name} came {len(values)} times; give it once")
    return values[0] if values else None


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = _one_query(request, name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise BadRequest(f"query parameter {name} must be a whole number from {low} to {high}")
    return int(raw)


def _accepted_view(accepted: Accepted) -> dict[str, Any]:
    return {
        "id": accepted.id,
        "duplicate": not accepted.created,
        "recipients": [
            {
                "code": d.recipient,
                "addressed": d.addressed,
                "network": accepted.networks[d.recipient],
                "forwarded_via": list(d.chain) if d.chain else None,
            }
            for d in accepted.recipients
        ],
    }


def _inbox_view(item: InboxItem) -> dict[str, Any]:
    doc, d = item.document, item.delivery
    return {
        "id": doc.id,
        "kind": doc.kind,
        "from": doc.sender,
        "document_id": doc.document_id,
        "subject": doc.subject,
        "priority": int(doc.priority),
        "classification": doc.classification.slug,
        "status_code": doc.status_code,
        "response_for": doc.response_for,
        "size": doc.size,
        "addressed": d.addressed,
        "state": d.state.value,
        "accepted_at": doc.accepted_at.isoformat(),
        "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None,
        "recalled": item.recalled,
        **changes(doc),
        "superseded_by": item.superseded_by,
    }


def _endpoint_view(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "agency": endpoint.agency,
        "url": endpoint.url,
        "registered_at": endpoint.registered_at.isoformat().replace("+00:00", "Z"),
    }


def event_view(e: EventRecord) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "at": e.at.isoformat(),
        "event": e.kind,
        "recipient": e.recipient,
        "network": e.network,
        **({"detail": e.detail} if e.detail else {}),
    }


def agency_view(a: Any) -> dict[str, Any]:
    return {
        "code": a.code,
        "name": a.name,
        "network": a.network.value,
        "parent": a.parent,
        "clearance": a.clearance.slug,
        "state": a.state.value if hasattr(a.state, "value") else a.state,
        "successor": a.successor,
        "retired_on": a.retired_on.isoformat() if a.retired_on else None,
    }


def make_app(
    api: Api, *, max_bytes: int, body_timeout: float = 120.0, edge_counts: EdgeCounts | None = None
) -> web.Application:
    """The API's routes behind ``errors_middleware``; ``edge_counts`` receives the disconnects and
    body timeouts it sees (``/metrics``)."""
    # Room above the package limit for nothing else: the body IS the package.
    app = web.Application(client_max_size=max_bytes, middlewares=[errors_middleware])
    app[MAX_BYTES] = max_bytes
    app[BODY_TIMEOUT] = body_timeout
    app[EDGE_COUNTS] = edge_counts if edge_counts is not None else EdgeCounts()
    app.router.add_post("/v1/edocs", api.submit)
    app.router.add_get("/v1/inbox", api.inbox)
    app.router.add_get("/v1/edocs/{id}", api.fetch)
    app.router.add_get("/v1/edocs/{id}/attachments/{cid}", api.attachment)
    app.router.add_post("/v1/edocs/{id}/status", api.post_status)
    app.router.add_get("/v1/edocs/{id}/receipts", api.receipts)
    app.router.add_post("/v1/edocs/{id}/failures", api.report_failure)
    app.router.add_get("/v1/edocs/{id}/trace", api.trace)
    app.router.add_get("/v1/agencies", api.agencies)
    app.router.add_post("/v1/transfers", api.receive_transfer)
    app.router.add_put("/v1/notifications/endpoint", api.put_endpoint)
    app.router.add_get("/v1/notifications/endpoint", api.get_endpoint)
    app.router.add_delete("/v1/notifications/endpoint", api.delete_endpoint)
    app.router.add_get("/v1/openapi.json", api.openapi)
    app.router.add_get("/healthz", api.healthz)
    return app


def server_tls_context(cert_chain: str, key: str, trust_pem: str) -> ssl.SSLContext:
    """Mutual TLS: a client certificate is asked for and verified against the dev CAs when offered.

    CERT_OPTIONAL (not REQUIRED) so that a client without one gets a JSON 401 it can read,
    instead of a bare handshake failure.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_chain, key)
    ctx.load_verify_locations(cafile=trust_pem)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx
