"""A document's life as a timeline: the same for ``gateway trace`` and the web console.

Each step is a trace event with its time, its offset from acceptance and its
duration: the time since the step it follows from (sealing since routing, a
bridge since the seal it verified, delivery since the final check, a fetch
since that recipient's delivery, a status since that recipient's fetch).
Times are stored in UTC and shown in Asia/Ho_Chi_Minh.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from gateway.domain.vocabulary import Classification
from gateway.errors import BadRequest
from gateway.exchange.mailbox import STATUS_MEANING
from gateway.exchange.ports import DocumentRecord, EventRecord
from gateway.operators.readmodel import DocumentSummary, RouteState, TraceParts

VIETNAM = ZoneInfo("Asia/Ho_Chi_Minh")
PRIORITY_NAMES = {0: "Thường", 1: "Khẩn", 2: "Thượng khẩn", 3: "Hỏa tốc", 4: "Hỏa tốc hẹn giờ"}
LEVEL_NAMES = {0: "không mật", 1: "Mật", 2: "Tối mật", 3: "Tuyệt mật"}
ANSWERS = ("02", "03", "04", "05", "06")  # any of these is the recipient's answer to the document
_FOLLOWS = {  # a step's duration runs from the latest of these kinds before it
    "sealed": ("routed", "retry", "redriven", "accepted"),
    "bridged": ("sealed",),
    "seal_verified": ("bridged", "sealed"),
    "delivered": ("seal_verified",),
    "forwarded": ("seal_verified", "sealed"),
    "quarantined": ("seal_verified", "bridged", "sealed", "routed"),
    "retry": ("sealed", "routed"),
    "failed": ("retry", "routed"),
}
_RETRY_KINDS = ("retry", "failed", "quarantined", "recipient_failed", "redriven")


@dataclass(frozen=True)
class Step:
    seq: int
    kind: str
    at: datetime
    network: str | None
    recipient: str | None
    offset: timedelta  # since acceptance
    duration: timedelta | None  # since the step it follows from
    crossing: str | None  # "government → party" for a bridge
    detail: dict[str, Any]


@dataclass(frozen=True)
class Receipt:
    code: str
    meaning: str
    at: datetime
    status_id: str


@dataclass(frozen=True)
class RecipientLine:
    code: str
    addressed: str
    forwarded_via: tuple[str, ...]
    network: str
    state: str
    delivered_at: datetime | None
    fetched_at: datetime | None
    receipts: tuple[Receipt, ...]
    missing: tuple[str, ...]  # status codes still awaited: 01 (arrived), 03 (accepted)


@dataclass(frozen=True)
class Timeline:
    document: DocumentRecord
    steps: tuple[Step, ...]
    recipients: tuple[RecipientLine, ...]
    routes: tuple[RouteState, ...]
    retries: tuple[Step, ...]  # retries, failures, quarantines and re-drives, with their reasons

    @property
    def missing(self) -> list[tuple[str, str]]:
        return [(r.code, code) for r in self.recipients for code in r.missing]


def build_timeline(parts: TraceParts) -> Timeline:
    doc = parts.document
    start = doc.accepted_at
    latest: dict[tuple[str, str | None], datetime] = {}  # (kind, network or None for any network)
    per_recipient: dict[tuple[str, str], datetime] = {}
    steps: list[Step] = []
    for e in parts.events:
        since = _follows_from(e, latest, per_recipient, steps[-1].at if steps else start)
        crossing = None
        if e.kind == "bridged" and "from" in e.detail and "to" in e.detail:
            crossing = f"{e.detail['from']} → {e.detail['to']}"
        steps.append(
            Step(e.seq, e.kind, e.at, e.network, e.recipient, e.at - start, e.at - since if since else None,
                 crossing, e.detail)
        )  # fmt: skip
        latest[(e.kind, None)] = latest[(e.kind, e.network)] = e.at
        if e.recipient:
            per_recipient[(e.kind, e.recipient)] = e.at
    return Timeline(
        document=doc,
        steps=tuple(steps),
        recipients=tuple(_recipients(parts)),
        routes=tuple(parts.routes),
        retries=tuple(s for s in steps if s.kind in _RETRY_KINDS),
    )


def _follows_from(
    e: EventRecord,
    latest: dict[tuple[str, str | None], datetime],
    per_recipient: dict[tuple[str, str], datetime],
    previous: datetime,
) -> datetime | None:
    if e.kind == "accepted":
        return None
    if e.kind == "fetched" and e.recipient:
        return per_recipient.get(("delivered", e.recipient), previous)
    if e.kind == "status" and e.recipient:
        for kind in ("fetched", "delivered"):
            if (kind, e.recipient) in per_recipient:
                return per_recipient[(kind, e.recipient)]
        return previous
    # The same network's step first (a delivery follows the check of its own network's seal).
    for same_network in (e.network, None):
        candidates = [
            latest[(k, same_network)] for k in _FOLLOWS.get(e.kind, ()) if (k, same_network) in latest
        ]
        if candidates:
            return max(candidates)
    return previous


def _recipients(parts: TraceParts) -> Iterable[RecipientLine]:
    for d in parts.deliveries:
        receipts = tuple(
            Receipt(s.status_code or "", STATUS_MEANING.get(s.status_code or "", ""), s.accepted_at, s.id)
            for s in parts.statuses
            if s.sender == d.recipient
        )
        codes = {r.code for r in receipts}
        missing: list[str] = []
        if d.state.value not in ("quarantined", "failed"):
            if "01" not in codes:
                missing.append("01")
            if not codes.intersection(ANSWERS):
                missing.append("03")
        yield RecipientLine(
            d.recipient, d.addressed, d.chain, d.network.value, d.state.value, d.delivered_at, d.fetched_at,
            receipts, tuple(missing),
        )  # fmt: skip


# --- times --------------------------------------------------------------------------------------


def local(moment: datetime | None, *, ms: bool = False) -> str:
    """A stored (UTC) time as Vietnam wall time."""
    if moment is None:
        return "-"
    text = moment.astimezone(VIETNAM).strftime("%Y-%m-%d %H:%M:%S.%f" if ms else "%Y-%m-%d %H:%M:%S")
    return text[:-3] if ms else text


def seconds(delta: timedelta | None) -> str:
    if delta is None:
        return ""
    s = delta.total_seconds()
    if abs(s) < 60:
        return f"{s:.3f} s"
    if abs(s) < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


_RELATIVE = re.compile(r"(\d+)\s*([mhd])")


def parse_moment(text: str, *, now: datetime, end_of_day: bool = False) -> datetime:
    """``2h``/``30m``/``7d`` ago, or a date or date-time (Vietnam time unless it names a zone).

    Raises :class:`BadRequest` naming the accepted forms."""
    raw = text.strip()
    relative = _RELATIVE.fullmatch(raw)
    if relative:
        unit = {"m": "minutes", "h": "hours", "d": "days"}[relative.group(2)]
        return now - timedelta(**{unit: int(relative.group(1))})
    try:
        moment = datetime.fromisoformat(raw.replace(" ", "T") if len(raw) > 10 else raw)
    except ValueError as exc:
        raise BadRequest(
            f"cannot read the time {text!r}: use 2h, 30m, 7d, 2026-11-22 or 2026-11-22T14:00"
        ) from exc
    if len(raw) == 10 and end_of_day:
        moment = datetime.combine(moment.date(), time.max)
    return moment if moment.tzinfo else moment.replace(tzinfo=VIETNAM)


# --- views --------------------------------------------------------------------------------------


def document_view(doc: DocumentRecord) -> dict[str, Any]:
    """What may be shown of a document: ids, codes, level, priority, size, digest; the subject
    only when it is not classified (the store never holds a classified one anyway)."""
    return {
        "id": doc.id,
        "kind": doc.kind,
        "document_id": doc.document_id,
        "from": doc.sender,
        "network": doc.sender_network.value,
        "priority": int(doc.priority),
        "priority_name": PRIORITY_NAMES.get(int(doc.priority), ""),
        "classification": Classification(doc.classification).slug,
        "subject": doc.subject if doc.classification is Classification.NONE else None,
        "size": doc.size,
        "signed_digest": doc.signed_digest,
        "status_code": doc.status_code,
        "response_for": doc.response_for,
        "accepted_at": doc.accepted_at.isoformat(),
        "accepted_local": local(doc.accepted_at, ms=True),
    }


def timeline_view(t: Timeline) -> dict[str, Any]:
    """The timeline for ``--json`` (each event keeps the keys of the v1 trace API)."""
    return {
        "id": t.document.id,
        "timezone": "Asia/Ho_Chi_Minh",
        "document": document_view(t.document),
        "events": [
            {
                "seq": s.seq,
                "at": s.at.isoformat(),
                "local_time": local(s.at, ms=True),
                "event": s.kind,
                "network": s.network,
                "recipient": s.recipient,
                "crossing": s.crossing,
                "offset_ms": round(s.offset.total_seconds() * 1000, 1),
                "duration_ms": round(s.duration.total_seconds() * 1000, 1) if s.duration else None,
                **({"detail": s.detail} if s.detail else {}),
            }
            for s in t.steps
        ],
        "recipients": [
            {
                "recipient": r.code,
                "addressed": r.addressed,
                "forwarded_via": list(r.forwarded_via) or None,
                "network": r.network,
                "state": r.state,
                "delivered_at": r.delivered_at.isoformat() if r.delivered_at else None,
                "fetched_at": r.fetched_at.isoformat() if r.fetched_at else None,
                "receipts": [
                    {"code": x.code, "meaning": x.meaning, "at": x.at.isoformat(), "id": x.status_id}
                    for x in r.receipts
                ],
                "missing": r.missing,
            }
            for r in t.recipients
        ],
        "routes": [
            {"network": r.network, "state": r.state, "attempts": r.attempts, "last_error": r.last_error}
            for r in t.routes
        ],
        "missing_receipts": [
            {"recipient": who, "code": code, "meaning": STATUS_MEANING[code]} for who, code in t.missing
        ],
    }


def detail_text(detail: dict[str, Any]) -> str:
    parts = []
    for key, value in detail.items():
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        if len(text) > 24 and key in ("sha256", "fingerprint", "hash", "digest"):
            text = text[:16] + "…"
        parts.append(f"{key}={text}")
    return " ".join(parts)


def render_text(t: Timeline) -> list[str]:
    """The timeline as ``gateway trace ID`` prints it."""
    doc = t.document
    level = Classification(doc.classification)
    lines = [
        f"{doc.id}  {doc.kind}  DocumentId {doc.document_id or '-'}",
        f"  from {doc.sender} [{doc.sender_network.value}]  priority {int(doc.priority)} "
        f"{PRIORITY_NAMES.get(int(doc.priority), '')}  level {LEVEL_NAMES[int(level)]}  "
        f"accepted {local(doc.accepted_at, ms=True)}  ({doc.size} bytes)",
        "",
        "Timeline (Asia/Ho_Chi_Minh; offset from acceptance; duration of the step)",
    ]
    for s in t.steps:
        where = s.crossing or " ".join(x for x in (s.network or "", s.recipient or "") if x)
        if s.crossing and s.recipient:
            where += f" {s.recipient}"
        lines.append(
            f"  {local(s.at, ms=True)}  +{seconds(s.offset):>10}  {seconds(s.duration):>10}  "
            f"{s.kind:<14} {where:<30} {detail_text(s.detail)}".rstrip()
        )
    lines += ["", "Recipients"]
    for r in t.recipients:
        via = f" (addressed to {r.addressed}, via {' → '.join(r.forwarded_via)})" if r.forwarded_via else ""
        lines.append(
            f"  {r.code} [{r.network}] {r.state}{via}; delivered {local(r.delivered_at)}, "
            f"fetched {local(r.fetched_at)}"
        )
        for x in r.receipts:
            lines.append(f"      {x.code} {x.meaning:<20} {local(x.at)}  ({x.status_id})")
        if r.missing:
            lines.append("      missing: " + ", ".join(f"{c} {STATUS_MEANING[c]}" for c in r.missing))
    lines += ["", "Routes"]
    for route in t.routes:
        error = f", last error: {route.last_error}" if route.last_error else ""
        attempts = f"{route.attempts} attempt{'s' if route.attempts != 1 else ''}"
        lines.append(f"  → {route.network}: {route.state}, {attempts}{error}")
    if t.retries:
        lines += ["", "Retries and failures"]
        for s in t.retries:
            reason = s.detail.get("reason", "")
            lines.append(
                f"  {local(s.at, ms=True)}  {s.kind:<16} {s.network or ''} {s.recipient or ''} {reason}"
            )
    if t.missing:
        lines += ["", "Missing receipts: " + ", ".join(f"{c} from {who}" for who, c in t.missing)]
    return lines


def summary_view(s: DocumentSummary, agency: str | None = None) -> dict[str, Any]:
    doc = s.document
    mine = [d for d in s.deliveries if agency is None or doc.sender == agency or d.recipient == agency]
    return {
        **document_view(doc),
        "direction": None if agency is None else ("sent" if doc.sender == agency else "received"),
        "deliveries": [{"recipient": d.recipient, "network": d.network.value, "state": d.state.value}
                       for d in mine],
    }  # fmt: skip


def summary_line(s: DocumentSummary, agency: str | None = None) -> str:
    view = summary_view(s, agency)
    states: dict[str, int] = {}
    for d in view["deliveries"]:
        states[d["state"]] = states.get(d["state"], 0) + 1
    direction = {"sent": "→", "received": "←"}.get(view["direction"] or "", " ")
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    return (
        f"{view['id']}  {view['accepted_local'][:19]}  {direction} {view['from']:<14} P{view['priority']} "
        f"{view['classification']:<9} {view['document_id'] or '-':<36} {counts}"
    )
