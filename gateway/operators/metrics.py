"""Prometheus metrics, fed by the delivery log itself.

An ``EventFeed`` tails the log (records after the last seq it saw) and hands
each new batch to its observers: ``Metrics`` counts them, and the JSON logger
writes one line per event. Reading the committed log, rather than hooking the
write path, means a rolled-back write is never counted and every writer
(intake, courier, watchers, other processes on the same database) is seen.

The text format is written here rather than with ``prometheus_client``: it is
forty lines, needs no process-wide registry, and the tests parse the output
with ``prometheus_client``'s own parser, which is what a scraper would do.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509

from gateway.operators.readmodel import FeedEvent, Oversight, QueueDepth
from gateway.pki.inventory import OPERATOR_PREFIX

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
FAILURE_KINDS = ("quarantined", "failed", "recipient_failed")
EXPIRY_WARNING_DAYS = 30.0
Observer = Callable[[list[FeedEvent]], None]


class EventFeed:
    """Tails the delivery log from where it stood when the feed started.

    Replicas of one node share one log; each hands on only the records its own store wrote (and
    those of the command line, which no replica wrote), so that summed over replicas every record
    is counted and logged once (command-line records, such as certificate events, on each)."""

    def __init__(
        self,
        source: Oversight,
        observers: Sequence[Observer],
        *,
        writer: str | None = None,
        interval: float = 0.25,
        batch: int = 5000,
        slice_size: int = 128,
    ) -> None:
        self._source = source
        self._writer = writer
        self._observers = list(observers)
        # Seconds between polls, as the node runs them. The observers run on the event loop:
        # at 300 documents/s a poll a second handed them ~2,000 records at once, and the loop
        # stood still ~80 ms each second while they were logged (bench/openloop.py: the p99).
        self.interval = interval
        self._batch = batch
        self._slice = slice_size  # records handed over between two yields to the loop
        self._seq: int | None = None
        self._lock = asyncio.Lock()

    async def poll(self) -> int:
        """Hand every record written since the last poll to the observers; returns how many."""
        async with self._lock:  # /metrics polls too: never hand a record out twice
            if self._seq is None:
                self._seq = await self._source.last_seq()
                return 0
            seen = 0
            while True:
                events = await self._source.events_after(self._seq, limit=self._batch)
                if not events:
                    return seen
                mine = [e for e in events if e.writer in (None, self._writer)]
                for start in range(0, len(mine), self._slice):
                    if start:
                        await asyncio.sleep(0)  # requests waiting on the loop go first
                    part = mine[start : start + self._slice]
                    for observe in self._observers:
                        observe(part)
                    # Handed over: a poll cancelled at the next yield (the node stopping) must
                    # not hand it over again at the last poll.
                    self._seq = part[-1].seq
                self._seq = events[-1].seq
                seen += len(events)


@dataclass
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(LATENCY_BUCKETS):
            if value <= bound:
                self.buckets[i] += 1
        self.total += value
        self.count += 1


@dataclass
class _Link:
    up: int
    last_success: float | None = None


@dataclass
class EdgeCounts:
    """What the HTTP edge saw since the node started (``gateway.http`` writes it, ``/metrics`` reads it).

    Kept apart from the delivery log: a connection is not a document, and an attacker who opens
    and drops connections must not be able to write records."""

    open_connections: int = 0
    disconnects: int = 0  # a client closed its connection before its answer
    malformed: int = 0  # requests that were not well-formed HTTP (answered 400 bad_request)
    refused: Counter[str] = field(default_factory=Counter)  # new connections over a cap, by cap
    timeouts: Counter[str] = field(default_factory=Counter)  # requests cut off, by what was late


@dataclass(frozen=True)
class CertExpiry:
    owner: str
    role: str
    not_after: datetime
    days_left: float


class Metrics:
    """Counters and histograms since this node started, and the link state of each bridge."""

    def __init__(self, links: Iterable[tuple[str, str]] = ()) -> None:
        self.accepted: Counter[tuple[str, str, str]] = Counter()  # network, priority, kind
        self.delivered: Counter[tuple[str, str]] = Counter()
        self.failed: Counter[tuple[str, str, str]] = Counter()  # network, priority, reason
        self.events: Counter[str] = Counter()
        self.latency: dict[tuple[str, str], _Histogram] = {}
        # Bridges of an embedded node are in-process: up until the log says a crossing failed.
        self.links: dict[tuple[str, str], _Link] = {pair: _Link(1) for pair in links}
        self.edge = EdgeCounts()

    def observe(self, events: list[FeedEvent]) -> None:
        for e in events:
            self.events[e.kind] += 1
            priority = str(e.priority) if e.priority is not None else "unknown"
            if e.kind == "accepted":
                self.accepted[(e.network or "unknown", priority, e.document_kind or "unknown")] += 1
            elif e.kind in ("delivered", "forwarded"):
                self.delivered[(e.network or "unknown", priority)] += 1
                if e.accepted_at is not None and e.document_kind == "edoc":
                    latency = max(0.0, (e.at - e.accepted_at).total_seconds())
                    self.latency.setdefault((e.network or "unknown", priority), _Histogram()).observe(latency)
            elif e.kind in FAILURE_KINDS:
                self.failed[(e.network or "unknown", priority, e.kind)] += 1
            self._link(e)

    def _link(self, e: FeedEvent) -> None:
        if e.kind == "bridged" and "from" in e.detail and "to" in e.detail:
            link = self.links.setdefault((str(e.detail["from"]), str(e.detail["to"])), _Link(1))
            link.up, link.last_success = 1, e.at.timestamp()
        elif e.kind == "forwarded" and e.sender_network and e.network:
            link = self.links.setdefault((e.sender_network, e.network), _Link(1))
            link.up, link.last_success = 1, e.at.timestamp()
        elif (
            e.kind in ("retry", "quarantined", "failed")
            and e.network
            and e.sender_network not in (None, e.network)
        ):
            # A crossing between networks failed (the courier retries it, or gave up).
            self.links.setdefault((str(e.sender_network), str(e.network)), _Link(0)).up = 0

    def render(
        self,
        *,
        queue: Iterable[QueueDepth],
        certificates: Iterable[CertExpiry],
        audit_unsigned: int,
        audit_last_signed: datetime | None,
        at_risk: Iterable[tuple[str, str]] = (),
    ) -> str:
        """The Prometheus text exposition format, version 0.0.4."""
        out = _Writer()
        out.family(
            "gateway_documents_accepted_total",
            "counter",
            "Documents and status packages accepted, by the sender's network and priority.",
            [({"network": n, "priority": p, "kind": k}, v) for (n, p, k), v in self.accepted.items()],
        )
        out.family(
            "gateway_documents_delivered_total",
            "counter",
            "Deliveries into a recipient's inbox, by the recipient's network and priority.",
            [({"network": n, "priority": p}, v) for (n, p), v in self.delivered.items()],
        )
        out.family(
            "gateway_documents_failed_total",
            "counter",
            "Deliveries that failed: quarantined, given up, or not openable by the recipient.",
            [({"network": n, "priority": p, "reason": r}, v) for (n, p, r), v in self.failed.items()],
        )
        out.family(
            "gateway_events_total",
            "counter",
            "Records appended to the delivery log, by kind.",
            [({"kind": k}, v) for k, v in self.events.items()],
        )
        out.histogram(
            "gateway_delivery_latency_seconds",
            "From acceptance to delivery into the inbox, by the recipient's network and priority.",
            self.latency,
        )
        depth: Counter[tuple[str, str]] = Counter()
        for q in queue:
            depth[(q.network, str(q.priority))] += q.count
        out.family(
            "gateway_queue_depth",
            "gauge",
            "Routes waiting to be carried, by target network and priority.",
            [({"network": n, "priority": p}, v) for (n, p), v in depth.items()],
        )
        risk: Counter[tuple[str, str]] = Counter(at_risk)
        out.family(
            "gateway_deliveries_at_risk",
            "gauge",
            "Deliveries whose deadline is near (state deadline_near) or past (overdue), not yet fetched "
            "or answered 03, by the recipient's network.",
            [({"network": n, "state": st}, v) for (n, st), v in risk.items()],
        )
        certs = list(certificates)
        out.family(
            "gateway_certificate_expiry_days",
            "gauge",
            "Days until a certificate expires (CAs, adapters, server, operators; agencies' if soon).",
            [({"owner": c.owner, "role": c.role}, round(c.days_left, 3)) for c in certs],
        )
        soon = sum(1 for c in certs if c.days_left <= EXPIRY_WARNING_DAYS)
        out.family(
            "gateway_certificates_expiring_soon",
            "gauge",
            f"Certificates that expire within {EXPIRY_WARNING_DAYS:.0f} days.",
            [({}, soon)],
        )
        out.family(
            "gateway_bridge_link_up",
            "gauge",
            "1 while carrying from one network into another works, 0 after a crossing failed.",
            [({"from": a, "to": b}, link.up) for (a, b), link in self.links.items()],
        )
        out.family(
            "gateway_bridge_last_success_timestamp_seconds",
            "gauge",
            "When a document last crossed from one network into another.",
            [
                ({"from": a, "to": b}, link.last_success)
                for (a, b), link in self.links.items()
                if link.last_success is not None
            ],
        )
        out.family(
            "gateway_audit_unsigned_records",
            "gauge",
            "Delivery-log records not yet covered by a signed head.",
            [({}, audit_unsigned)],
        )
        if audit_last_signed is not None:
            out.family(
                "gateway_audit_last_head_timestamp_seconds",
                "gauge",
                "When the head of the delivery log was last signed.",
                [({}, audit_last_signed.timestamp())],
            )
        self._render_edge(out)
        return out.text()  # fmt: skip

    def _render_edge(self, out: _Writer) -> None:
        edge = self.edge
        out.family(
            "gateway_open_connections",
            "gauge",
            "TLS connections to the API and console open now (handshake done, under the caps).",
            [({}, edge.open_connections)],
        )
        out.family(
            "gateway_client_disconnects_total",
            "counter",
            "Requests whose client closed the connection before the answer.",
            [({}, edge.disconnects)],
        )
        out.family(
            "gateway_malformed_requests_total",
            "counter",
            "Requests that were not well-formed HTTP (answered 400 bad_request).",
            [({}, edge.malformed)],
        )
        out.family(
            "gateway_connections_refused_total",
            "counter",
            "New connections answered and closed because a cap was reached (per_client: 429, total: 503).",
            [({"cap": cap}, n) for cap, n in edge.refused.items()],
        )
        out.family(
            "gateway_request_timeouts_total", "counter",
            "Requests cut off because a part of them did not arrive in time (body: 408).",
            [({"stage": stage}, n) for stage, n in edge.timeouts.items()],
        )  # fmt: skip


class _Writer:
    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(
        self, name: str, kind: str, help_: str, samples: Iterable[tuple[dict[str, str], float]]
    ) -> None:
        self._lines += [f"# HELP {name} {_help(help_)}", f"# TYPE {name} {kind}"]
        for labels, value in sorted(samples, key=lambda s: sorted(s[0].items())):
            self._lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def histogram(self, name: str, help_: str, series: dict[tuple[str, str], _Histogram]) -> None:
        self._lines += [f"# HELP {name} {_help(help_)}", f"# TYPE {name} histogram"]
        for (network, priority), h in sorted(series.items()):
            labels = {"network": network, "priority": priority}
            for bound, count in zip(LATENCY_BUCKETS, h.buckets, strict=True):
                self._lines.append(f"{name}_bucket{_labels({**labels, 'le': _number(bound)})} {count}")
            self._lines.append(f"{name}_bucket{_labels({**labels, 'le': '+Inf'})} {h.count}")
            self._lines.append(f"{name}_sum{_labels(labels)} {_number(h.total)}")
            self._lines.append(f"{name}_count{_labels(labels)} {h.count}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    escaped = {
        k: str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for k, v in labels.items()
    }
    return "{" + ",".join(f'{k}="{v}"' for k, v in escaped.items()) + "}"


def _number(value: float) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if isinstance(value, float) else str(value)


# --- certificates -------------------------------------------------------------------------------

# (glob under certs_dir, how to name the owner from the path's parts): the ACTIVE files only,
# never the next/ and retired/ folders beside them.
_CERT_FILES: tuple[tuple[str, Callable[[tuple[str, ...]], tuple[str, str]]], ...] = (
    ("root-ca.crt", lambda p: ("ROOT.CA", "ca")),
    ("networks/*/ca.crt", lambda p: (f"CA.{p[-2].upper()}", "ca")),
    ("networks/*/adapter/*.crt", lambda p: (f"ADAPTER.{p[-3].upper()}", p[-1][:-4])),
    ("server/tls.crt", lambda p: ("gateway", "tls")),
    ("operators/*/tls.crt", lambda p: (OPERATOR_PREFIX + p[-2], "tls")),
    ("agencies/*/*.crt", lambda p: (p[-2], p[-1][:-4])),
)


def certificate_expiries(
    certs_dir: Path, now: datetime, *, agencies_within: float = EXPIRY_WARNING_DAYS
) -> list[CertExpiry]:
    """Days to expiry of each certificate in use; agencies' only when due within ``agencies_within``
    days (a registry of 100,000 agencies would otherwise be 300,000 series)."""
    found: list[CertExpiry] = []
    for pattern, owner_of in _CERT_FILES:
        for path in sorted(certs_dir.glob(pattern)):
            try:
                cert = x509.load_pem_x509_certificates(path.read_bytes())[0]
            except (OSError, ValueError, IndexError):
                continue
            owner, role = owner_of(path.relative_to(certs_dir).parts)
            days = (cert.not_valid_after_utc - now).total_seconds() / 86400
            if pattern.startswith("agencies") and days > agencies_within:
                continue
            found.append(CertExpiry(owner, role, cert.not_valid_after_utc, days))
    return found
