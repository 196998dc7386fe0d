"""The operators' console as HTML: plain server-rendered pages, no script.

Every value is escaped on its way into a page; the overview refreshes itself
with a meta refresh. Times are Asia/Ho_Chi_Minh wall time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from urllib.parse import urlencode

from gateway.audit.heads import SignedHead
from gateway.domain.vocabulary import Classification, DeliveryState, Network
from gateway.exchange.deadlines import WARN_BEFORE, flag_kind
from gateway.exchange.mailbox import STATUS_MEANING
from gateway.exchange.ports import AtRisk
from gateway.operators.metrics import CertExpiry
from gateway.operators.readmodel import DocumentSummary, Failing, MinuteCount, QueueDepth
from gateway.operators.timeline import LEVEL_NAMES, PRIORITY_NAMES, Timeline, detail_text, local, seconds

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#f6f7f9}
header{background:#7a1010;color:#fff;padding:8px 16px;display:flex;gap:24px;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}
main{padding:12px 16px}
section{background:#fff;border:1px solid #ddd;border-radius:4px;padding:8px 12px;margin:0 0 12px}
h1{font-size:18px;margin:4px 0 12px}h2{font-size:15px;margin:4px 0 8px}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eee}
th{background:#fafafa;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#b00020;font-weight:600}.ok{color:#1b5e20}.muted{color:#777}
form.search{display:flex;gap:8px;flex-wrap:wrap;align-items:end}
form.search label{display:flex;flex-direction:column;font-size:12px;color:#555}
code{font-size:12px}
"""


AT_RISK_SHOWN = 20  # the overview lists the soonest; `gateway trace --overdue` lists them all

STEP_COLUMNS = ("time", "since acceptance", "duration", "event", "network", "recipient", "detail")
RECIPIENT_COLUMNS = (
    "recipient",
    "forwarded via",
    "network",
    "state",
    "delivered",
    "fetched",
    "receipts",
    "missing",
)


@dataclass(frozen=True)
class Overview:
    now: datetime
    per_minute: Sequence[MinuteCount]
    queue: Sequence[QueueDepth]
    failing: Sequence[Failing]
    at_risk: Sequence[AtRisk]  # soonest deadline first
    certificates: Sequence[CertExpiry]
    last_head: SignedHead | None
    unsigned: int
    operator: str


def page(title: str, body: str, *, operator: str | None = None, refresh: int | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    who = f'<span class="muted" style="color:#fdd">{escape(operator)}</span>' if operator else ""
    return (
        f'<!doctype html><html lang="vi"><head><meta charset="utf-8">{meta}'
        f"<title>{escape(title)} · edXML gateway</title><style>{_STYLE}</style></head><body>"
        '<header><a href="/console">edXML gateway · console</a>'
        '<a href="/console/search">Search</a><span style="flex:1"></span>'
        f"{who}</header><main>{body}</main></body></html>"
    )


def refused(status: int, message: str) -> str:
    return page(
        "Refused", f'<section><h1 class="bad">{status}</h1><p id="refused">{escape(message)}</p></section>'
    )


def _table(headers: Iterable[str], rows: Iterable[Iterable[str]], *, empty: str = "none") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(rows_cell for rows_cell in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="muted">{escape(empty)}</p>'
    return f"<table><tr>{head}</tr>{body}</table>"


def _td(value: object, *, number: bool = False, css: str = "") -> str:
    classes = " ".join(x for x in ("n" if number else "", css) if x)
    attr = f' class="{classes}"' if classes else ""
    return f"<td{attr}>{escape(str(value))}</td>"


def _doc_link(doc_id: str) -> str:
    return f'<td><a href="/console/documents/{escape(doc_id)}"><code>{escape(doc_id)}</code></a></td>'


def overview(o: Overview) -> str:
    networks = [n.value for n in Network]
    last15 = [o.now.replace(second=0, microsecond=0) - timedelta(minutes=i) for i in range(15)]
    by_minute: dict[tuple[datetime, str], int] = {}
    by_priority: dict[tuple[str, int], int] = {}
    for m in o.per_minute:
        by_minute[(m.minute, m.network)] = by_minute.get((m.minute, m.network), 0) + m.count
        by_priority[(m.network, m.priority)] = by_priority.get((m.network, m.priority), 0) + m.count
    minute_rows = [
        [_td(local(t)[11:16]), *(_td(by_minute.get((t, n), 0), number=True) for n in networks),
         _td(sum(by_minute.get((t, n), 0) for n in networks), number=True)]
        for t in last15
    ]  # fmt: skip
    priority_rows = [
        [_td(n), *(_td(by_priority.get((n, p), 0), number=True) for p in range(5))] for n in networks
    ]
    depth: dict[tuple[str, int], int] = {(q.network, q.priority): q.count for q in o.queue}
    queue_rows = [[_td(n), *(_td(depth.get((n, p), 0), number=True) for p in range(5))] for n in networks]
    failing_rows = [
        [_doc_link(f.document), _td(f.kind, css="bad"), _td(f.network or ""), _td(f.recipient or ""),
         _td(f.attempts if f.attempts is not None else ""), _td(f.reason[:160])]
        for f in o.failing
    ]  # fmt: skip
    risk_rows = [
        [_doc_link(r.document), _td(r.recipient), _td(r.network.value), _td(local(r.due_at)),
         _td(flag_kind(r, o.now), css="bad" if r.due_at <= o.now else ""),
         _td("03" if r.fetched_at is not None else "fetch (01) and 03")]
        for r in o.at_risk[:AT_RISK_SHOWN]
    ]  # fmt: skip
    risk_more = (
        f'<p class="muted">… and {len(o.at_risk) - AT_RISK_SHOWN} more: gateway trace --overdue</p>'
        if len(o.at_risk) > AT_RISK_SHOWN
        else ""
    )
    cert_rows = [
        [_td(c.owner), _td(c.role), _td(local(c.not_after)),
         _td(f"{c.days_left:.1f}", number=True, css="bad" if c.days_left < 7 else "")]
        for c in sorted(o.certificates, key=lambda c: c.days_left)
        if c.days_left <= 30
    ]  # fmt: skip
    priorities = [f"{p} {PRIORITY_NAMES[p]}" for p in range(5)]
    head = o.last_head
    audit = (
        f"last signed head: record {head.seq} at {escape(local(_parse(head.signed_at)))}; "
        f"{o.unsigned} records since"
        if head
        else f"no signed head yet; {o.unsigned} records"
    )
    total = sum(m.count for m in o.per_minute)
    body = (
        f'<h1>Overview <span class="muted">{escape(local(o.now))} (Asia/Ho_Chi_Minh), refreshes every '
        f"15 s</span></h1><section><h2>Documents per minute by network (last 15 minutes)</h2>"
        f"{_table(['minute', *networks, 'total'], minute_rows)}</section>"
        f'<section><h2>Last hour by network and priority (<span id="accepted-hour">{total}</span> '
        f"documents)</h2>{_table(['network', *priorities], priority_rows)}</section>"
        f"<section><h2>Queue depth (routes waiting)</h2>{_table(['target network', *priorities], queue_rows)}"
        f"</section>"
        f'<section><h2>Failing deliveries</h2><div id="failing">'
        f"{_table(['document', 'what', 'network', 'recipient', 'attempts', 'reason'], failing_rows)}"
        f"</div></section>"
        f'<section><h2>Deadlines at risk (<span id="at-risk">{len(o.at_risk)}</span>: due within '
        f"{WARN_BEFORE.total_seconds() / 3600:g} h or overdue, not yet fetched or answered 03)</h2>"
        f"{_table(['document', 'recipient', 'network', 'due', 'state', 'waiting for'], risk_rows)}"
        f"{risk_more}</section>"
        f"<section><h2>Certificates expiring within 30 days</h2>"
        f"{_table(['owner', 'role', 'expires', 'days left'], cert_rows)}</section>"
        f'<section><h2>Delivery log</h2><p id="audit">{audit}</p></section>'
    )
    return page("Overview", body, operator=o.operator, refresh=15)


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def search_form(values: dict[str, str]) -> str:
    def field(name: str, label: str, kind: str = "text", width: int = 18) -> str:
        value = escape(values.get(name, ""))
        return (
            f'<label>{escape(label)}<input type="{kind}" name="{name}" id="{name}" value="{value}" '
            f'size="{width}"></label>'
        )

    states = ["", *(s.value for s in DeliveryState)]
    chosen = values.get("state", "")
    options = "".join(
        f'<option value="{s}"{" selected" if s == chosen else ""}>{s or "any state"}</option>' for s in states
    )
    return (
        '<form class="search" method="get" action="/console/search">'
        f"{field('q', 'Document id, DocumentId or agency code', width=44)}"
        f"{field('agency', 'Agency code')}"
        f"{field('from', 'From', 'datetime-local')}{field('to', 'To', 'datetime-local')}"
        f'<label>Delivery state<select name="state" id="state">{options}</select></label>'
        '<button type="submit" id="search-button">Search</button></form>'
    )


def search_results(
    values: dict[str, str], results: Sequence[DocumentSummary], *, older: str | None, operator: str, note: str
) -> str:
    rows = []
    for s in results:
        doc = s.document
        states: dict[str, int] = {}
        for d in s.deliveries:
            states[d.state.value] = states.get(d.state.value, 0) + 1
        summary = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        rows.append(
            [_doc_link(doc.id), _td(local(doc.accepted_at)), _td(doc.sender), _td(doc.document_id or ""),
             _td(f"{int(doc.priority)} {PRIORITY_NAMES.get(int(doc.priority), '')}"),
             _td(LEVEL_NAMES[int(doc.classification)]), _td(summary, css="bad" if "failed" in summary or
                                                           "quarantined" in summary else "")]
        )  # fmt: skip
    more = ""
    if older:
        query = urlencode({**{k: v for k, v in values.items() if v}, "before": older})
        more = f'<p><a id="older" href="/console/search?{escape(query)}">Older documents →</a></p>'
    table = _table(
        ["document", "accepted", "from", "DocumentId", "priority", "level", "deliveries"],
        rows,
        empty="no document matches",
    )
    body = (
        f'<h1>Search</h1><section>{search_form(values)}</section><section><p class="muted">{escape(note)}</p>'
        f'<div id="results">{table}</div>{more}</section>'
    )
    return page("Search", body, operator=operator)


def document_page(t: Timeline, *, operator: str) -> str:
    doc = t.document
    level = Classification(doc.classification)
    facts = [
        ("id", doc.id),
        ("DocumentId", doc.document_id or "-"),
        ("kind", doc.kind),
        ("from", f"{doc.sender} [{doc.sender_network.value}]"),
        ("priority", f"{int(doc.priority)} {PRIORITY_NAMES.get(int(doc.priority), '')}"),
        ("level", LEVEL_NAMES[int(level)]),
        ("accepted", f"{local(doc.accepted_at, ms=True)} (Asia/Ho_Chi_Minh)"),
        ("size", f"{doc.size} bytes, signed digest {doc.signed_digest[:16]}…"),
    ]
    if level is Classification.NONE and doc.subject:
        facts.insert(2, ("subject", doc.subject))
    head = "".join(f"<tr><th>{escape(k)}</th>{_td(v)}</tr>" for k, v in facts)
    alarming = ("quarantined", "failed", "recipient_failed", "retry")
    steps = [
        [
            _td(local(s.at, ms=True)),
            _td("+" + seconds(s.offset), number=True),
            _td(seconds(s.duration), number=True),
            _td(s.kind, css="bad" if s.kind in alarming else ""),
            _td(s.crossing or s.network or ""),
            _td(s.recipient or ""),
            _td(detail_text(s.detail)),
        ]
        for s in t.steps
    ]
    recipients = []
    for r in t.recipients:
        receipts = "; ".join(f"{x.code} {x.meaning} {local(x.at)}" for x in r.receipts) or "-"
        missing = ", ".join(f"{c} {STATUS_MEANING[c]}" for c in r.missing)
        recipients.append(
            [
                _td(r.code),
                _td(" → ".join(r.forwarded_via)),
                _td(r.network),
                _td(r.state, css="bad" if r.state in ("failed", "quarantined") else "ok"),
                _td(local(r.delivered_at)),
                _td(local(r.fetched_at)),
                _td(receipts),
                _td(missing, css="bad" if missing else ""),
            ]
        )
    routes = [
        [_td(r.network), _td(r.state), _td(r.attempts, number=True), _td(r.last_error or "")]
        for r in t.routes
    ]
    body = (
        f"<h1>Document <code>{escape(doc.id)}</code></h1><section><table>{head}</table></section>"
        '<section><h2>Timeline (Asia/Ho_Chi_Minh)</h2><div id="timeline">'
        f"{_table(STEP_COLUMNS, steps)}"
        "</div></section>"
        '<section><h2>Recipients and receipts</h2><div id="recipients">'
        f"{_table(RECIPIENT_COLUMNS, recipients)}"
        "</div></section>"
        f"<section><h2>Routes</h2>{_table(['network', 'state', 'attempts', 'last error'], routes)}</section>"
    )
    return page(f"Document {doc.id}", body, operator=operator)
