"""The tamper-evident delivery log: hash-chained records, signed heads, and their verification.

Every trace event is a record that carries the SHA-256 of its predecessor, so
changing, removing or inserting one breaks the chain at that record. An
attacker who rewrites the database could recompute every hash after an edit;
that is what signed heads are for: every minute the node signs (seq, hash) of
the newest record with the government adapter's sealing key, and a rewritten
chain no longer reaches a signed hash.

Heads are signed with a detached signature (ECDSA or RSA-PSS, SHA-256) over a
canonical JSON message rather than XMLDSig: the log holds no XML, the message
is 150 bytes with one obvious byte form, and an auditor can check it with any
crypto library and the trust anchors, nothing else.

Pure: no files, no database. ``SqlOversight`` reads and writes the records;
``gateway audit`` turns reports into words and exit codes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from gateway.crypto.pki import CertIdentity, CertificateRejected, PrivateKey, Role, TrustAnchors, cert_pem
from gateway.domain.clock import Clock
from gateway.domain.vocabulary import Network, adapter_code
from gateway.errors import CryptoError, GatewayError

log = logging.getLogger(__name__)

GENESIS = "0" * 64  # the "previous hash" of the very first record
EXPORT_FORMAT = "edxml-gateway-audit-export"
_HEAD_PURPOSE = "edxml-gateway audit head v1"
_WINDOW = 256  # how far back a broken link is looked up, to tell an insertion from an alteration


class AuditError(GatewayError):
    """An audit export or head cannot be read or checked at all (as opposed to a finding)."""


def utc_text(moment: datetime) -> str:
    """A time exactly as the store writes it (``tables.UTCDateTime``), so hashes match on reading."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class AuditRecord:
    """One record of the log as stored: ``detail`` is the stored JSON text, hashed as is."""

    seq: int
    at: str
    kind: str
    document: str | None
    recipient: str | None
    network: str | None
    request_id: str | None
    detail: str
    prev_hash: str
    hash: str

    def computed_hash(self) -> str:
        return record_hash(
            self.kind, self.at, self.document, self.recipient, self.network, self.request_id, self.detail,
            self.prev_hash,
        )  # fmt: skip


def record_hash(
    kind: str,
    at: str,
    document: str | None,
    recipient: str | None,
    network: str | None,
    request_id: str | None,
    detail: str,
    prev_hash: str,
) -> str:
    """SHA-256 over a canonical JSON array of the record's fields and its predecessor's hash.

    ``seq`` is left out on purpose: it is the database's position, and the chain, not the
    numbering, says what came before what."""
    canonical = json.dumps(
        [1, kind, at, document, recipient, network, request_id, detail, prev_hash],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --- signed heads -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedHead:
    """The node's signature over the newest record's (seq, hash) at ``signed_at``."""

    seq: int
    hash: str
    signed_at: str
    node: str
    signer: str
    algorithm: str  # ecdsa-sha256 | rsa-pss-sha256
    signature: str  # base64
    certificate: str  # the adapter's signing certificate, PEM


def head_message(seq: int, hash_: str, signed_at: str, node: str) -> bytes:
    return json.dumps(
        {"purpose": _HEAD_PURPOSE, "seq": seq, "hash": hash_, "signed_at": signed_at, "node": node},
        sort_keys=True,
        separators=(",", ":"),
    ).encode("utf-8")


def sign_head(
    *, seq: int, hash_: str, at: datetime, node: str, key: PrivateKey, certificate: x509.Certificate
) -> SignedHead:
    signed_at = utc_text(at)
    message = head_message(seq, hash_, signed_at, node)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm, signature = "ecdsa-sha256", key.sign(message, ec.ECDSA(hashes.SHA256()))
    else:
        algorithm, signature = "rsa-pss-sha256", key.sign(message, _PSS, hashes.SHA256())
    return SignedHead(
        seq=seq,
        hash=hash_,
        signed_at=signed_at,
        node=node,
        signer=certificate.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value,  # type: ignore[arg-type]
        algorithm=algorithm,
        signature=base64.b64encode(signature).decode("ascii"),
        certificate=cert_pem(certificate).decode("ascii"),
    )


_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def check_head(
    head: SignedHead,
    anchors: TrustAnchors,
    known: dict[str, tuple[x509.Certificate, CertIdentity]] | None = None,
) -> CertIdentity:
    """The head's certificate is a network adapter's signing certificate, valid when it signed,
    and the signature verifies; raises ``AuditError`` saying which of these fails.

    ``known`` caches certificates already judged (a year of heads is a few certificates)."""
    try:
        at = datetime.fromisoformat(head.signed_at.replace("Z", "+00:00"))
        cached = known.get(head.certificate) if known is not None else None
        if cached is not None and cached[1].not_before <= at <= cached[1].not_after:
            cert, identity = cached
        else:
            cert = x509.load_pem_x509_certificate(head.certificate.encode("ascii"))
            identity = anchors.verify(cert, role=Role.SIGN, at=at)
            if known is not None:
                known[head.certificate] = (cert, identity)
    except (ValueError, CertificateRejected) as exc:
        raise AuditError(f"head {head.seq} signed at {head.signed_at}: certificate refused: {exc}") from exc
    if identity.code != adapter_code(identity.network):
        raise AuditError(f"head {head.seq} is signed by {identity.code}, which is not a network adapter")
    public = cert.public_key()
    message = head_message(head.seq, head.hash, head.signed_at, head.node)
    try:
        signature = base64.b64decode(head.signature, validate=True)
        if head.algorithm == "ecdsa-sha256" and isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif head.algorithm == "rsa-pss-sha256" and isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, message, _PSS, hashes.SHA256())
        else:
            raise AuditError(f"head {head.seq}: algorithm {head.algorithm!r} does not fit its certificate")
    except (ValueError, InvalidSignature) as exc:
        raise AuditError(
            f"head {head.seq} signed at {head.signed_at}: the signature does not verify"
        ) from exc
    return identity


def anchors_from_pem(data: bytes) -> TrustAnchors:
    """Trust anchors from a ``trust.pem`` bundle alone (root CA plus one CA per network)."""
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise AuditError("the trust anchors file holds no readable PEM certificate") from exc
    roots = [c for c in certs if c.subject == c.issuer]
    if len(roots) != 1:
        raise AuditError(f"the trust anchors file must hold exactly one root CA, not {len(roots)}")
    intermediates: dict[Network, x509.Certificate] = {}
    for cert in certs:
        ou = cert.subject.get_attributes_for_oid(x509.oid.NameOID.ORGANIZATIONAL_UNIT_NAME)
        if cert is not roots[0] and ou and str(ou[0].value) in {n.value for n in Network}:
            intermediates[Network(str(ou[0].value))] = cert
    try:
        return TrustAnchors(roots[0], intermediates)
    except CryptoError as exc:
        raise AuditError(f"trust anchors: {exc.message}") from exc


# --- verification -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """The first thing wrong with the log: what happened, to which record, in words."""

    kind: str  # altered | removed | inserted | rewritten | bad_head
    seq: int | None
    message: str


@dataclass(frozen=True)
class AuditReport:
    records: int
    first_seq: int | None
    last_seq: int | None
    heads: int  # signed heads checked against the chain
    last_head: SignedHead | None
    unsigned: int  # records after the last signed head: chained, not yet vouched for
    finding: Finding | None

    @property
    def ok(self) -> bool:
        return self.finding is None


def verify_log(
    records: Iterable[AuditRecord],
    heads: Sequence[SignedHead],
    anchors: TrustAnchors,
    *,
    previous: str | None = GENESIS,
    first_seq: int | None = 1,
) -> AuditReport:
    """Check the chain record by record and every head against it; stop at the first finding.

    ``previous`` is the hash the first record must link to (``None``: take its word, as an
    export must; the heads then vouch for it). ``first_seq`` is the seq it must have.
    """
    state = _Scan(previous, first_seq)
    known: dict[str, tuple[x509.Certificate, CertIdentity]] = {}
    for head in heads:
        try:
            check_head(head, anchors, known)
        except AuditError as exc:
            return state.report(Finding("bad_head", head.seq, exc.message))
    by_seq: dict[int, list[SignedHead]] = {}
    for head in heads:
        by_seq.setdefault(head.seq, []).append(head)
    it = iter(records)
    current = next(it, None)
    while current is not None:
        following = next(it, None)
        finding = state.judge(current, following)
        if finding is None:
            finding = state.match_heads(current, by_seq.get(current.seq, ()))
        if finding is not None:
            return state.report(finding)
        state.accept(current)
        current = following
    beyond = [h for h in heads if state.last is None or h.seq > state.last.seq]
    if beyond:
        after = f"after record {state.last.seq}" if state.last else "(the log is empty)"
        return state.report(
            Finding(
                "removed",
                (state.last.seq + 1) if state.last else None,
                f"records {after} are missing: the head signed at {beyond[0].signed_at} "
                f"covers record {beyond[0].seq}",
            )
        )
    return state.report(None)


class _Scan:
    def __init__(self, previous: str | None, first_seq: int | None) -> None:
        self.expected = previous
        self.first_seq = first_seq
        self.last: AuditRecord | None = None
        self.first: int | None = None
        self.count = 0
        self.heads = 0
        self.last_head: SignedHead | None = None
        self.recent: OrderedDict[str, int] = OrderedDict()

    def judge(self, cur: AuditRecord, nxt: AuditRecord | None) -> Finding | None:
        content_ok = cur.computed_hash() == cur.hash
        link_ok = self.expected is None or cur.prev_hash == self.expected
        if content_ok and link_ok:
            if self.last is None and self.first_seq is not None and cur.seq > self.first_seq:
                return _removed(self.first_seq, cur.seq, None)
            return None
        prev = self.last
        if (
            self.expected is not None
            and nxt is not None
            and nxt.prev_hash == self.expected
            and nxt.computed_hash() == nxt.hash
        ):
            before = f"record {prev.seq}" if prev else "the start of the log"
            return Finding(
                "inserted", cur.seq, f"record {cur.seq} was inserted: record {nxt.seq} links to {before}"
            )
        if not link_ok:
            if prev is not None and cur.seq > prev.seq + 1:
                return _removed(prev.seq + 1, cur.seq, prev.seq)
            earlier = self.recent.get(cur.prev_hash)
            if earlier is not None and prev is not None:
                span = f"{earlier + 1}" if earlier + 1 == prev.seq else f"{earlier + 1}–{prev.seq}"
                return Finding(
                    "inserted",
                    earlier + 1,
                    f"record {span} was inserted: record {cur.seq} links to record {earlier}",
                )
            if content_ok and prev is not None:
                return Finding(
                    "altered",
                    prev.seq,
                    f"record {prev.seq} was altered and its hash recomputed (record {cur.seq} still "
                    f"links to the original), or a record between them was removed and the rest renumbered",
                )
        return Finding(
            "altered", cur.seq, f"record {cur.seq} was altered: its content no longer matches its hash"
        )

    def match_heads(self, cur: AuditRecord, heads: Iterable[SignedHead]) -> Finding | None:
        for head in heads:
            if head.hash != cur.hash:
                since = f"record {self.last_head.seq}" if self.last_head else "the start of the log"
                return Finding(
                    "rewritten",
                    cur.seq,
                    f"the chain up to record {cur.seq} is not the one signed at {head.signed_at}: "
                    f"a record after {since} was altered and the hashes after it recomputed",
                )
            self.heads += 1
            self.last_head = head
        return None

    def accept(self, cur: AuditRecord) -> None:
        if self.first is None:
            self.first = cur.seq
        self.count += 1
        self.last = cur
        self.expected = cur.hash
        self.recent[cur.hash] = cur.seq
        if len(self.recent) > _WINDOW:
            self.recent.popitem(last=False)

    def report(self, finding: Finding | None) -> AuditReport:
        last_seq = self.last.seq if self.last else None
        signed_to = self.last_head.seq if self.last_head else (self.first - 1 if self.first else 0)
        return AuditReport(
            records=self.count,
            first_seq=self.first,
            last_seq=last_seq,
            heads=self.heads,
            last_head=self.last_head,
            unsigned=(last_seq - signed_to) if last_seq is not None else 0,
            finding=finding,
        )


def _removed(first_missing: int, present: int, prev: int | None) -> Finding:
    span = f"{first_missing}" if present == first_missing + 1 else f"{first_missing}–{present - 1}"
    after = f"record {prev}" if prev is not None else "the start"
    return Finding("removed", first_missing, f"record {span} was removed: record {present} follows {after}")


# --- export -------------------------------------------------------------------------------------


def export_lines(
    header: dict[str, Any], heads: Sequence[SignedHead], records: Iterable[AuditRecord]
) -> Iterator[str]:
    """A self-contained JSON-lines export: header, the heads (with their certificates), then the
    records in order; checking it needs only the trust anchors (``verify_export``)."""
    yield json.dumps({"type": EXPORT_FORMAT, "version": 1, **header}, ensure_ascii=False)
    for head in heads:
        yield json.dumps({"type": "head", **asdict(head)}, ensure_ascii=False)
    for record in records:
        yield json.dumps({"type": "record", **asdict(record)}, ensure_ascii=False)


def verify_export(lines: Iterable[str], anchors: TrustAnchors) -> tuple[dict[str, Any], AuditReport]:
    """Check an export offline: every head's certificate and signature, and the chain between them."""
    it = iter(lines)
    try:
        header = json.loads(next(it))
    except (StopIteration, ValueError) as exc:
        raise AuditError("not an audit export: the first line is not a JSON header") from exc
    if not isinstance(header, dict) or header.get("type") != EXPORT_FORMAT or header.get("version") != 1:
        raise AuditError(f"not an audit export of version 1 (expected type {EXPORT_FORMAT!r})")
    heads: list[SignedHead] = []
    pending: list[AuditRecord] = []
    for line in it:
        item = _export_item(line)
        if isinstance(item, SignedHead):
            if pending:
                raise AuditError("a head follows records in the export; heads come first")
            heads.append(item)
        else:
            pending.append(item)
            break

    def records() -> Iterator[AuditRecord]:
        yield from pending
        for line in it:
            item = _export_item(line)
            if not isinstance(item, AuditRecord):
                raise AuditError("a head follows records in the export; heads come first")
            yield item

    return header, verify_log(records(), heads, anchors, previous=None, first_seq=None)


def _export_item(line: str) -> AuditRecord | SignedHead:
    try:
        item = json.loads(line)
        kind = item.pop("type")
        if kind == "record":
            return AuditRecord(**item)
        if kind == "head":
            return SignedHead(**item)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise AuditError(f"unreadable line in the export: {line[:80]!r}") from exc
    raise AuditError(f"unknown item type {kind!r} in the export")


# --- the node's signer --------------------------------------------------------------------------


class AuditLog(Protocol):
    """What signing heads needs from the store (``SqlOversight`` implements it)."""

    async def last_audit_head(self) -> SignedHead | None: ...

    async def audit_records(self, *, after: int, limit: int) -> list[AuditRecord]: ...

    async def add_audit_head(self, head: SignedHead) -> None: ...


class HeadSigner:
    """Signs the head of the log every ``interval`` seconds while new records arrive, and at stop.

    It signs only what it has just re-checked: the records since the last head must link to
    it, so tampering in between is reported, never laundered into a valid head."""

    def __init__(
        self,
        audit_log: AuditLog,
        signing_key: Callable[[], tuple[PrivateKey, x509.Certificate]],
        anchors: TrustAnchors,
        clock: Clock,
        *,
        node: str,
        interval: float = 60.0,
        batch: int = 5000,
    ) -> None:
        self._log = audit_log
        self._signing_key = signing_key  # asked each time: a rotated adapter key is used at once
        self._anchors = anchors
        self._clock = clock
        self._node = node
        self._interval = interval
        self._batch = batch

    async def sign_once(self) -> SignedHead | None:
        """Sign the newest record if there is one since the last head; ``None`` if not (or broken)."""
        last = await self._log.last_audit_head()
        after, previous = (last.seq, last.hash) if last else (0, GENESIS)
        newest: AuditRecord | None = None
        while True:
            batch = await self._log.audit_records(after=after, limit=self._batch)
            if not batch:
                break
            report = await asyncio.to_thread(
                verify_log, batch, [], self._anchors, previous=previous, first_seq=after + 1
            )
            if report.finding is not None:
                log.error("audit log broken, not signing over it: %s", report.finding.message)
                return None
            newest = batch[-1]
            after, previous = newest.seq, newest.hash
        if newest is None:
            return None
        key, certificate = await asyncio.to_thread(self._signing_key)
        head = sign_head(
            seq=newest.seq,
            hash_=newest.hash,
            at=self._clock.now(),
            node=self._node,
            key=key,
            certificate=certificate,
        )
        await self._log.add_audit_head(head)
        log.info("audit head signed", extra={"seq": head.seq, "detail": {"hash": head.hash}})
        return head

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sign_once()
            except Exception:
                log.exception("signing the audit head failed; trying again at the next interval")
