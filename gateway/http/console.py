"""The operators' web console (``/console``) and the metrics endpoint (``/metrics``).

Both are served on the gateway's mutual-TLS port to operators only: a client
certificate of the gateway's PKI with role ``tls`` whose subject is
``CN=OPERATOR.<NAME>`` (``gateway operator issue NAME`` makes one). Agencies'
certificates are refused with 403, no certificate with 401. ``is_operator`` is
the one place that decides.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

from gateway.adapters.ports import Trust
from gateway.crypto.issuing import generate_key, make_leaf
from gateway.crypto.pki import CertIdentity, KeyType, Role, cert_pem, key_pem
from gateway.domain.agencies import AgencyCode
from gateway.domain.clock import Clock
from gateway.domain.vocabulary import Network
from gateway.errors import BadRequest, ClientError, ConfigError, ConsoleRefused, InvalidAgencyCode
from gateway.exchange.deadlines import WARN_BEFORE, flag_kind
from gateway.infra.files.pki_dir import load_key_pair
from gateway.operators import pages as html
from gateway.operators.activity import window
from gateway.operators.metrics import CertExpiry, EventFeed, Metrics, certificate_expiries
from gateway.operators.readmodel import Oversight, Search
from gateway.operators.timeline import build_timeline, parse_moment
from gateway.pki.inventory import OPERATOR_DAYS, OPERATOR_PREFIX

_OPERATOR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,47}")
_DOC_ID = re.compile(r"[0-9a-f]{32}")
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
PAGE_SIZE = 50
_CERT_CACHE_SECONDS = 300.0


def is_operator(identity: CertIdentity) -> bool:
    """A TLS client certificate of this PKI issued to an operator, not to an agency or adapter."""
    if identity.role is not Role.TLS or not identity.code.startswith(OPERATOR_PREFIX):
        return False
    return bool(_OPERATOR_NAME.fullmatch(identity.code.removeprefix(OPERATOR_PREFIX)))


@dataclass(frozen=True)
class OperatorCredentials:
    certificate: Path
    key: Path
    pkcs12: Path
    pkcs12_password: str


def issue_operator(
    certs_dir: Path,
    name: str,
    *,
    now: datetime,
    days: int = OPERATOR_DAYS,
    network: Network = Network.GOVERNMENT,
    key_type: KeyType = KeyType.P256,
) -> OperatorCredentials:
    """An operator's TLS client certificate (CN ``OPERATOR.<name>``, OU ``tls``) from ``network``'s CA,
    written to ``operators/<name>/`` as PEM pair and as a PKCS#12 file for a browser."""
    if not _OPERATOR_NAME.fullmatch(name):
        raise ConfigError(f"operator name {name!r}: use letters, digits, '-' and '_' (at most 48)")
    folder = certs_dir / "operators" / name
    if folder.exists():
        raise ConfigError(f"operator {name} already has a certificate in {folder}; remove it to issue anew")
    base = certs_dir / "networks" / network.value
    ca_cert, ca_key, _ = load_key_pair(base / "ca.crt", base / "ca.key")
    key = generate_key(key_type)
    cert = make_leaf(
        key.public_key(),
        code=OPERATOR_PREFIX + name,
        name=f"Operator {name}",
        network=network,
        role=Role.TLS,
        issuer_cert=ca_cert,
        issuer_key=ca_key,
        now=now,
        days=days,
    )
    password = secrets.token_urlsafe(12)
    p12 = pkcs12.serialize_key_and_certificates(
        name.encode(), key, cert, [ca_cert], BestAvailableEncryption(password.encode())
    )
    (certs_dir / "operators").mkdir(mode=0o700, exist_ok=True)
    folder.mkdir(mode=0o700)
    files = OperatorCredentials(folder / "tls.crt", folder / "tls.key", folder / "tls.p12", password)
    for path, data, mode in (
        (files.key, key_pem(key), 0o600),
        (files.pkcs12, p12, 0o600),
        (files.certificate, cert_pem(cert) + cert_pem(ca_cert), 0o644),
    ):
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    return files


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Console:
    """Operators' pages and metrics, each behind ``is_operator``."""

    def __init__(
        self,
        oversight: Oversight,
        trust: Trust,
        clock: Clock,
        *,
        metrics: Metrics,
        feed: EventFeed,
        certs_dir: Path,
    ) -> None:
        self._oversight = oversight
        self._trust = trust
        self._clock = clock
        self._metrics = metrics
        self._feed = feed
        self._certs_dir = certs_dir
        self._certs: tuple[datetime, list[CertExpiry]] | None = None

    def install(self, app: web.Application) -> None:
        app.router.add_get("/console", self._html(self.overview))
        app.router.add_get("/console/search", self._html(self.search))
        app.router.add_get("/console/documents/{id}", self._html(self.document))
        app.router.add_get("/metrics", self.metrics)

    # --- access --------------------------------------------------------------------------------

    def operator_of(self, request: web.Request) -> CertIdentity:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if isinstance(ssl_object, ssl.SSLObject) else None
        if not der:
            raise ConsoleRefused(401, "no client certificate: the console needs an operator certificate")
        try:
            identity = self._trust.client(bytes(der), at=self._clock.now())
        except ClientError as exc:
            raise ConsoleRefused(401, exc.message) from exc
        if not is_operator(identity):
            raise ConsoleRefused(
                403, f"{identity.code} is not an operator: the console needs an operator certificate"
            )
        return identity

    def _html(self, page: Callable[[web.Request, CertIdentity], Awaitable[web.StreamResponse]]) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                response = await page(request, self.operator_of(request))
            except ConsoleRefused as exc:
                response = web.Response(text=html.refused(exc.status, exc.message), status=exc.status,
                                        content_type="text/html")  # fmt: skip
            response.headers.update(_HEADERS)
            return response

        return handler

    # --- pages ---------------------------------------------------------------------------------

    async def overview(self, request: web.Request, who: CertIdentity) -> web.StreamResponse:
        now = self._clock.now()
        head = await self._oversight.last_audit_head()
        last_seq = await self._oversight.last_seq()
        since = window(now)[0]
        view = html.Overview(
            now=now,
            per_minute=await self._oversight.accepted_per_minute(since=since),
            activity=await self._oversight.activity(since=since),
            recent=await self._oversight.recent_documents(limit=html.RECENT_SHOWN),
            failing=await self._oversight.failing(limit=html.FAILING_READ),
            at_risk=await self._oversight.at_risk(until=now + WARN_BEFORE),
            certificates=await self._certificates(now),
            last_head=head,
            unsigned=last_seq - (head.seq if head else 0),
            operator=who.code,
        )
        return web.Response(text=html.overview(view), content_type="text/html")

    async def search(self, request: web.Request, who: CertIdentity) -> web.StreamResponse:
        values = {k: request.query.get(k, "").strip() for k in ("q", "agency", "from", "to", "state")}
        if not any(values.values()):
            text = html.search_results(
                values, [], older=None, operator=who.code, note="Enter what to look for."
            )
            return web.Response(text=text, content_type="text/html")
        try:
            search, note = self._read_search(values, request.query.get("before"))
        except BadRequest as exc:
            text = html.search_results(values, [], older=None, operator=who.code, note=exc.message)
            return web.Response(text=text, status=400, content_type="text/html")
        results = await self._oversight.search_documents(search)
        if search.id is not None and len(results) == 1:
            raise web.HTTPFound(f"/console/documents/{results[0].document.id}")
        older = results[-1].document.id if len(results) == search.limit else None
        text = html.search_results(values, results, older=older, operator=who.code, note=note)
        return web.Response(text=text, content_type="text/html")

    def _read_search(self, values: dict[str, str], before: str | None) -> tuple[Search, str]:
        now = self._clock.now()
        q, agency = values["q"], values["agency"]
        doc_id = document_id = None
        if q and _DOC_ID.fullmatch(q.lower()):
            doc_id = q.lower()
        elif q and not agency and _is_code(q):
            agency = q
        elif q:
            document_id = q
        if agency and not _is_code(agency):
            raise BadRequest(f"{agency!r} is not an agency code")
        since = parse_moment(values["from"], now=now) if values["from"] else None
        until = parse_moment(values["to"], now=now, end_of_day=True) if values["to"] else None
        if before is not None and not _DOC_ID.fullmatch(before):
            raise BadRequest("bad page marker")
        search = Search(
            id=doc_id, document_id=document_id, agency=AgencyCode.parse(agency).value if agency else None,
            since=since, until=until, states=frozenset({values["state"]} if values["state"] else ()),
            before=before, limit=PAGE_SIZE,
        )  # fmt: skip
        said = [
            f"id {doc_id}" if doc_id else "",
            f"DocumentId {document_id}" if document_id else "",
            f"agency {search.agency}" if search.agency else "",
            f"from {values['from']}" if since else "",
            f"to {values['to']}" if until else "",
            f"state {values['state']}" if values["state"] else "",
        ]
        return search, "Documents (newest first) with " + ", ".join(s for s in said if s)

    async def document(self, request: web.Request, who: CertIdentity) -> web.StreamResponse:
        doc_id = request.match_info["id"]
        parts = await self._oversight.trace_parts(doc_id) if _DOC_ID.fullmatch(doc_id) else None
        if parts is None:
            text = html.refused(404, f"no document with id {doc_id}")
            return web.Response(text=text, status=404, content_type="text/html")
        return web.Response(text=html.document_page(build_timeline(parts), operator=who.code),
                            content_type="text/html")  # fmt: skip

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        try:
            self.operator_of(request)
        except ConsoleRefused as exc:
            return web.Response(text=exc.message + "\n", status=exc.status)
        await self._feed.poll()  # counters as of this scrape, not as of the last tick
        now = self._clock.now()
        head = await self._oversight.last_audit_head()
        risks = await self._oversight.at_risk(until=now + WARN_BEFORE)
        text = self._metrics.render(
            at_risk=[(r.network.value, flag_kind(r, now)) for r in risks],
            queue=await self._oversight.queue_depths(),
            certificates=await self._certificates(now),
            audit_unsigned=await self._oversight.last_seq() - (head.seq if head else 0),
            audit_last_signed=datetime.fromisoformat(head.signed_at.replace("Z", "+00:00")) if head else None,
        )
        return web.Response(text=text, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def _certificates(self, now: datetime) -> list[CertExpiry]:
        # Reading every certificate file is slow for a large registry: once per five minutes.
        if self._certs is None or (now - self._certs[0]).total_seconds() > _CERT_CACHE_SECONDS:
            self._certs = (now, await asyncio.to_thread(certificate_expiries, self._certs_dir, now))
        return self._certs[1]


def _is_code(text: str) -> bool:
    try:
        AgencyCode.parse(text)
    except InvalidAgencyCode:
        return False
    return True
