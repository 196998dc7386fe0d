"""Verifying the delivery log: the chain record by record, and every signed head against it.

The scan stops at the first finding and says in words what happened to which record: one
altered, removed or inserted, or a stretch rewritten with its hashes recomputed (which only a
signed head can reveal).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509

from gateway.audit.heads import SignedHead, check_head
from gateway.audit.log import GENESIS, AuditRecord
from gateway.crypto.pki import CertIdentity, TrustAnchors
from gateway.errors import AuditError

_WINDOW = 256  # how far back a broken link is looked up, to tell an insertion from an alteration


@dataclass(frozen=True)
class Finding:
    """The first thing wrong with the log: what happened, to which record, in words."""

    kind: str  # altered | removed | inserted | rewritten | bad_head
    seq: int | None
    message: str


@dataclass(frozen=True)
class AuditReport:
    """How far the chain and its heads were checked, and the first finding (``None``: all sound)."""

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
