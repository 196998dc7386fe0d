"""The operators' console as HTML: plain server-rendered pages, no script.

Every value is escaped on its way into a page; the overview refreshes itself
with a meta refresh. Times are Asia/Ho_Chi_Minh wall time.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from urllib.parse import urlencode

from gateway.audit.heads import SignedHead
from gateway.domain.vocabulary import Classification, DeliveryState
from gateway.exchange.deadlines import WARN_BEFORE, flag_kind
from gateway.exchange.mailbox import STATUS_MEANING
from gateway.exchange.ports import AtRisk, DocumentRecord
from gateway.operators.activity import LastHour, last_hour
from gateway.operators.charts import in_duration_unit, legend, line_chart, stacked_bars
from gateway.operators.metrics import CertExpiry
from gateway.operators.readmodel import Activity, DocumentSummary, Failing, MinuteCount
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
th.n{text-align:right}
.attention{border-left:4px solid #b00020}.attention.ok-edge{border-left-color:#1b5e20}
.need h3{font-size:14px;margin:6px 0 4px}.need p.muted{margin:2px 0 6px}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(660px,1fr));gap:0 12px}
.figure{margin:0 0 12px}.figure svg.chart{display:block;max-width:100%;height:auto}
.note{margin:0 0 6px;color:#666;font-size:12px}
.legend{display:flex;gap:14px;flex-wrap:wrap;font-size:12px;color:#444;margin-top:2px}
.key{display:inline-flex;gap:5px;align-items:center}
.bad{color:#b00020;font-weight:600}.ok{color:#1b5e20}.muted{color:#777}
form.search{display:flex;gap:8px;flex-wrap:wrap;align-items:end}
form.search label{display:flex;flex-direction:column;font-size:12px;color:#555}
code{font-size:12px}
"""


FAILING_READ = 20  # the overview reads this many failing deliveries, and says "20+" when it got them all
RECENT_SHOWN = 15

STEP_COLUMNS = ("time", "since acceptance", "duration", "event", "network", "recipient", "detail")
ROUTE_COLUMNS = ("network", "state", "attempts", "last error")
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
    per_minute: Sequence[MinuteCount]  # documents accepted, by the sender's network
    activity: Activity
    recent: Sequence[DocumentSummary]  # newest first
    failing: Sequence[Failing]  # at most FAILING_READ
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


def _table(
    headers: Iterable[str],
    rows: Iterable[Iterable[str]],
    *,
    empty: str = "none",
    numeric: Collection[str] = (),
) -> str:
    """A table; the ``numeric`` columns' headers align right, over their right-aligned numbers."""
    head = "".join(
        f'<th class="n">{escape(h)}</th>' if h in numeric else f"<th>{escape(h)}</th>" for h in headers
    )
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
    hour = last_hour(o.activity, o.per_minute, now=o.now)
    labels = [local(m)[11:16] for m in hour.minutes]
    latency, latency_text = in_duration_unit(hour.latency)
    body = (
        f'<h1>Overview <span class="muted">{escape(local(o.now))} (Asia/Ho_Chi_Minh), refreshes every '
        f"15 s</span></h1>{_attention(o)}{_totals(hour)}"
        '<div class="charts">'
        + _figure(
            "Documents per minute by target network",
            "edoc packages accepted here, by the network of their recipients; a document to two "
            "networks counts on each",
            stacked_bars("chart-target", "Documents per minute by target network", labels, hour.by_target,
                         NETWORK_COLORS),
            legend(hour.by_target, NETWORK_COLORS),
        )
        + _figure(
            "Documents per minute by priority",
            "edoc packages accepted here, by their priority (độ khẩn)",
            stacked_bars("chart-priority", "Documents per minute by priority", labels, hour.by_priority,
                         PRIORITY_COLORS),
            legend(hour.by_priority, PRIORITY_COLORS, PRIORITY_KEYS),
        )
        + _figure(
            "Delivery latency",
            "from acceptance to the recipient's inbox (or its network's node), p50 and p95 of the "
            "deliveries in each minute",
            line_chart("chart-latency", "Delivery latency", labels, latency, LATENCY_COLORS,
                       text=latency_text, empty="no delivery in the last hour"),
            legend(hour.latency, LATENCY_COLORS),
        )
        + _figure(
            "Queue depth",
            "routes waiting to be carried at the end of each minute, by target network",
            line_chart("chart-queue", "Queue depth (routes waiting)", labels, hour.queue, NETWORK_COLORS,
                       whole=True, dots=False),
            legend(hour.queue, NETWORK_COLORS),
        )
        + "</div>"
        + ("" if hour.complete else '<p class="muted">The last hour had more log records than the charts '
           "read: its first minutes show fewer deliveries than there were.</p>")
        + f"{_recent(o.recent)}{_audit(o)}"
    )  # fmt: skip
    return page("Overview", body, operator=o.operator, refresh=15)


NETWORK_COLORS = {"government": "#1565c0", "party": "#c62828", "front": "#2e7d32"}
PRIORITY_COLORS = {"0": "#90a4ae", "1": "#fbc02d", "2": "#fb8c00", "3": "#e53935", "4": "#8e0000"}
LATENCY_COLORS = {"p50": "#1565c0", "p95": "#ef6c00"}
PRIORITY_KEYS = {str(p): f"{p} {name}" for p, name in PRIORITY_NAMES.items()}
ATTENTION_SHOWN = 5  # rows of each list in the attention block; the counts say how many in all


def _figure(title: str, note: str, svg: str, key: str) -> str:
    return (
        f'<section class="figure"><h2>{escape(title)} <span class="muted">(last hour)</span></h2>'
        f'<p class="note">{escape(note)}</p>{svg}{key}</section>'
    )


def _attention(o: Overview) -> str:
    """What needs a person first: failing deliveries, deadlines at risk, certificates expiring."""
    expiring = sorted((c for c in o.certificates if c.days_left <= 30), key=lambda c: c.days_left)
    failing_rows = [
        [_doc_link(f.document), _td(f.kind, css="bad"), _td(f.network or ""), _td(f.recipient or ""),
         _td(f.attempts if f.attempts is not None else "", number=True), _td(f.reason[:120])]
        for f in o.failing[:ATTENTION_SHOWN]
    ]  # fmt: skip
    risk_rows = [
        [_doc_link(r.document), _td(r.recipient), _td(r.network.value), _td(local(r.due_at)),
         _td(flag_kind(r, o.now), css="bad" if r.due_at <= o.now else ""),
         _td("03" if r.fetched_at is not None else "fetch (01) and 03")]
        for r in o.at_risk[:ATTENTION_SHOWN]
    ]  # fmt: skip
    cert_rows = [
        [_td(c.owner), _td(c.role), _td(local(c.not_after)),
         _td(f"{c.days_left:.1f}", number=True, css="bad" if c.days_left < 7 else "")]
        for c in expiring[:ATTENTION_SHOWN]
    ]  # fmt: skip
    failing_more = len(o.failing) > ATTENTION_SHOWN
    blocks = [
        (
            "failing",
            f'<span id="failing-count">{len(o.failing)}{"+" if len(o.failing) >= FAILING_READ else ""}</span>'
            f" failing {_plural(len(o.failing), 'delivery', 'deliveries')}",
            _table(["document", "what", "network", "recipient", "attempts", "reason"], failing_rows,
                   numeric={"attempts"}),
            '<a href="/console/search?state=failed">all failed deliveries →</a>' if failing_more else "",
        ),
        (
            "deadlines",
            f'<span id="at-risk">{len(o.at_risk)}</span> {_plural(len(o.at_risk), "deadline")} at risk '
            f'<span class="muted">(due within {WARN_BEFORE.total_seconds() / 3600:g} h or overdue, not yet '
            "fetched or answered 03)</span>",
            _table(["document", "recipient", "network", "due", "state", "waiting for"], risk_rows),
            "all of them: <code>gateway trace --overdue</code>" if len(o.at_risk) > ATTENTION_SHOWN else "",
        ),
        (
            "certificates",
            f'<span id="expiring-count">{len(expiring)}</span> {_plural(len(expiring), "certificate")}'
            " expiring within 30 days",
            _table(["owner", "role", "expires", "days left"], cert_rows, numeric={"days left"}),
            "all of them: <code>gateway certs check</code>" if len(expiring) > ATTENTION_SHOWN else "",
        ),
    ]  # fmt: skip
    counts = (len(o.failing), len(o.at_risk), len(expiring))
    parts = []
    for (name, heading, table, more), count in zip(blocks, counts, strict=True):
        css = "bad" if count else "ok"
        parts.append(
            f'<div id="{name}" class="need"><h3 class="{css}">{heading}</h3>'
            + (f'{table}<p class="muted">{more}</p>' if count else "")
            + "</div>"
        )
    state = "ok" if not any(counts) else "bad"
    title = "Nothing needs attention" if state == "ok" else "Needs attention"
    return (
        f'<section id="attention" class="attention {state}-edge"><h2>{title}</h2>{"".join(parts)}</section>'
    )


def _plural(count: int, one: str, many: str | None = None) -> str:
    return one if count == 1 else many or one + "s"


def _totals(hour: LastHour) -> str:
    rows = [
        [_td(t.network), _td(t.sent, number=True), _td(t.received, number=True),
         _td(t.failed, number=True, css="bad" if t.failed else ""), _td(t.waiting, number=True)]
        for t in hour.totals
    ]  # fmt: skip
    total = sum(t.sent for t in hour.totals)
    headers = [
        "network",
        "sent (accepted from its agencies)",
        "received (delivered to its agencies)",
        "given up (failed, quarantined)",
        "waiting now (routes to it)",
    ]
    return (
        f'<section><h2>Last hour by network: <span id="accepted-hour">{total}</span> documents sent</h2>'
        '<p class="note">Sent counts a document once, by its sender\'s network; received counts it once '
        "per network its recipients are on.</p>"
        f'<div id="totals">{_table(headers, rows, numeric=set(headers[1:]))}</div></section>'
    )


def _recent(recent: Sequence[DocumentSummary]) -> str:
    rows = []
    for s in recent:
        doc = s.document
        targets = sorted({d.network.value for d in s.deliveries})
        states: dict[str, int] = {}
        for d in s.deliveries:
            states[d.state.value] = states.get(d.state.value, 0) + 1
        summary = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "-"
        rows.append(
            [_doc_link(doc.id), _td(local(doc.accepted_at)[11:]), _td(_kind(doc)), _td(doc.sender),
             _td(f"{doc.sender_network.value} → {', '.join(targets) or '-'}"),
             _td(f"{int(doc.priority)} {PRIORITY_NAMES.get(int(doc.priority), '')}"),
             _td(LEVEL_NAMES[int(doc.classification)]),
             _td(summary, css="bad" if "failed" in summary or "quarantined" in summary else "")]
        )  # fmt: skip
    # No subject here, not even an unclassified one: the list is for the flow, the page for the one.
    headers = ["document", "accepted", "kind", "from", "networks", "priority", "level", "deliveries"]
    table = _table(headers, rows, empty="no document yet")
    return f'<section><h2>Recent documents</h2><div id="recent">{table}</div></section>'


def _kind(doc: DocumentRecord) -> str:
    if doc.kind == "status":
        code = doc.status_code or ""
        return f"status {code} {STATUS_MEANING.get(code, '')}".strip()
    change = {1: "recall", 2: "update", 3: "replacement"}.get(doc.business_doc_type or 0)
    return f"edoc ({change})" if change else "edoc"


def _audit(o: Overview) -> str:
    head = o.last_head
    audit = (
        f"last signed head: record {head.seq} at {escape(local(_parse(head.signed_at)))}; "
        f"{o.unsigned} records since"
        if head
        else f"no signed head yet; {o.unsigned} records"
    )
    return f'<section><h2>Delivery log</h2><p id="audit">{audit}</p></section>'


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
        f"{_table(STEP_COLUMNS, steps, numeric={'since acceptance', 'duration'})}"
        "</div></section>"
        '<section><h2>Recipients and receipts</h2><div id="recipients">'
        f"{_table(RECIPIENT_COLUMNS, recipients)}"
        "</div></section>"
        f"<section><h2>Routes</h2>{_table(ROUTE_COLUMNS, routes, numeric={'attempts'})}</section>"
    )
    return page(f"Document {doc.id}", body, operator=operator)
