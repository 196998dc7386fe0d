"""The overview's last hour, minute by minute: the series its charts draw, worked out from ``Activity``.

Pure: the read model gives routes made, deliveries finished and the queue now; this turns them
into one value per minute. Minutes are UTC starts, oldest first, the last one the current minute.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.domain.vocabulary import Network
from gateway.operators.readmodel import Activity, Finished, MinuteCount

WINDOW_MINUTES = 60
ARRIVED = ("delivered", "forwarded")  # into an inbox here, or handed to the node of its network
GAVE_UP = ("failed", "quarantined")


@dataclass(frozen=True)
class Series:
    """One line or one colour of bars: a value per minute; None where there is nothing to say."""

    name: str
    values: tuple[float | None, ...]


@dataclass(frozen=True)
class NetworkTotals:
    """One network's last hour. ``sent`` counts by the sender's network, the rest by the target's."""

    network: str
    sent: int  # documents accepted from agencies of this network
    received: int  # documents delivered into inboxes of this network (or handed to its node)
    failed: int  # deliveries to this network given up on (failed or quarantined)
    waiting: int  # routes to this network waiting now


@dataclass(frozen=True)
class LastHour:
    minutes: tuple[datetime, ...]
    by_target: tuple[Series, ...]  # edoc routes per minute, one series per target network
    by_priority: tuple[Series, ...]  # documents accepted per minute, one series per priority
    latency: tuple[Series, ...]  # p50 and p95 seconds from acceptance to inbox, by minute of delivery
    queue: tuple[Series, ...]  # routes waiting at the end of each minute, per target network
    totals: tuple[NetworkTotals, ...]
    complete: bool


def window(now: datetime) -> tuple[datetime, ...]:
    """The minutes of the last hour, the current one last."""
    current = now.replace(second=0, microsecond=0)
    return tuple(current - timedelta(minutes=i) for i in range(WINDOW_MINUTES - 1, -1, -1))


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest rank: the smallest value with at least ``p`` percent of the values at or below it."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def first_arrivals(finished: Iterable[Finished]) -> dict[tuple[str, str], Finished]:
    """One record per (document, network): when its route left the queue (its first recipient's)."""
    out: dict[tuple[str, str], Finished] = {}
    for f in finished:
        key = (f.document, f.network)
        if key not in out or f.at < out[key].at:
            out[key] = f
    return out


def last_hour(activity: Activity, accepted: Sequence[MinuteCount], *, now: datetime) -> LastHour:
    minutes = window(now)
    index = {m: i for i, m in enumerate(minutes)}
    networks = [n.value for n in Network]
    n = len(minutes)

    def slot(moment: datetime) -> int | None:
        return index.get(moment.replace(second=0, microsecond=0))

    target = {net: [0.0] * n for net in networks}
    made = {net: [0] * n for net in networks}  # every route, status packages' too: the queue's input
    for r in activity.routes:
        i = index.get(r.minute)
        if i is None or r.network not in made:
            continue
        made[r.network][i] += r.count
        if r.kind == "edoc":
            target[r.network][i] += r.count

    priority = {p: [0.0] * n for p in range(5)}
    sent = dict.fromkeys(networks, 0)
    for m in accepted:
        i = index.get(m.minute)
        if i is not None and m.priority in priority:
            priority[m.priority][i] += m.count
        if i is not None and m.network in sent:
            sent[m.network] += m.count

    latencies: list[list[float]] = [[] for _ in range(n)]
    for f in activity.finished:
        i = slot(f.at)
        if i is not None and f.kind in ARRIVED and f.document_kind == "edoc" and f.accepted_at is not None:
            latencies[i].append(max(0.0, (f.at - f.accepted_at).total_seconds()))
    p50: list[float | None] = []
    p95: list[float | None] = []
    for values in latencies:
        values.sort()
        p50.append(percentile(values, 50) if values else None)
        p95.append(percentile(values, 95) if values else None)

    left = {net: [0] * n for net in networks}  # routes that left the queue, per minute
    received = dict.fromkeys(networks, 0)
    failed = dict.fromkeys(networks, 0)
    for f in first_arrivals(activity.finished).values():
        i = slot(f.at)
        if i is None or f.network not in left:
            continue
        left[f.network][i] += 1
        if f.kind in ARRIVED and f.document_kind == "edoc":
            received[f.network] += 1
        elif f.kind in GAVE_UP:
            failed[f.network] += 1

    waiting = dict.fromkeys(networks, 0)
    for q in activity.pending:
        if q.network in waiting:
            waiting[q.network] += q.count
    queue = {}
    for net in networks:
        # Walk back from now: before a minute, what left since was still waiting and what was
        # made since did not exist yet. (A re-driven route counts as waiting since it failed.)
        depth = waiting[net]
        values = [0.0] * n
        for i in range(n - 1, -1, -1):
            values[i] = float(max(depth, 0))
            depth += left[net][i] - made[net][i]
        queue[net] = values

    return LastHour(
        minutes=minutes,
        by_target=tuple(Series(net, tuple(target[net])) for net in networks),
        by_priority=tuple(Series(str(p), tuple(priority[p])) for p in range(5)),
        latency=(Series("p50", tuple(p50)), Series("p95", tuple(p95))),
        queue=tuple(Series(net, tuple(queue[net])) for net in networks),
        totals=tuple(
            NetworkTotals(net, sent[net], received[net], failed[net], waiting[net]) for net in networks
        ),
        complete=activity.complete,
    )
