"""The typed client an agency's document system imports to exchange documents through the gateway.

``AsyncAgencyClient`` (asyncio, aiohttp) does the work; ``AgencyClient`` is the same client for
synchronous code: it drives the async one on an event loop of its own. Both present the
agency's TLS certificate, sign what they send with the agency's signing key, and open what
they fetch (seal and sender's signature verified, a classified package decrypted) with
``gateway.agency_side.packages.open_delivery``. The ``gateway`` command's agency commands are
built on ``AgencyClient``.

Errors are the gateway's own (``gateway.errors``): an error answer ``{"error": code, "message":
text}`` is raised as the class of that code (``NotFound`` for ``not_found``, ``SenderMismatch``
for ``sender_mismatch``, ``TooManyRequests`` with ``retry_after``...), its message ending in
``(HTTP status code)``; a code this client does not know, or a 5xx, is a ``RemoteError``. A
gateway that cannot be reached (refused, TLS failed, timed out) is ``GatewayUnreachable``.

    keys = AgencyKeys.from_dev_pki(home / "certs_dev", "000.00.00.G22", home / "registry.csv")
    with AgencyClient("https://localhost:8443", keys) as g22:
        accepted = g22.send(Draft(to=["000.00.00.A01"], subject="Về việc ..."))
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import io
import json
import secrets
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote
from zoneinfo import ZoneInfo

import aiohttp
from lxml import etree

from gateway.agency_side.keys import AgencyKeys
from gateway.agency_side.packages import arrival_receipt, open_carried
from gateway.agency_side.results import (
    Accepted,
    Delivery,
    Draft,
    InboxEntry,
    Receipts,
    TraceEvent,
    due_text,
)
from gateway.domain.agencies import AgencyCode
from gateway.domain.body import Body
from gateway.domain.edxml import (
    Business,
    BusinessDocType,
    DocumentRef,
    Edoc,
    NewEdoc,
    Organ,
    Replacement,
    build_edoc,
    build_status,
)
from gateway.domain.vocabulary import Classification, StatusCode
from gateway.domain.xmlsafe import parse_xml
from gateway.errors import (
    BadRequest,
    CheckersBusy,
    ClientError,
    CryptoError,
    DeliveryError,
    GatewayError,
    GatewayUnreachable,
    PackageTooLarge,
    RemoteError,
    ServerBusy,
    TooManyRequests,
)
from gateway.infra.files.spool import Spool, Upload

__all__ = [
    "Accepted",
    "AgencyClient",
    "AgencyKeys",
    "AsyncAgencyClient",
    "Delivery",
    "Draft",
    "InboxEntry",
    "Receipts",
    "TraceEvent",
    "error_from_answer",
]

VIETNAM = ZoneInfo("Asia/Ho_Chi_Minh")
XML = "application/xml; charset=utf-8"
_ONE_WRITE = 1 << 20
_CHUNK = 256 * 1024
PROGRESS_FROM = 4 * 1024 * 1024  # a transfer this large is long enough to be worth a progress bar
# The largest delivered package read: a 200 MiB package (the highest max_package_bytes a node
# takes), encrypted and so in base64, with room for its list of recipients.
MAX_DELIVERED_BYTES = 320 * 1024 * 1024
_MAX_SEALED = 1 << 20  # a sealed transfer header is a few KB
Progress = Callable[[str, int, int], None]  # (sending | receiving, bytes so far, bytes in all)
T = TypeVar("T")


# --- error answers -------------------------------------------------------------------------------


def _codes() -> dict[str, type[GatewayError]]:
    """Every stable error code of the tree and its class (most specific class of a code wins)."""
    found: dict[str, type[GatewayError]] = {}
    pending: list[type[GatewayError]] = [ClientError, ServerBusy, CheckersBusy]
    while pending:
        cls = pending.pop()
        code = getattr(cls, "code", None)
        if isinstance(code, str) and cls is not ClientError:
            found[code] = cls
        pending.extend(cls.__subclasses__())
    return found


_ERROR_CLASSES = _codes()


def error_from_answer(status: int, body: bytes, retry_after: str | None = None) -> GatewayError:
    """The exception of the error tree for an error answer: its JSON ``error`` code's class."""
    try:
        answer = json.loads(body)
        code, message = str(answer["error"]), str(answer["message"])
    except (ValueError, TypeError, KeyError):
        return RemoteError(status, "http_error", body[:200].decode("utf-8", errors="replace"))
    cls = _ERROR_CLASSES.get(code)
    if cls is None or getattr(cls, "status", None) != status:
        return RemoteError(status, code, message)
    text = f"{message} (HTTP {status} {code})"
    if issubclass(cls, TooManyRequests | CheckersBusy):
        return cls(text, retry_after=_seconds(retry_after))
    return cls(text)


def _seconds(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 1.0
    except ValueError:
        return 1.0


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    headers: Mapping[str, str]  # names in lower case
    delivered: tuple[bytes, Body] | None = None  # a delivery read into an upload: (sealed, package)
    unreadable: str = ""  # why a delivery could not be read so (not framed as a delivery is)

    def json(self) -> Any:
        return json.loads(self.body)


# --- the async client ----------------------------------------------------------------------------


class AsyncAgencyClient:
    """An agency system's connection to the gateway at ``url`` (``https://host:port``), as
    agency ``keys.code``. Use it as ``async with``, or call ``close()``."""

    def __init__(
        self,
        url: str,
        keys: AgencyKeys,
        *,
        timeout: float = 60.0,
        progress: Progress | None = None,
        spool_dir: Path | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.keys = keys
        self.progress = progress  # told how a transfer over PROGRESS_FROM bytes goes, if given
        # Where a large delivery is written as it arrives (a directory of its own, owner-only,
        # removed after the fetch): the system's temporary directory unless given.
        self.spool_dir = spool_dir
        self.code = keys.code
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- sending ---

    async def send(self, draft: Draft) -> Accepted:
        """Build ``draft`` as an edXML package from this agency, sign it and send it."""
        if not draft.to:
            raise BadRequest("a document needs at least one recipient (to)")
        return await self._send_built(draft, [AgencyCode.parse(t).value for t in draft.to], None, None)

    async def send_package(
        self, package: bytes | etree._Element, *, classification: Classification | None = None
    ) -> Accepted:
        """Send a package built elsewhere (rooted at ``edXML`` or ``edXMLEnvelope``); an unsigned one
        (an element, or bytes without an XML signature) is signed with this agency's key first.
        ``classification`` is declared for routing (``X-Classification``): it must be the level
        signed inside."""
        if isinstance(package, bytes):
            root = parse_xml(package)
            signed = package if _is_signed(root) else await asyncio.to_thread(self.keys.sign, root)
        else:
            signed = await asyncio.to_thread(self.keys.sign, package)
        headers = {"X-Classification": classification.slug} if classification is not None else {}
        answer = await self._request("POST", "/v1/edocs", signed, XML, headers)
        return Accepted.read(answer.json())

    async def update(self, original: str, draft: Draft, *, reason: str | None = None) -> Accepted:
        """Send ``draft`` as an update (BussinessDocType 2) of ``original``, a document this agency
        sent (by gateway id); it goes to the original's recipients (and any further ``to``)."""
        return await self._change(original, draft, BusinessDocType.UPDATE, reason)

    async def replace(self, original: str, draft: Draft, *, reason: str | None = None) -> Accepted:
        """Send ``draft`` as the replacement (BussinessDocType 3) of ``original``; the original is
        then shown to its recipients as superseded."""
        return await self._change(original, draft, BusinessDocType.REPLACE, reason)

    async def _change(
        self, original: str, draft: Draft, kind: BusinessDocType, reason: str | None
    ) -> Accepted:
        about = await self.receipts(original)
        recipients = [AgencyCode.parse(t).value for t in draft.to] or [r.recipient for r in about.recipients]
        named = (
            (Replacement(about.document_id, tuple(recipients)),) if kind is BusinessDocType.REPLACE else ()
        )
        change = (
            DocumentRef(organ=about.sender, document_id=about.document_id),
            Business(doc_type=kind, reason=reason, replacements=named),
        )
        return await self._send_built(draft, recipients, *change)

    async def _send_built(
        self,
        draft: Draft,
        recipients: list[str],
        response_for: DocumentRef | None,
        business: Business | None,
    ) -> Accepted:
        now = datetime.now(VIETNAM)
        doc = NewEdoc(
            sender=self.keys.organ(self.code),
            recipients=[self.keys.organ(r) for r in recipients],
            document_id=draft.document_id or _document_id(self.code, now),
            subject=draft.subject,
            content=draft.content,
            priority=draft.priority,
            classification=draft.classification,
            due=due_text(draft.due),
            attachments=tuple(draft.attachments),
            response_for=response_for,
            business=business if business is not None else Business(),
        )
        return await self.send_package(build_edoc(doc, now=now), classification=draft.classification)

    # --- statuses ---

    async def status(self, doc_id: str, code: StatusCode | str, note: str | None = None) -> Accepted:
        """Answer a document with a signed status (01-06; 15/16 to a recall, update or
        replacement); it goes to the document's sender."""
        try:
            status_code = StatusCode(code)
        except ValueError:
            known = ", ".join(c.value for c in StatusCode)
            raise BadRequest(f"unknown status code {code!r}; use one of {known}") from None
        about = await self.receipts(doc_id)
        # ResponseFor/OrganId names the original's sender; the gateway carries a 13 so addressed to
        # every recipient of the original, and any other status to that sender.
        root = build_status(
            sender=Organ(self.code),
            about_organ=about.sender,
            about_document_id=about.document_id,
            code=status_code,
            now=datetime.now(VIETNAM),
            description=note,
        )
        signed = await asyncio.to_thread(self.keys.sign, root)
        answer = await self._request("POST", f"/v1/edocs/{_id(doc_id)}/status", signed, XML)
        return Accepted.read(answer.json())

    async def recall(self, doc_id: str, reason: str) -> Accepted:
        """Ask every recipient of a document this agency sent to give it back (a signed 13)."""
        return await self.status(doc_id, StatusCode.RECALL_REQUESTED, reason)

    # --- reading ---

    async def inbox(
        self, *, include_fetched: bool = False, limit: int | None = None
    ) -> tuple[InboxEntry, ...]:
        """What waits for this agency, most urgent first, then oldest."""
        query = [("all", "1")] if include_fetched else []
        if limit is not None:
            query.append(("limit", str(limit)))
        path = "/v1/inbox" + ("?" + "&".join(f"{k}={v}" for k, v in query) if query else "")
        answer = await self._request("GET", path)
        return tuple(InboxEntry.read(d) for d in answer.json()["documents"])

    async def fetch(self, doc_id: str, *, acknowledge: bool = True) -> Delivery:
        """Fetch a delivered document or status and open it: verify this network's seal, decrypt a
        classified package with this agency's keys, verify the sender's signature. A failure is
        reported to the gateway's trace and raised; nothing is returned half-checked.

        A classified document is acknowledged with this agency's own signed 01, unless
        ``acknowledge`` is false (then call ``acknowledge(delivery)`` once it is safely kept)."""
        with self._spool() as upload:
            answer = await self._request("GET", f"/v1/edocs/{_id(doc_id)}", into=upload)
            try:
                if answer.delivered is None:
                    raise CryptoError(f"cannot open the delivery: {answer.unreadable}")
                sealed, package = answer.delivered
                opened = await asyncio.to_thread(
                    open_carried,
                    sealed,
                    package,
                    trust=self.keys.trust,
                    network=self.keys.network,
                    at=datetime.now(UTC),
                    decryption_keys=self.keys.decryption_keys(),
                )
            except GatewayError as exc:
                report = json.dumps({"stage": "open", "reason": exc.message}).encode()
                with contextlib.suppress(GatewayError):
                    await self._request(
                        "POST", f"/v1/edocs/{_id(doc_id)}/failures", report, "application/json"
                    )
                raise
        delivery = Delivery(
            id=doc_id,
            package=opened.package,
            content=opened.content,
            signed_by=opened.signer.code,
            classification=opened.transfer.routing.classification,
            hops=opened.transfer.hops,
            attachments=opened.attachments,
            superseded_by=answer.headers.get("x-superseded-by"),
            opened=opened,
        )
        if acknowledge and _needs_receipt(delivery):
            return await self.acknowledge(delivery)
        return delivery

    async def attachment(self, doc_id: str, content_id: str) -> bytes:
        """One attachment of an unclassified document, as ``GET /v1/edocs/{id}/attachments/{cid}``
        serves it, refused unless its bytes have the SHA-256 the gateway says they have. (To hold
        it against the sender's own signature too, compare it with ``fetch(...).attachments``, as
        ``gateway fetch --attachment`` does; a classified document's attachments come only that way.)"""
        path = f"/v1/edocs/{_id(doc_id)}/attachments/{quote(content_id, safe='')}"
        answer = await self._request("GET", path)
        if hashlib.sha256(answer.body).hexdigest() != answer.headers.get("x-content-sha256"):
            raise CryptoError(
                f"attachment {content_id!r} of document {doc_id} is not what the gateway says it is "
                "(its SHA-256 differs from X-Content-SHA256)"
            )
        return answer.body

    async def acknowledge(self, delivery: Delivery) -> Delivery:
        """Send this agency's own signed 01 over the digest of exactly what was fetched: proof of
        delivery to the agency, not merely to a gateway (mandatory for classified documents)."""
        if not isinstance(delivery.content, Edoc):
            raise BadRequest("only a document (not a status) is acknowledged with a 01 receipt")
        receipt = await asyncio.to_thread(
            arrival_receipt, self.keys.certs_dir, self.code, delivery.opened,
            now=datetime.now(VIETNAM),
        )  # fmt: skip
        await self._request("POST", f"/v1/edocs/{_id(delivery.id)}/status", receipt, XML)
        return dataclasses.replace(delivery, receipt_sent=True)

    async def receipts(self, doc_id: str) -> Receipts:
        """Per recipient: delivery state, forwarding, every status with its signer and verdict."""
        return Receipts.read((await self._request("GET", f"/v1/edocs/{_id(doc_id)}/receipts")).json())

    async def trace(self, doc_id: str) -> tuple[TraceEvent, ...]:
        """Every event of the document this agency may see, in order."""
        answer = await self._request("GET", f"/v1/edocs/{_id(doc_id)}/trace")
        return tuple(TraceEvent.read(e) for e in answer.json()["events"])

    # --- the wire ---

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            crt, key = self.keys.tls_pair
            context = ssl.create_default_context(cafile=str(self.keys.ca_file))
            context.load_cert_chain(str(crt), str(key))
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=context), timeout=self._timeout
            )
        return self._session

    @contextlib.contextmanager
    def _spool(self) -> Iterator[Upload]:
        """The file a delivery is read into: in a directory of its own, gone after the fetch."""
        with (
            tempfile.TemporaryDirectory(prefix="gateway-fetch-", dir=self.spool_dir) as directory,
            Spool(Path(directory)).upload() as upload,
        ):
            yield upload

    async def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "",
        headers: Mapping[str, str] | None = None,
        *,
        into: Upload | None = None,
    ) -> _Answer:
        """One request and its answer; with ``into``, a successful answer is a delivery (a sealed
        header and its package, ``gateway.domain.transfer.framing``) read into that upload."""
        sent = dict(headers or {})
        if content_type:
            sent["Content-Type"] = content_type
        try:
            # A large body goes as a file-like one: aiohttp then sends it in chunks, not one write.
            data: Any = io.BytesIO(body) if body is not None and len(body) > _ONE_WRITE else body
            if body is not None and self.progress is not None and len(body) >= PROGRESS_FROM:
                data = _told(body, self.progress)
                sent["Content-Length"] = str(len(body))
            async with self._open_session().request(method, self.url + path, data=data, headers=sent) as r:
                answer_headers = {k.lower(): v for k, v in r.headers.items()}
                if into is not None and r.status < 400:
                    answer = await self._read_delivery(r, into, answer_headers)
                else:
                    answer = _Answer(r.status, await self._read(r), answer_headers)
        except aiohttp.ClientSSLError as exc:
            raise GatewayUnreachable(f"TLS with the gateway at {self.url} failed: {_reason(exc)}") from exc
        except aiohttp.ClientConnectorError as exc:
            raise GatewayUnreachable(
                f"cannot reach the gateway at {self.url}: {_reason(exc)} (is it running, at that address?)"
            ) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GatewayUnreachable(f"no answer from the gateway at {self.url}: {_reason(exc)}") from exc
        if answer.status >= 400:
            raise error_from_answer(answer.status, answer.body, answer.headers.get("retry-after"))
        return answer

    async def _read_delivery(
        self, response: aiohttp.ClientResponse, upload: Upload, headers: Mapping[str, str]
    ) -> _Answer:
        """A delivery read as it arrives: its package spooled (when large) and its SHA-256 counted
        on the way in, never gathered in memory; the progress told as for any large answer."""
        total = response.content_length
        read: Callable[[int], Coroutine[Any, Any, bytes]] = response.content.read
        if self.progress is not None and total is not None and total >= PROGRESS_FROM:
            read = _told_read(read, self.progress, total)
        try:
            delivered = await upload.take_framed(read, limit=MAX_DELIVERED_BYTES, max_sealed=_MAX_SEALED)
        except (DeliveryError, PackageTooLarge) as exc:
            return _Answer(response.status, b"", headers, unreadable=exc.message)
        return _Answer(response.status, b"", headers, delivered)

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        total = response.content_length
        if self.progress is None or total is None or total < PROGRESS_FROM:
            return await response.read()
        body = bytearray()
        async for chunk in response.content.iter_chunked(_CHUNK):
            body += chunk
            self.progress("receiving", len(body), total)
        return bytes(body)


def _told(body: bytes, progress: Progress) -> AsyncIterator[bytes]:
    """``body`` in chunks, telling ``progress`` how much has gone (what aiohttp sent on)."""

    async def chunks() -> AsyncIterator[bytes]:
        view = memoryview(body)
        for at in range(0, len(body), _CHUNK):
            yield bytes(view[at : at + _CHUNK])
            progress("sending", min(at + _CHUNK, len(body)), len(body))

    return chunks()


def _told_read(
    read: Callable[[int], Coroutine[Any, Any, bytes]], progress: Progress, total: int
) -> Callable[[int], Coroutine[Any, Any, bytes]]:
    """``read``, telling ``progress`` how much has come."""
    done = 0

    async def told(n: int) -> bytes:
        nonlocal done
        chunk = await read(n)
        done += len(chunk)
        if chunk:
            progress("receiving", done, total)
        return chunk

    return told


def _reason(exc: BaseException) -> str:
    inner = getattr(exc, "os_error", None) or exc.__cause__ or exc
    if isinstance(inner, ConnectionRefusedError):
        return "connection refused"
    if isinstance(inner, ssl.SSLError):
        return str(inner.reason or inner)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(getattr(inner, "strerror", None) or inner or type(exc).__name__)


def _id(doc_id: str) -> str:
    # One path segment, whatever the id holds: "a/../b" or "x?all=1" must not reach another route.
    return quote(doc_id, safe="")


def _is_signed(root: etree._Element) -> bool:
    return root.find(".//{http://www.w3.org/2000/09/xmldsig#}SignatureValue") is not None


def _document_id(code: str, now: datetime) -> str:
    return f"{code},{now:%Y/%m/%d},{secrets.randbelow(10**6)}/GW"


def _needs_receipt(delivery: Delivery) -> bool:
    return delivery.classification is not Classification.NONE and isinstance(delivery.content, Edoc)


# --- the sync client -----------------------------------------------------------------------------


class AgencyClient:
    """``AsyncAgencyClient`` for synchronous code (a document system's worker, a script, the
    ``gateway`` command): each method runs the async one to completion on this client's own
    event loop, so connections are kept between calls. Not for use inside a running event loop
    (use ``AsyncAgencyClient`` there). Use it as ``with``, or call ``close()``."""

    def __init__(
        self,
        url: str,
        keys: AgencyKeys,
        *,
        timeout: float = 60.0,
        progress: Progress | None = None,
        spool_dir: Path | None = None,
    ) -> None:
        self._async = AsyncAgencyClient(url, keys, timeout=timeout, progress=progress, spool_dir=spool_dir)
        self._runner = asyncio.Runner()
        self.url = self._async.url
        self.keys = keys
        self.code = keys.code

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._runner.run(self._async.close())
        finally:
            self._runner.close()

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(work)

    def send(self, draft: Draft) -> Accepted:
        """See ``AsyncAgencyClient.send``."""
        return self._run(self._async.send(draft))

    def send_package(
        self, package: bytes | etree._Element, *, classification: Classification | None = None
    ) -> Accepted:
        """See ``AsyncAgencyClient.send_package``."""
        return self._run(self._async.send_package(package, classification=classification))

    def update(self, original: str, draft: Draft, *, reason: str | None = None) -> Accepted:
        """See ``AsyncAgencyClient.update``."""
        return self._run(self._async.update(original, draft, reason=reason))

    def replace(self, original: str, draft: Draft, *, reason: str | None = None) -> Accepted:
        """See ``AsyncAgencyClient.replace``."""
        return self._run(self._async.replace(original, draft, reason=reason))

    def status(self, doc_id: str, code: StatusCode | str, note: str | None = None) -> Accepted:
        """See ``AsyncAgencyClient.status``."""
        return self._run(self._async.status(doc_id, code, note))

    def recall(self, doc_id: str, reason: str) -> Accepted:
        """See ``AsyncAgencyClient.recall``."""
        return self._run(self._async.recall(doc_id, reason))

    def inbox(self, *, include_fetched: bool = False, limit: int | None = None) -> tuple[InboxEntry, ...]:
        """See ``AsyncAgencyClient.inbox``."""
        return self._run(self._async.inbox(include_fetched=include_fetched, limit=limit))

    def fetch(self, doc_id: str, *, acknowledge: bool = True) -> Delivery:
        """See ``AsyncAgencyClient.fetch``."""
        return self._run(self._async.fetch(doc_id, acknowledge=acknowledge))

    def attachment(self, doc_id: str, content_id: str) -> bytes:
        """See ``AsyncAgencyClient.attachment``."""
        return self._run(self._async.attachment(doc_id, content_id))

    def acknowledge(self, delivery: Delivery) -> Delivery:
        """See ``AsyncAgencyClient.acknowledge``."""
        return self._run(self._async.acknowledge(delivery))

    def receipts(self, doc_id: str) -> Receipts:
        """See ``AsyncAgencyClient.receipts``."""
        return self._run(self._async.receipts(doc_id))

    def trace(self, doc_id: str) -> tuple[TraceEvent, ...]:
        """See ``AsyncAgencyClient.trace``."""
        return self._run(self._async.trace(doc_id))
