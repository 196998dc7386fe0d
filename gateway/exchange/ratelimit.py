"""Per-agency submission limits: a runaway client is told to slow down (429), never dropped silently."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from gateway.domain.clock import Clock


@dataclass(frozen=True)
class Limit:
    """Sustained documents per second per agency, and the burst allowed above it."""

    rate: float
    burst: int


class SubmissionLimiter:
    """A token bucket per agency. ``take`` returns 0 when admitted, else the seconds to wait."""

    def __init__(self, limit: Limit, clock: Clock) -> None:
        self._limit = limit
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # agency -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, agency: str) -> float:
        if self._limit.rate <= 0:
            return 0.0  # unlimited
        now = self._clock.now().timestamp()
        with self._lock:
            tokens, at = self._buckets.get(agency, (float(self._limit.burst), now))
            tokens = min(float(self._limit.burst), tokens + (now - at) * self._limit.rate)
            if tokens >= 1.0:
                self._buckets[agency] = (tokens - 1.0, now)
                return 0.0
            self._buckets[agency] = (tokens, now)
            return (1.0 - tokens) / self._limit.rate


def retry_after_header(seconds: float) -> str:
    """Retry-After takes whole seconds; never tell a client 0 when it must wait."""
    return str(max(1, math.ceil(seconds)))
